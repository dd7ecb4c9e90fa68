"""The dashboard's HTTP server: the standard library's ThreadingHTTPServer, a route table, the
security checks of `auth`, JSON with ETags, and Server-Sent Events for logs.

Contract:
- Every request opens its own `Store` (a Store is not shared between threads) and closes it.
- Paths are matched whole against the route table (job ids are digits, nothing is joined onto
  a filesystem path from a request); static files come from a fixed table. Log requests name a
  task by index or name of the job's own tasks and a rank as an integer; the files read are the
  ones the store's rows point at, inside the state directory.
- Errors meant for users come back as JSON `{"error": ...}` (pages: an HTML page) with 400,
  401, 403, 404, 408, 411, 413; never a traceback. Anything else is logged and answered 500.
- Only a complete request is acted on: a body shorter than its Content-Length (the client
  stopped sending, or closed) is answered 400 or 408 and the connection closed; nothing is
  launched or cancelled.
- Timeouts (`request_timeout`, default 30 s): from the moment the server waits for a request on a
  connection, the whole request — request line, headers, body — must arrive within it, or the
  connection is closed (an idle keep-alive connection, a stalled or trickling upload). Each
  write may block at most that long too (a client that stops reading). A log stream (SSE) is
  long-lived by design: once its request is read it only writes, a keepalive every 15 s.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import queue
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from jobgroup import api
from jobgroup.dashboard import auth, pages, views
from jobgroup.dashboard.openapi import SPEC
from jobgroup.errors import JobGroupError, NotFound, UsageError
from jobgroup.state.store import Store

log = logging.getLogger("jobgroup.dashboard")

MAX_BODY = 1 << 20  # a job group is a few KiB; 1 MiB is generous
REQUEST_TIMEOUT_S = 30.0  # a whole request (even 1 MiB at a slow 35 KiB/s), or one write
MAX_STREAMS = 64  # open log streams at once (each holds a thread and the node files)
KEEPALIVE_S = 15.0
LOG_TAIL_DEFAULT = 10_000  # lines of each node a log reply or stream starts with
LOG_REPLY_MAX = 4 << 20  # bytes of log text, as JSON, in one /logs reply (the oldest go first)
LOG_BATCH = 256 << 10  # characters of log text a stream's reader hands its writer at once
LOG_QUEUE = 8  # batches waiting for a stream's writer: a slow browser pauses the reader
STATIC_DIR = Path(__file__).parent / "static"
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data:; connect-src 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
}
_ID = r"(\d{1,12})"


class HTTPError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


class IncompleteRequest(Exception):
    """The request did not arrive whole (its headers or body cut short, or not in time):
    never act on it."""


def _int(params: dict[str, list[str]], name: str, *, minimum: int = 0) -> int | None:
    values = params.get(name)
    if not values or values[-1] == "":
        return None
    text = values[-1]
    if not re.fullmatch(r"\d{1,9}", text) or int(text) < minimum:
        raise HTTPError(400, f"{name} must be an integer >= {minimum}, not {text[:40]!r}")
    return int(text)


def _str(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values and values[-1] != "" else None


def prefix_of(task: str, rank: int, attempt: int) -> str:
    """`(task, rank=N)` as `jobgroup logs` prints it (`, attempt=K)` for later attempts)."""
    return f"({task}, rank={rank})" if attempt <= 1 else f"({task}, rank={rank}, attempt={attempt})"


class DashboardServer(ThreadingHTTPServer):
    """The dashboard of the state directory `home`, bound to `host`:`port`.

    `token`: the state directory's token, required on every request (None with
    `require_token=False`, which is refused — UsageError — unless `host` is a loopback name).
    `request_timeout`: seconds a whole request may take to arrive, and a write to drain."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

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
        self.address_family = _family(host)
        super().__init__((host, port), Handler)
        self.port = self.server_address[1]
        self.cookie = auth.cookie_name(self.port)
        self.hosts = auth.allowed_hosts(host, self.port)
        self._static = {name: (STATIC_DIR / name).read_bytes() for name in STATIC}

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

    def shutdown(self) -> None:
        self.stopping.set()
        super().shutdown()


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]
    except OSError:
        return socket.AF_INET


class _DeadlineReader(socket.SocketIO):
    """The socket's read side, where every read waits at most until the handler's deadline
    for the current request (then TimeoutError): a per-read timeout alone would let a client
    that trickles one byte per second hold a thread forever. Writes keep the socket's own
    timeout, restored after each read. Records end of input in `handler.eof`."""

    def __init__(self, sock: socket.socket, handler: Handler) -> None:
        super().__init__(sock, "rb")
        self._conn, self._handler = sock, handler

    def readinto(self, b: Any) -> int | None:
        left = self._handler.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._conn.settimeout(left)
        try:
            n = super().readinto(b)
        finally:
            self._conn.settimeout(self._handler.server.request_timeout)
        if n == 0:
            self._handler.eof = True
        return n


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"
    server_version = "jobgroup-dashboard"
    sys_version = ""
    deadline = 0.0  # monotonic time by which the current request must have arrived
    eof = False  # the client closed its side while we read the current request

    # ---- plumbing --------------------------------------------------------------------------

    def setup(self) -> None:
        """The stdlib's setup, with writes bounded by the server's timeout and reads by the
        current request's deadline (see `_DeadlineReader`)."""
        self.timeout = self.server.request_timeout
        self.deadline = time.monotonic() + self.timeout
        super().setup()
        self.rfile.close()
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self))

    def handle_one_request(self) -> None:
        # The clock of each request starts when we begin to wait for it: an idle keep-alive
        # connection and a slow request both end after `request_timeout`. The stdlib closes
        # the connection on the TimeoutError of the request line or headers.
        self.deadline = time.monotonic() + self.server.request_timeout
        self.eof = False
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib's name)
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("GET", head=True)

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _wants_html(self) -> bool:
        return not self.path.startswith("/api/") and not self.path.startswith("/fragments/")

    def _dispatch(self, method: str, head: bool = False) -> None:
        self._head = head
        split = urlsplit(self.path)
        path, params = split.path, parse_qs(split.query, keep_blank_values=True)
        try:
            if self.eof:
                # The input ended before the blank line that ends the headers (the stdlib
                # takes end of input for it): the request may be missing anything.
                raise IncompleteRequest("the request ended before the end of its headers; "
                                        "nothing was done")
            self._check_host()
            if not self._authorized(method, path, params):
                return
            if method == "POST":
                self._check_origin()
            for m, pattern, name in ROUTES:
                match = pattern.fullmatch(path)
                if match:
                    if m != method:
                        continue
                    getattr(self, name)(*match.groups(), params=params)
                    return
            if any(p.fullmatch(path) for _, p, _ in ROUTES):
                raise HTTPError(405, f"{method} is not allowed here")
            raise HTTPError(404, f"no such page or endpoint: {path[:200]}")
        except HTTPError as e:
            self._error(e.status, e.message, **e.extra)
        except NotFound as e:
            self._error(404, str(e))
        except JobGroupError as e:
            problems = getattr(e, "problems", None)
            if problems is not None:
                self._error(400, "invalid spec", problems=[_problem(p) for p in problems])
            else:
                self._error(400, str(e))
        except IncompleteRequest as e:
            self.close_connection = True
            try:  # the client may be gone already: then closing is the whole answer
                self._error(408 if isinstance(e.__cause__, TimeoutError) else 400, str(e))
            except OSError:
                pass
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception:
            log.exception("dashboard: %s %s failed", method, path)
            self._error(500, "internal error (see the dashboard's output)")

    def _not_modified(self, tag: str) -> bool:
        """Answer 304 if the client already has `tag` (If-None-Match)."""
        inm = self.headers.get("If-None-Match", "")
        if tag not in [t.strip().removeprefix("W/") for t in inm.split(",")]:
            return False
        self.send_response(304)
        self.send_header("ETag", tag)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def _send(self, status: int, body: bytes, ctype: str, *, etag: bool | str = False,
              headers: dict[str, str] | None = None) -> None:
        tag = None
        if etag and status == 200:
            tag = etag if isinstance(etag, str) else (
                '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"')
            if self._not_modified(tag):
                return
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        if tag:
            self.send_header("ETag", tag)
        for k, v in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not self._head:
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, *, etag: bool = False,
              headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode()
        self._send(status, body, "application/json", etag=etag, headers=headers)

    def _html(self, status: int, text: str, *, etag: bool | str = True) -> None:
        self._send(status, text.encode(), "text/html; charset=utf-8", etag=etag)

    def _error(self, status: int, message: str, **extra: Any) -> None:
        headers = {}
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="jobgroup"'
        if status in (411, 413):
            self.close_connection = True  # the body was not read
        if self._wants_html() and status in (401, 404):
            text = pages.unauthorized() if status == 401 else pages.not_found(message)
            self._send(status, text.encode(), "text/html; charset=utf-8", headers=headers)
            return
        self._json(status, {"error": message, **extra}, headers=headers)
        if status == 413:
            self._linger()

    def _linger(self, limit: int = 16 << 20, timeout: float = 2.0) -> None:
        """After refusing a body unread: discard what the client still sends (bounded in size
        and time) before closing, so a client that writes its whole body before reading gets
        the 413 rather than a broken pipe."""
        try:
            self.deadline = min(self.deadline, time.monotonic() + timeout)
            while limit > 0:
                chunk = self.rfile.read1(min(1 << 16, limit))
                if not chunk:
                    return
                limit -= len(chunk)
        except OSError:
            pass

    # ---- security ---------------------------------------------------------------------------

    def _check_host(self) -> None:
        """Bound to loopback, answer only requests addressed to this server by a loopback
        name: a page of another site whose name was re-pointed at 127.0.0.1 (DNS rebinding)
        sends its own name as Host and is refused."""
        if not self.server.loopback:
            return  # beyond loopback we cannot know every name; the token is what protects
        host = (self.headers.get("Host") or "").lower()
        if host not in self.server.hosts:
            raise HTTPError(403, "unexpected Host header")

    def _check_origin(self) -> None:
        origin = self.headers.get("Origin")
        if origin is None:
            return  # not a browser (curl, scripts) or same-origin by an old browser
        host = self.headers.get("Host") or ""
        if origin.lower() != f"http://{host}".lower():
            raise HTTPError(403, "cross-site requests are refused")

    def _authorized(self, method: str, path: str, params: dict[str, list[str]]) -> bool:
        """True if the request may proceed; raises 401, or answers a sign-in itself (False).

        Accepted: `Authorization: Bearer TOKEN`; our session cookie; `?token=TOKEN` — on a
        page (GET) it signs the browser in: a cookie, and a page that sends it on to the
        same URL without the token; elsewhere it authenticates that one request."""
        token = self.server.token
        if token is None:
            return True  # --no-auth (loopback only)
        given = _str(params, "token")
        if given is not None:
            if not auth.token_matches(given, token):
                raise HTTPError(401, "invalid token")
            if method != "GET" or not self._wants_html():
                return True
            rest = {k: v for k, v in params.items() if k != "token"}
            if not re.fullmatch(r"/(?:[A-Za-z0-9._-][A-Za-z0-9/._-]*)?", path):
                path = "/"  # never send the browser off this server ("//host", "/\\host")
            target = path + ("?" + urlencode(rest, doseq=True) if rest else "")
            self._send(200, pages.redirect(target).encode(), "text/html; charset=utf-8",
                       headers={"Set-Cookie": auth.set_cookie(self.server.cookie,
                                                              self.server.session)})
            return False
        header = self.headers.get("Authorization")
        if header is not None:
            if not auth.token_matches(auth.bearer(header), token):
                raise HTTPError(401, "invalid token")
            return True
        cookie = auth.cookie_value(self.headers.get("Cookie"), self.server.cookie)
        if cookie is None:
            raise HTTPError(401, "this dashboard needs its token (Authorization: Bearer TOKEN; "
                                 "the token is in $JOBGROUP_HOME/dashboard.token)")
        if not auth.token_matches(cookie, self.server.session):
            raise HTTPError(401, "the session has expired (the dashboard was restarted): "
                                 "open the URL it printed again")
        return True

    # ---- pages -----------------------------------------------------------------------------

    def _store(self) -> Store:
        return Store(self.server.home)

    def _jobs_html(self, params: dict[str, list[str]], kind: str, render: Any) -> None:
        """The jobs page or its rows, tagged by the store's fingerprint (see views.version):
        an unchanged store costs one small query, not 1,000 rendered rows."""
        status = _str(params, "status") or "all"
        views.status_filter(status)  # 400 for an unknown filter, before the 304 shortcut
        st = self._store()
        try:
            key = f"{kind}:{status}:{views.version(st)}"
            tag = '"v' + hashlib.blake2b(key.encode(), digest_size=12).hexdigest() + '"'
            if self._not_modified(tag):
                return
            jobs = views.job_rows(st, status)
        finally:
            st.close()
        self._html(200, render(jobs, status), etag=tag)

    def page_jobs(self, *, params: dict[str, list[str]]) -> None:
        self._jobs_html(params, "page", pages.jobs_page)

    def fragment_jobs(self, *, params: dict[str, list[str]]) -> None:
        self._jobs_html(params, "rows", lambda jobs, status: pages.job_rows(jobs))

    def _group(self, job_id: str) -> tuple[dict, list[dict]]:
        st = self._store()
        try:
            return views.job_detail(st, int(job_id)), views.events(st, int(job_id))
        finally:
            st.close()

    def page_group(self, job_id: str, *, params: dict[str, list[str]]) -> None:
        job, events = self._group(job_id)
        self._html(200, pages.group_page(job, events, time.time()), etag=False)

    def fragment_group(self, job_id: str, *, params: dict[str, list[str]]) -> None:
        job, events = self._group(job_id)
        self._html(200, pages.group_live(job, events, time.time()))

    def static(self, name: str, *, params: dict[str, list[str]]) -> None:
        if name not in STATIC:
            raise HTTPError(404, "no such file")
        self._send(200, self.server._static[name], STATIC[name], etag=True)

    def favicon(self, *, params: dict[str, list[str]]) -> None:
        self._send(204, b"", "image/x-icon")

    # ---- API: reads ------------------------------------------------------------------------

    def api_openapi(self, *, params: dict[str, list[str]]) -> None:
        self._json(200, SPEC, etag=True)

    def api_jobs(self, *, params: dict[str, list[str]]) -> None:
        st = self._store()
        try:
            jobs = views.jobs(st, _str(params, "status"))
        finally:
            st.close()
        self._json(200, {"jobs": jobs}, etag=True)

    def api_job(self, job_id: str, *, params: dict[str, list[str]]) -> None:
        st = self._store()
        try:
            job = views.job_detail(st, int(job_id))
        finally:
            st.close()
        self._json(200, job, etag=True)

    def api_events(self, job_id: str, *, params: dict[str, list[str]]) -> None:
        after = _int(params, "after") or 0
        st = self._store()
        try:
            evs = views.events(st, int(job_id), after=after)
        finally:
            st.close()
        self._json(200, {"events": evs}, etag=True)

    def _log_selection(self, job_id: str, params: dict[str, list[str]]) -> tuple[int, int | None,
                                                                                  int | None, int]:
        """(job id, task index or None, rank or None, prefix width), validated against the
        job's own tasks (NotFound lists the valid ones)."""
        jid = int(job_id)
        task = _str(params, "task")
        rank = _int(params, "rank")
        job = api.get_job(jid, home=self.server.home)
        selected = list(range(len(job.tasks))) if task is None else [api.resolve_task(job, task)]
        if rank is not None and all(rank >= job.tasks[i].num_nodes for i in selected):
            top = max(job.tasks[i].num_nodes for i in selected) - 1
            raise NotFound(f"no node {rank}: the selected task(s) have ranks 0-{top}.")
        width = max(len(prefix_of(job.tasks[i].name, r, 1))
                    for i in selected for r in range(job.tasks[i].num_nodes))
        return jid, (None if task is None else selected[0]), rank, width

    def api_logs(self, job_id: str, *, params: dict[str, list[str]]) -> None:
        """The last `tail` lines (LOG_TAIL_DEFAULT) of each selected node, read from the end of
        its files, in at most LOG_REPLY_MAX bytes of JSON text (beyond, the oldest pieces of the
        node holding the most go first); `truncated`: earlier lines are left out."""
        jid, task, rank, _ = self._log_selection(job_id, params)
        tail = _int(params, "tail", minimum=1) or LOG_TAIL_DEFAULT
        from collections import deque

        kept: dict[tuple[str, int], deque[Any]] = {}
        size: dict[tuple[str, int], int] = {}
        ended: dict[tuple[str, int], int] = {}  # lines read of each node
        dropped: set[tuple[str, int]] = set()
        total = 0
        # One line more than asked of each node tells whether there were earlier ones.
        for line in api.logs(jid, task, rank=rank, follow=False, tail=tail + 1,
                             home=self.server.home):
            key = (line.task, line.rank)
            if key not in kept:
                kept[key], size[key], ended[key] = deque(), 0, 0
            kept[key].append(line)
            cost = _json_size(line.text)
            size[key] += cost
            ended[key] += not line.more
            total += cost
            while total > LOG_REPLY_MAX:
                big = max(size, key=size.__getitem__)
                if len(kept[big]) <= 1:
                    break
                gone = _json_size(kept[big].popleft().text)
                size[big] -= gone
                total -= gone
                dropped.add(big)
        for key, pieces in kept.items():
            if ended[key] > tail and key not in dropped:  # drop the extra line
                while pieces and pieces.popleft().more:
                    pass
        truncated = bool(dropped) or any(n > tail for n in ended.values())
        self._json(200, {"lines": [_line(ln) for pieces in kept.values() for ln in pieces],
                         "truncated": truncated}, etag=True)

    def api_logs_stream(self, job_id: str, *, params: dict[str, list[str]]) -> None:
        jid, task, rank, width = self._log_selection(job_id, params)
        tail = _int(params, "tail")
        if not self.server.streams.acquire(blocking=False):
            raise HTTPError(503, f"too many log streams open (at most {MAX_STREAMS})")
        try:
            self._stream(jid, task, rank, width, LOG_TAIL_DEFAULT if tail is None else tail)
        finally:
            self.server.streams.release()

    def _stream(self, jid: int, task: int | None, rank: int | None, width: int,
                tail: int) -> None:
        """Server-Sent Events: the last `tail` lines of each node, then what follows. A reader
        thread hands lines over in batches (at most LOG_BATCH characters, or whatever there is
        when it waits for more) through a queue of LOG_QUEUE batches: memory stays bounded
        whatever the size of the logs and the speed of the browser."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Accel-Buffering", "no")
        self.send_header("Connection", "close")
        for k, v in SECURITY_HEADERS.items():
            self.send_header(k, v)
        self.end_headers()
        if self._head:
            return
        self.wfile.write(f"event: start\ndata: {json.dumps({'width': width})}\n\n".encode())
        self.wfile.flush()
        q: queue.Queue[Any] = queue.Queue(maxsize=LOG_QUEUE)
        stop = threading.Event()
        end = object()
        home = self.server.home
        batch: list[Any] = []
        held = [0]  # characters in `batch`

        class Stopped(Exception):
            pass

        def put(item: Any) -> None:
            while not stop.is_set():
                try:
                    q.put(item, timeout=1.0)
                    return
                except queue.Full:
                    continue
            raise Stopped  # the browser went away: stop reading (even an idle job's files)

        def hand_over() -> None:
            if batch:
                put(batch.copy())
                batch.clear()
                held[0] = 0
            elif stop.is_set():
                raise Stopped

        def read() -> None:
            try:
                for line in api.logs(jid, task, rank=rank, follow=True, tail=tail,
                                     on_idle=hand_over, home=home):
                    batch.append(line)
                    held[0] += len(line.text)
                    if held[0] >= LOG_BATCH or len(batch) >= 500:
                        hand_over()
                hand_over()
                put(end)
            except Stopped:
                pass
            except Exception as e:  # the job vanished, the state directory went away
                log.warning("dashboard: log stream of job %s ended: %s", jid, e)
                try:
                    put(end)
                except Stopped:
                    pass

        threading.Thread(target=read, name=f"logs-{jid}", daemon=True).start()
        try:
            while not self.server.stopping.is_set():
                try:
                    item = q.get(timeout=KEEPALIVE_S)
                except queue.Empty:
                    self.wfile.write(b": keepalive\n\n")
                    self.wfile.flush()
                    continue
                if item is end:
                    self.wfile.write(b"event: end\ndata: {}\n\n")
                    self.wfile.flush()
                    return
                self.wfile.write("".join(f"data: {json.dumps(_line(ln))}\n\n"
                                         for ln in item).encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the browser went away
        finally:
            stop.set()

    # ---- API: verbs ------------------------------------------------------------------------

    def _body(self) -> bytes:
        """The whole body, exactly Content-Length bytes; IncompleteRequest if fewer arrive
        (the client closed, or stalled past the request's deadline)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise HTTPError(411, "send a Content-Length (chunked bodies are not accepted)")
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            raise HTTPError(411, "Content-Length required")
        n = int(length)
        if n > MAX_BODY:
            raise HTTPError(413, f"the body is {n} bytes; at most {MAX_BODY} are accepted")
        try:
            data = self.rfile.read(n)
        except TimeoutError as e:
            raise IncompleteRequest(f"the body did not arrive within {self.timeout:g} s "
                                    f"(Content-Length: {n}); nothing was done") from e
        except OSError as e:
            raise IncompleteRequest(f"the connection failed while reading the body: {e}") from e
        if len(data) != n:
            raise IncompleteRequest(f"the body ended after {len(data)} of its {n} bytes "
                                    "(Content-Length); nothing was done")
        return data

    def _json_body(self) -> Any:
        try:
            return json.loads(self._body() or b"{}")
        except (ValueError, UnicodeDecodeError) as e:
            raise HTTPError(400, f"the body is not valid JSON: {e}") from None

    def _spec_request(self) -> tuple[str, str | None, dict[str, str]]:
        """(YAML text, name, env) of a launch/validate request."""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype == "application/json":
            data = self._json_body()
            if not isinstance(data, dict) or not isinstance(data.get("spec"), str):
                raise HTTPError(400, 'expected {"spec": "<YAML>", "name": ..., "env": {...}}')
            name, env = data.get("name"), data.get("env") or {}
            if name is not None and not isinstance(name, str):
                raise HTTPError(400, "name must be a string")
            if not isinstance(env, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
                raise HTTPError(400, "env must map strings to strings")
            return data["spec"], name, api.parse_env(f"{k}={v}" for k, v in env.items())
        raw = self._body()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPError(400, "the spec is not UTF-8 text") from None
        return text, None, {}

    @staticmethod
    def _parse(text: str, name: str | None) -> Any:
        """Validate like the CLI; SpecError (-> 400 with problems) if invalid."""
        from jobgroup.spec.loader import parse

        if "\x00" in text:
            raise HTTPError(400, "the spec contains NUL bytes")
        if not text.strip():
            raise HTTPError(400, "the spec is empty")
        return parse(text, label="<posted>", name=name)

    def api_validate(self, *, params: dict[str, list[str]]) -> None:
        from jobgroup.spec import SpecError

        text, name, _ = self._spec_request()
        try:
            group, warnings = self._parse(text, name)
        except SpecError as e:
            self._json(200, {"valid": False, "problems": [_problem(p) for p in e.problems]})
            return
        self._json(200, {"valid": True, "name": group.name,
                         "tasks": [t.name for t in group.tasks],
                         "problems": [_problem(w) for w in warnings]})

    def api_launch(self, *, params: dict[str, list[str]]) -> None:
        text, name, env = self._spec_request()
        name = name or _str(params, "name")
        self._parse(text, name)  # problems labelled <posted>, before anything is recorded
        notes: list[str] = []
        # A trailing newline makes `launch` read the text as YAML, never as a file name.
        job = api.launch(text if text.endswith("\n") else text + "\n", name=name, env=env,
                         home=self.server.home, on_warning=notes.append)
        st = self._store()
        try:
            detail = views.job_detail(st, job.id)
        finally:
            st.close()
        self._json(201, {"job": detail, "warnings": notes},
                   headers={"Location": f"/api/jobs/{job.id}"})

    def api_cancel(self, job_id: str, *, params: dict[str, list[str]]) -> None:
        if self.headers.get("Content-Length"):
            self._body()  # drain (ignored)
        result = api.cancel(int(job_id), home=self.server.home)
        self._json(200, {"id": int(job_id), "result": result[int(job_id)]})

    def api_cancel_many(self, *, params: dict[str, list[str]]) -> None:
        data = self._json_body()
        if not isinstance(data, dict):
            raise HTTPError(400, 'expected {"ids": [...]} or {"all": true}')
        if data.get("all") is True:
            results = api.cancel_all(home=self.server.home)
        else:
            ids = data.get("ids")
            if not isinstance(ids, list) or not ids or not all(
                    isinstance(i, int) and not isinstance(i, bool) and 0 < i < 10**12
                    for i in ids):
                raise HTTPError(400, 'expected {"ids": [positive integers]} or {"all": true}')
            results = api.cancel(ids, home=self.server.home)
        self._json(200, {"results": {str(k): v for k, v in results.items()}})


def _json_size(text: str) -> int:
    """Bytes `text` takes in a JSON reply (escapes: up to 12 bytes a character)."""
    return len(text) if text.isascii() and text.isprintable() else len(json.dumps(text))


def _line(line: Any) -> dict:
    return {"task": line.task, "rank": line.rank, "attempt": line.attempt, "text": line.text,
            "more": line.more, "prefix": prefix_of(line.task, line.rank, line.attempt)}


def _problem(p: Any) -> dict:
    return {**p.to_dict(), "text": str(p)}


ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p), h) for m, p, h in [
        ("GET", r"/", "page_jobs"),
        ("GET", rf"/jobs/{_ID}", "page_group"),
        ("GET", r"/fragments/jobs", "fragment_jobs"),
        ("GET", rf"/fragments/jobs/{_ID}", "fragment_group"),
        ("GET", r"/static/([a-z]+\.(?:js|css))", "static"),
        ("GET", r"/favicon\.ico", "favicon"),
        ("GET", r"/api/openapi\.json", "api_openapi"),
        ("GET", r"/api/jobs", "api_jobs"),
        ("POST", r"/api/jobs", "api_launch"),
        ("POST", r"/api/validate", "api_validate"),
        ("POST", r"/api/jobs/cancel", "api_cancel_many"),
        ("GET", rf"/api/jobs/{_ID}", "api_job"),
        ("GET", rf"/api/jobs/{_ID}/events", "api_events"),
        ("GET", rf"/api/jobs/{_ID}/logs", "api_logs"),
        ("GET", rf"/api/jobs/{_ID}/logs/stream", "api_logs_stream"),
        ("POST", rf"/api/jobs/{_ID}/cancel", "api_cancel"),
    ]
]


def make_server(home: Path | str | None = None, host: str = "127.0.0.1", port: int = 8765, *,
                require_token: bool = True,
                request_timeout: float = REQUEST_TIMEOUT_S) -> DashboardServer:
    """A bound (not yet serving) dashboard for the state directory `home` (see
    `DashboardServer` for the token and the timeout)."""
    from jobgroup.state.store import default_home

    return DashboardServer(Path(home) if home else default_home(), host, port,
                           require_token=require_token, request_timeout=request_timeout)


def serve_in_thread(server: DashboardServer) -> threading.Thread:
    """Serve on a daemon thread (tests, benchmarks); stop with `server.shutdown()`."""
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                         name="dashboard", daemon=True)
    t.start()
    return t

