"""A TCP relay for `jobgroup port-forward`: connections to a local address are joined to a
node's address and port, bytes copied both ways until either side closes (a thread per
direction: a handful of connections, a debugging tool, not a proxy at scale)."""

from __future__ import annotations

import socket
import threading
from typing import Callable

from jobgroup.errors import UsageError


class Relay:
    """Listens on `host`:`port` (0: a free one, see `.port`) and relays each connection to
    `target`:`target_port`."""

    def __init__(self, host: str, port: int, target: str, target_port: int) -> None:
        self.target = (target, target_port)
        try:
            self._server = socket.create_server((host, port), reuse_port=False)
        except OSError as e:
            raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from None
        self._server.settimeout(1.0)
        self.port = self._server.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def serve(self, stop: Callable[[], bool]) -> None:
        """Accept and relay until `stop()` says so (asked about once a second)."""
        while not stop():
            try:
                conn, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._join, args=(conn,), daemon=True).start()

    def _join(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            conn.close()  # the node does not listen there (yet): the client sees a reset
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.update((conn, upstream))
        a = threading.Thread(target=_copy, args=(conn, upstream), daemon=True)
        a.start()
        _copy(upstream, conn)
        a.join()
        with self._lock:
            self._open.difference_update((conn, upstream))
        conn.close()
        upstream.close()

    def close(self) -> None:
        self._server.close()
        with self._lock:
            for s in list(self._open):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _copy(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
