"""The controller's socket names (a module of its own: `jobgroup launch`'s short road imports
this and nothing else of the controller)."""

from __future__ import annotations

import os
import zlib


def socket_name(home: str | os.PathLike[str]) -> bytes:
    """An abstract socket name unique to the state directory (the path itself when it fits).
    `home` is made absolute the way `Path.absolute()` does (no `..` resolution)."""
    path = os.fsencode(home)
    if not path.startswith(b"/"):
        path = os.fsencode(os.getcwd()) + b"/" + path
    if len(path) > 90:  # abstract names are limited to 107 bytes
        path = b"%08x" % zlib.crc32(path) + path[-80:]
    return b"\0jobgroup:" + path


def rpc_name(home: str | os.PathLike[str]) -> bytes:
    """The stream socket on which the controller takes launch requests (`controller.rpc`)."""
    return socket_name(home) + b":rpc"
