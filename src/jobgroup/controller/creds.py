"""Who may talk to the controller: its sockets are files in the private state directory, and
every request's peer credentials are checked as well (defence in depth, e.g. a state directory
someone loosened while a controller ran) — only the controller's own user, or root."""

from __future__ import annotations

import os
import socket
import struct


def uid_allowed(uid: int) -> bool:
    return uid == os.getuid() or uid == 0


def peer_allowed(sock: socket.socket | None) -> bool:
    """The connecting process runs as our user (or root)."""
    if sock is None:
        return False
    try:
        _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        struct.calcsize("3i")))
    except OSError:
        return False
    return uid_allowed(uid)


def sender_allowed(ancillary: list) -> bool:
    """A datagram's SCM_CREDENTIALS name our user (or root)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= 12:
            _, uid, _ = struct.unpack("3i", data[:12])
            return uid_allowed(uid)
    return False
