"""The two ASGI layers every request passes before the application (see `auth` for the policy):

- `Guard`: the `Host` check on loopback binds, the token (bearer, session cookie, or `?token=`,
  which on a page signs the browser in), the same-origin check of requests that change state,
  the security headers (Content-Security-Policy, ...) on every reply, errors included, and a
  limit on every write: a client that stops reading for the request timeout is disconnected.
- `WholeBody`: a request body reaches the application only whole. It is read here first, at
  most `MAX_BODY` bytes and within the server's request timeout (else 413 / 408), and a body
  shorter than its Content-Length (the client stopped sending, or closed) is answered 400;
  either way the application never sees the request, so nothing is launched or cancelled.

Hypercorn bounds the rest: the request line and headers must arrive within the same timeout
(its `keep_alive_timeout`, which runs from the moment the server waits for a request), and an
idle keep-alive connection is closed after it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl, urlencode

from jobgroup.dashboard import auth, pages

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY = 1 << 20  # a job group is a few KiB; 1 MiB is generous
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "content-security-policy": ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data:; connect-src 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
}
_RAW_SECURITY = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
PROBLEM = "application/problem+json"
log = logging.getLogger("jobgroup.dashboard")


def wants_html(path: str) -> bool:
    """Pages answer errors with HTML; the API and the fragments with problem+json."""
    return not path.startswith(("/api/", "/fragments/"))


def problem(status: int, detail: str, **extra: Any) -> dict:
    """An RFC 9457 problem: {type, title, status, detail, ...}."""
    from http import HTTPStatus

    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}


async def respond(send: Send, status: int, body: bytes, ctype: str,
                  headers: dict[str, str] | None = None, close: bool = False,
                  drain: Receive | None = None) -> None:
    """A whole reply. `drain`: the request's unread body is read and dropped (see `_linger`)
    after the reply is sent and before it ends (the server closes the connection once it
    ends, and unread input would make that a reset, not the reply, for a client that sends
    its whole body before it reads)."""
    raw = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode()),
           (b"cache-control", b"no-cache")]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if close:
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    if drain is None:
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.body", "body": body, "more_body": True})
    await _linger(drain)
    await send({"type": "http.response.body", "body": b""})


async def refuse(scope: Scope, send: Send, status: int, detail: str,
                 headers: dict[str, str] | None = None, close: bool = False,
                 drain: Receive | None = None) -> None:
    """An error before the application: an HTML page (401 on a page) or a problem."""
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="jobgroup"'
    if status == 401 and wants_html(scope["path"]):
        await respond(send, status, pages.unauthorized().encode(), "text/html; charset=utf-8",
                      headers, close)
        return
    body = json.dumps(problem(status, detail, instance=scope["path"][:200])).encode()
    await respond(send, status, body, PROBLEM, headers, close, drain)


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return None


class Guard:
    """Who may talk to the dashboard (see `auth`); adds the security headers to every reply.

    `state` is the `DashboardServer`: its `token` (None: --no-auth), `session`, `cookie`,
    `loopback` and `hosts`."""

    def __init__(self, app: App, state: Any) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        # HEAD: the GET without its body (not of a log stream, which would never end)
        head = scope["method"] == "HEAD" and not scope["path"].endswith("/stream")
        if head:
            scope = {**scope, "method": "GET"}

        timeout = self.state.request_timeout
        gone = asyncio.Event()  # a write timed out: the client is as good as gone

        async def secured(message: dict) -> None:
            if gone.is_set():
                return
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *_RAW_SECURITY]}
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            try:  # a client that stops reading holds nothing for long: writes time out too
                await asyncio.wait_for(send(message), timeout)
            except TimeoutError:
                log.info("dashboard: %s %s: the client read nothing for %g s; disconnected",
                         scope["method"], scope["path"][:200], timeout)
                gone.set()  # the reply stays unfinished: the server closes the connection

        async def listening() -> dict:
            """`receive`, or the disconnect of a client whose write timed out (a log stream
            ends on it, its reader stops)."""
            if gone.is_set():
                return {"type": "http.disconnect"}
            got = asyncio.ensure_future(receive())
            lost = asyncio.ensure_future(gone.wait())
            await asyncio.wait((got, lost), return_when=asyncio.FIRST_COMPLETED)
            if got.done():
                lost.cancel()
                return got.result()
            got.cancel()
            return {"type": "http.disconnect"}

        why = self._refusal(scope)
        if why is not None:
            status, detail = why
            await refuse(scope, secured, status, detail)
            return
        if await self._signed_in(scope, secured):
            return
        await self.app(scope, listening, secured)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(status, why) when the request must be refused; None when it may go on."""
        state = self.state
        host = (_header(scope, b"host") or "").lower()
        if state.loopback and host not in state.hosts:
            # Bound to loopback, answer only requests addressed to this server by a loopback
            # name: another site's name re-pointed at 127.0.0.1 (DNS rebinding) is refused.
            return 403, "unexpected Host header"
        if state.token is not None:
            why = self._unauthorized(scope)
            if why is not None:
                return 401, why
        if scope["method"] not in ("GET", "HEAD"):
            origin = _header(scope, b"origin")
            if origin is not None and origin.lower() != f"http://{host}":
                return 403, "cross-site requests are refused"
        return None

    def _unauthorized(self, scope: Scope) -> str | None:
        token = self.state.token
        given = _query_token(scope)
        if given is not None:
            return None if auth.token_matches(given, token) else "invalid token"
        header = _header(scope, b"authorization")
        if header is not None:
            return None if auth.token_matches(auth.bearer(header), token) else "invalid token"
        cookie = auth.cookie_value(_header(scope, b"cookie"), self.state.cookie)
        if cookie is None:
            return ("this dashboard needs its token (Authorization: Bearer TOKEN; the token is "
                    "in $JOBGROUP_HOME/dashboard.token)")
        if not auth.token_matches(cookie, self.state.session):
            return ("the session has expired (the dashboard was restarted): open the URL it "
                    "printed again")
        return None

    async def _signed_in(self, scope: Scope, send: Send) -> bool:
        """`?token=` (already checked) on a page: set the session cookie and send the browser
        on to the same URL without the token (True: answered)."""
        if self.state.token is None or scope["method"] != "GET" or not wants_html(scope["path"]):
            return False
        if _query_token(scope) is None:
            return False
        rest = [(k, v) for k, v in parse_qsl(scope["query_string"].decode("latin-1"),
                                             keep_blank_values=True) if k != "token"]
        path = scope["path"]
        if not re.fullmatch(r"/(?:[A-Za-z0-9._-][A-Za-z0-9/._-]*)?", path):
            path = "/"  # never send the browser off this server ("//host", "/\\host")
        target = path + ("?" + urlencode(rest) if rest else "")
        await respond(send, 200, pages.redirect(target).encode(), "text/html; charset=utf-8",
                      {"Set-Cookie": auth.set_cookie(self.state.cookie, self.state.session)})
        return True


def _query_token(scope: Scope) -> str | None:
    qs = scope["query_string"]
    if b"token=" not in qs:
        return None
    values = [v for k, v in parse_qsl(qs.decode("latin-1"), keep_blank_values=True)
              if k == "token"]
    return values[-1] if values and values[-1] else None


async def _linger(receive: Receive, limit: int = 16 << 20, timeout: float = 2.0) -> None:
    """Read and drop what the client still sends of a refused body (at most `limit` bytes,
    for at most `timeout` seconds)."""
    try:
        async with asyncio.timeout(timeout):
            while limit > 0:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body"):
                    return
                limit -= len(message.get("body", b""))
    except TimeoutError:
        pass


class WholeBody:
    """Hands the application a request's body only once it has arrived whole (see the module
    docstring); `timeout` is read from `state.request_timeout` at each request."""

    def __init__(self, app: App, state: Any) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        chunked = "chunked" in (_header(scope, b"transfer-encoding") or "").lower()
        if length is None and not chunked:
            await refuse(scope, send, 411, "Content-Length required", close=True)
            return
        declared = int(length) if length and length.strip().isdigit() else None
        if declared is not None and declared > MAX_BODY:
            await refuse(scope, send, 413, f"the body is {declared} bytes; at most {MAX_BODY} "
                         "are accepted", close=True, drain=receive)
            return
        timeout = self.state.request_timeout
        parts: list[bytes] = []
        got = 0
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        break
                    chunk = message.get("body", b"")
                    got += len(chunk)
                    if got > MAX_BODY:
                        await refuse(scope, send, 413, f"the body is over {MAX_BODY} bytes; "
                                     f"at most {MAX_BODY} are accepted", close=True,
                                     drain=receive)
                        return
                    parts.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            what = f" (Content-Length: {declared})" if declared is not None else ""
            await refuse(scope, send, 408, f"the body did not arrive within {timeout:g} s"
                         f"{what}; nothing was done", close=True)
            return
        if (declared is not None and got != declared) or message["type"] == "http.disconnect":
            of = f" of its {declared} bytes (Content-Length)" if declared is not None else ""
            await refuse(scope, send, 400, f"the body ended after {got}{of}; nothing was done",
                         close=True)
            return
        body = b"".join(parts)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)
