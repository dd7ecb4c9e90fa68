"""The dashboard's server: the Litestar application of `app` behind the `middleware` layers,
served by Hypercorn on a socket bound here (so a busy port is an error at once, and port 0
gives a free port known before serving).

Contract:
- Every request opens its own `Store` (a Store is not shared between threads) and closes it.
- Timeouts (`request_timeout`, default 30 s): the request line and headers must arrive within
  it from the moment the server waits for a request (Hypercorn's keep-alive timer, which runs
  until a request's headers are complete), so a stalled or trickling request and an idle
  keep-alive connection are closed; a body must arrive whole within it too (`WholeBody`: 408).
  A log stream (SSE) is long-lived by design: once its request is read it only writes, a
  keepalive comment every 15 s.
- `serve_forever` blocks (the CLI); `serve_in_thread` serves on a thread (tests, benchmarks);
  `shutdown` stops serving (open log streams end within a second) and returns once stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from pathlib import Path

from jobgroup.dashboard import auth
from jobgroup.dashboard.middleware import MAX_BODY  # noqa: F401 (re-exported for the tests)
from jobgroup.errors import UsageError

log = logging.getLogger("jobgroup.dashboard")

REQUEST_TIMEOUT_S = 30.0  # request line + headers, and then the body; or one idle keep-alive
MAX_STREAMS = 64  # open log streams at once (each holds a reader thread and the node files)
BACKLOG = 64


class DashboardServer:
    """The dashboard of the state directory `home`, bound to `host`:`port`.

    `token`: the state directory's token, required on every request (None with
    `require_token=False`, which is refused — UsageError — unless `host` is a loopback name).
    `request_timeout`: seconds a request's headers, then its body, may take to arrive."""

    def __init__(self, home: Path, host: str, port: int, *, require_token: bool = True,
                 request_timeout: float = REQUEST_TIMEOUT_S) -> None:
        if not require_token and not auth.is_loopback(host):
            raise UsageError(
                f"--no-auth is only allowed on 127.0.0.1, localhost or ::1, not {host}: "
                "anyone who reaches the address could launch commands as you. Drop --no-auth "
                "and use the token URL it prints.")
        if not request_timeout > 0:
            raise ValueError(f"request_timeout must be > 0, not {request_timeout!r}")
        self.home = home.absolute()
        self.bound_host = host
        self.loopback = auth.is_loopback(host)
        self.token = auth.load_or_create_token(self.home) if require_token else None
        self.session = auth.new_session()
        self.request_timeout = float(request_timeout)
        self.stopping = threading.Event()
        self.streams = threading.BoundedSemaphore(MAX_STREAMS)
        self.socket = socket.create_server((host.strip("[]"), port), family=_family(host),
                                           backlog=BACKLOG)
        self.server_address = self.socket.getsockname()[:2]
        self.port = self.server_address[1]
        self.cookie = auth.cookie_name(self.port)
        self.hosts = auth.allowed_hosts(host, self.port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._done = threading.Event()
        from jobgroup.dashboard.app import build

        self.app = build(self)

    @property
    def url(self) -> str:
        """The jobs page's URL, without the token."""
        host = f"[{self.bound_host}]" if ":" in self.bound_host else self.bound_host
        if host in ("0.0.0.0", "[::]"):
            host = socket.gethostname()
        return f"http://{host}:{self.port}/"

    @property
    def login_url(self) -> str:
        """The URL to open in a browser: `url` with `?token=` (just `url` without a token)."""
        return self.url if self.token is None else f"{self.url}?token={self.token}"

    def _config(self):
        from hypercorn.config import Config

        c = Config()
        # Hypercorn closes the socket it serves: give it a duplicate, ours stays until
        # server_close (a double close could hit a descriptor opened meanwhile).
        c.bind = [f"fd://{os.dup(self.socket.fileno())}"]
        c.keep_alive_timeout = self.request_timeout  # headers, and idle keep-alives
        c.graceful_timeout = 1.0
        c.include_server_header = False
        c.accesslog = None
        c.errorlog = logging.getLogger("jobgroup.dashboard.hypercorn")
        c.errorlog.setLevel(logging.WARNING)  # not its "Running on ..." (the CLI says where)
        return c

    async def _serve(self, interrupted: list[bool]) -> None:
        from hypercorn.asyncio import serve

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if threading.current_thread() is threading.main_thread():
            # Ctrl-C stops serving the way `shutdown` does (open streams end, connections
            # close), rather than cancelling the server's task wherever it is.
            def interrupt() -> None:
                interrupted.append(True)
                self.stopping.set()
                self._stop.set()

            self._loop.add_signal_handler(signal.SIGINT, interrupt)
        if self.stopping.is_set():
            return
        await serve(self.app, self._config(), shutdown_trigger=self._stop.wait)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until `shutdown`, or Ctrl-C (then KeyboardInterrupt is raised here, once the
        server has stopped)."""
        del poll_interval  # (the standard library's signature; Hypercorn needs none)
        interrupted: list[bool] = []
        try:
            asyncio.run(self._serve(interrupted))
        finally:
            self.stopping.set()
            self._done.set()
        if interrupted:
            raise KeyboardInterrupt

    def shutdown(self) -> None:
        """Stop serving; returns once the server has stopped (open streams end first)."""
        self.stopping.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop ended meanwhile
                pass
            self._done.wait(timeout=10)

    def server_close(self) -> None:
        self.socket.close()


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.getaddrinfo(host.strip("[]"), None, type=socket.SOCK_STREAM)[0][0]
    except OSError:
        return socket.AF_INET


def make_server(home: Path | str | None = None, host: str = "127.0.0.1", port: int = 8765, *,
                require_token: bool = True,
                request_timeout: float = REQUEST_TIMEOUT_S) -> DashboardServer:
    """A bound (not yet serving) dashboard for the state directory `home` (see
    `DashboardServer` for the token and the timeout)."""
    from jobgroup.state.store import default_home

    return DashboardServer(Path(home) if home else default_home(), host, port,
                           require_token=require_token, request_timeout=request_timeout)


def serve_in_thread(server: DashboardServer) -> threading.Thread:
    """Serve on a daemon thread (tests, benchmarks); stop with `server.shutdown()`. Returns
    once the server accepts connections (they queue on the bound socket before)."""
    t = threading.Thread(target=server.serve_forever, name="dashboard", daemon=True)
    t.start()
    return t
