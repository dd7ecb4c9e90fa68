"""What the route handlers share: JSON and HTML replies with ETags, the problem reply of every
error (RFC 9457), and small checks of what a request names."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Callable

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from jobgroup.dashboard import pages, views
from jobgroup.dashboard.middleware import PROBLEM, problem, wants_html
from jobgroup.errors import JobGroupError, NotFound
from jobgroup.state.store import Store

log = logging.getLogger("jobgroup.dashboard")

HTML = "text/html"  # (Litestar adds "; charset=utf-8" to text/* types)
MAX_JOB_ID = 10**12


def not_modified(request: Request, tag: str) -> bool:
    inm = request.headers.get("if-none-match", "")
    return tag in [t.strip().removeprefix("W/") for t in inm.split(",")]


def tagged(request: Request, body: bytes, media_type: str, tag: str | None = None,
           status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """`body` with an ETag (its hash unless `tag` is given); 304 when the client has it."""
    tag = tag or '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    if not_modified(request, tag):
        return Response(b"", status_code=304, headers={"ETag": tag, "Cache-Control": "no-cache"})
    return Response(body, status_code=status, media_type=media_type,
                    headers={"ETag": tag, "Cache-Control": "no-cache", **(headers or {})})


def as_json(request: Request, data: Any, kind: type, *, etag: bool = True, status: int = 200,
            headers: dict[str, str] | None = None) -> Response:
    """`data` (what `views` built) checked against its declared type `kind`, as JSON."""
    body = msgspec.json.encode(msgspec.convert(data, kind))
    if not etag:
        return Response(body, status_code=status, media_type="application/json",
                        headers=headers)
    return tagged(request, body, "application/json", status=status, headers=headers)


def read(home: Any, fn: Callable[[Store], Any]) -> Any:
    """`fn` of a Store of `home` opened for it (a Store is not shared between threads)."""
    st = Store(home)
    try:
        return fn(st)
    finally:
        st.close()


def job_id(value: int) -> int:
    """A job id as a path gave it; NotFound beyond what the store can hold."""
    if not 0 < value < MAX_JOB_ID:
        raise NotFound(f"no job {value}")
    return value


def spec_problem(p: Any) -> dict:
    return {**p.to_dict(), "text": str(p)}


def error(request: Request, exc: Exception) -> Response:
    """Every error as `application/problem+json` (RFC 9457); on a page, 404 as HTML."""
    extra: dict[str, Any] = {}
    if isinstance(exc, NotFound):
        status, detail = 404, str(exc)
    elif isinstance(exc, JobGroupError):
        problems = getattr(exc, "problems", None)
        status, detail = 400, str(exc)
        if problems is not None:
            detail = "invalid spec"
            extra["problems"] = [spec_problem(p) for p in problems]
    elif isinstance(exc, HTTPException):
        status, detail = exc.status_code, exc.detail
        if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
            detail = "; ".join(f"{e.get('key', '')}: {e.get('message', '')}".lstrip(": ")
                               for e in exc.extra if isinstance(e, dict)) or detail
        if status == 404 and detail == "Not Found":
            detail = f"no such page or endpoint: {request.url.path[:200]}"
        elif status == 405:
            detail = f"{request.method} is not allowed here"
    else:
        log.error("dashboard: %s %s failed", request.method, request.url.path, exc_info=exc)
        status, detail = 500, "internal error (see the dashboard's output)"
    if status == 404 and wants_html(request.url.path):
        return Response(pages.not_found(detail), status_code=404, media_type=HTML)
    body = problem(status, detail, instance=request.url.path[:200], **extra)
    return Response(json.dumps(body).encode(), status_code=status, media_type=PROBLEM)


def prefix_of(task: str, rank: int, attempt: int) -> str:
    """`(task, rank=N)` as `jobgroup logs` prints it (`, attempt=K)` for later attempts)."""
    return f"({task}, rank={rank})" if attempt <= 1 else f"({task}, rank={rank}, attempt={attempt})"


def log_line(line: Any) -> dict:
    """A `LogLine` as the API gives it (`schemas.LogLine`)."""
    from jobgroup.dashboard import logmerge

    when = logmerge.at(line)
    return {"task": line.task, "rank": line.rank, "attempt": line.attempt, "text": line.text,
            "more": line.more, "prefix": prefix_of(line.task, line.rank, line.attempt),
            "at": when, "at_iso": views.iso(when)}
