"""Just enough of RFC 6455 for the exec subresource: the server side of the handshake and
unmasked binary frames out, masked frames in (the Kubernetes channel protocols put the channel
number in each binary frame's first byte: 1 stdout, 2 stderr, 3 the final Status)."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PROTOCOLS = ("v4.channel.k8s.io", "v5.channel.k8s.io")


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def choose_protocol(offered: str | None) -> str | None:
    """The channel protocol we answer with: v4 (what the fake speaks); v5 differs from v4 only
    by a client-sent close of stdin, which the fake (no stdin) never needs."""
    wanted = [p.strip() for p in (offered or "").split(",") if p.strip()]
    for p in wanted:
        if p == "v4.channel.k8s.io":
            return p
    for p in wanted:
        if p in PROTOCOLS:
            return p
    return None


def frame(payload: bytes, opcode: int = 0x2) -> bytes:
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def send_channel(sock: socket.socket, channel: int, data: bytes) -> None:
    sock.sendall(frame(bytes([channel]) + data))


def close(sock: socket.socket, code: int = 1000) -> None:
    try:
        sock.sendall(frame(struct.pack("!H", code), opcode=0x8))
        sock.settimeout(2)
        sock.recv(1024)  # the client's answering close (or EOF)
    except OSError:
        pass
