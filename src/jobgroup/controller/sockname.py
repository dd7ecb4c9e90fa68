"""Where the controller listens: two socket files in the state directory (a module of its own:
`jobgroup launch`'s short road imports this and nothing else of the controller).

- `controller.sock` (stream): launch requests (`controller.rpc`);
- `controller.wake` (datagram): wake-ups after a command wrote intent (`controller.wake`).

They are files in the private (0700) state directory, so only its user (and root) can connect
to them, and nobody else can bind them first to impersonate the controller — which abstract
socket names, having no permissions at all, allowed. A unix socket path holds 107 bytes: a
longer state directory is reached through `/proc/self/fd/N/NAME`, N being an `O_PATH`
descriptor of the directory held open for the call (`address`).
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from contextlib import contextmanager
from typing import Iterator

RPC = "controller.sock"
WAKE = "controller.wake"
_SUN_PATH = 107  # bytes a unix socket path may hold (sun_path less its NUL)


def home_path(home: str | os.PathLike[str]) -> bytes:
    """`home` made absolute the way `Path.absolute()` does (no `..` resolution)."""
    path = os.fsencode(home)
    if not path.startswith(b"/"):
        path = os.fsencode(os.getcwd()) + b"/" + path
    return path


@contextmanager
def address(home: str | os.PathLike[str], name: str) -> Iterator[bytes]:
    """The path to bind or connect to for socket `name` of `home`, valid inside the block."""
    path = home_path(home).rstrip(b"/") + b"/" + name.encode()
    if len(path) <= _SUN_PATH:
        yield path
        return
    fd = os.open(home_path(home), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{name}".encode()
    finally:
        os.close(fd)


def is_ours(path: bytes) -> bool:
    """`path` is a socket file owned by this user (root could plant one, nobody else)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISSOCK(st.st_mode) and st.st_uid == os.geteuid()


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a connected unix socket (SO_PEERCRED)."""
    try:
        _, uid, _ = struct.unpack("3i", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except OSError:
        return None
    return uid
