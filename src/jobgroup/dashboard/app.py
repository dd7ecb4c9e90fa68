"""The dashboard's routes: the JSON API under /api/v1 and the pages, as a Litestar application.

Why Litestar (2.x) on Hypercorn, rather than the standard library's `http.server` it replaced:
- the project's data model is msgspec; Litestar decodes and encodes msgspec Structs natively
  and derives the OpenAPI 3.1 description (GET /api/v1/openapi.json) from the handlers'
  signatures and the Structs of `schemas`, so the description cannot drift from the code
  (the hand-written one had 234 lines that could); query parameters are typed and checked
  (`limit` 1-1000, `rank` >= 0, ...) from the same declarations;
- routing, streaming (`Stream`, which also notices a client that went away) and error handling
  are the framework's; FastAPI would bring pydantic as a second data model, Starlette alone no
  OpenAPI generation;
- Hypercorn (rather than uvicorn) because its keep-alive timer runs until a request's headers
  are complete: a stalled or trickling request is closed after the timeout; uvicorn times out
  only idle connections between requests.
What stays ours: the security layers and whole-body rule (`middleware`), the views, the HTML.
Imported only by `jobgroup dashboard` (≈0.3 s: Litestar, Hypercorn), never by other commands.

API: every endpoint is under /api/v1; the paths of the first release (/api/jobs, ...) answer
the same for one more release (marked deprecated in the description). Lists take `limit` and
`offset`; times come as epoch seconds and ISO 8601 (`*_iso`); errors are
`application/problem+json` (RFC 9457).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import queue
import threading
import time
import weakref
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any, Callable
from urllib.parse import urlencode

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import (Components, OpenAPIMediaType, OpenAPIType, Operation,
                                   RequestBody, Schema, SecurityScheme)
from litestar.params import FromPath, JSONBody, Parameter, RawBody
from litestar.response import Stream

from jobgroup import api
from jobgroup.dashboard import logmerge, pages, schemas, views
from jobgroup.dashboard.middleware import PROBLEM, Guard, WholeBody, problem, wants_html
from jobgroup.errors import JobGroupError, NotFound
from jobgroup.state.store import Store

log = logging.getLogger("jobgroup.dashboard")

KEEPALIVE_S = 15.0
LOG_TAIL_DEFAULT = 10_000  # lines of each node a log reply or stream starts with
LOG_REPLY_MAX = 4 << 20  # bytes of log text, as JSON, in one /logs reply (the oldest go first)
LOG_WINDOW = 8 << 20  # characters of a stream's first lines held to merge them in time order
LOG_BATCH = 256 << 10  # characters of log text a stream's reader hands its writer at once
LOG_QUEUE = 8  # batches waiting for a stream's writer: a slow browser pauses the reader
MAX_JOB_ID = 10**12
STATIC_DIR = Path(__file__).parent / "static"
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
HTML = "text/html; charset=utf-8"

JobId = FromPath[int]
Limit = Annotated[int | None, Parameter(ge=1, le=views.MAX_LIMIT,
                                        description="jobs per page (default 100)")]
Offset = Annotated[int, Parameter(ge=0, le=10**9, description="jobs to skip (newest first)")]
Status = Annotated[str | None, Parameter(description="all, active, ended, failed, or a status "
                                                     "(RUNNING, FAILED_SETUP, ...)")]
Search = Annotated[str | None, Parameter(description="a job id (17 or #17), or a part of a "
                                                     "job's name or reason", max_length=200)]
Rank = Annotated[int | None, Parameter(ge=0, le=10**9, description="one node of the task(s)")]
Tail = Annotated[int | None, Parameter(ge=0, le=10**9, description="start with the last N "
                                       "lines of each node (default 10,000)")]
TaskSel = Annotated[str | None, Parameter(description="a task, by index or name",
                                          max_length=200)]

ERRORS = {
    code: ResponseSpec(data_container=schemas.Problem, media_type=PROBLEM, generate_examples=False,
                       description=HTTPStatus(code).phrase)
    for code in (400, 401, 403, 404)
}


@dataclass
class SpecBody(Operation):
    """POST /jobs and /validate: the spec as YAML, or JSON with the spec, name and env."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(required=True, content={
            "application/yaml": OpenAPIMediaType(schema=Schema(
                type=OpenAPIType.STRING, description="a job group (SkyPilot YAML)")),
            "application/json": OpenAPIMediaType(schema=Schema(
                type=OpenAPIType.OBJECT, required=["spec"], properties={
                    "spec": Schema(type=OpenAPIType.STRING, description="the YAML"),
                    "name": Schema(one_of=[Schema(type=OpenAPIType.STRING),
                                           Schema(type=OpenAPIType.NULL)]),
                    "env": Schema(type=OpenAPIType.OBJECT,
                                  additional_properties=Schema(type=OpenAPIType.STRING)),
                })),
        })


# ---- replies -----------------------------------------------------------------------------------

def _not_modified(request: Request, tag: str) -> bool:
    inm = request.headers.get("if-none-match", "")
    return tag in [t.strip().removeprefix("W/") for t in inm.split(",")]


def tagged(request: Request, body: bytes, media_type: str, tag: str | None = None,
           status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """`body` with an ETag (its hash unless `tag` is given); 304 when the client has it."""
    tag = tag or '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    if _not_modified(request, tag):
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


def _job_id(job_id: int) -> int:
    if not 0 < job_id < MAX_JOB_ID:
        raise NotFound(f"no job {job_id}")
    return job_id


def _spec_problem(p: Any) -> dict:
    return {**p.to_dict(), "text": str(p)}


def prefix_of(task: str, rank: int, attempt: int) -> str:
    """`(task, rank=N)` as `jobgroup logs` prints it (`, attempt=K)` for later attempts)."""
    return f"({task}, rank={rank})" if attempt <= 1 else f"({task}, rank={rank}, attempt={attempt})"


def _line(line: Any) -> dict:
    when = logmerge.at(line)
    return {"task": line.task, "rank": line.rank, "attempt": line.attempt, "text": line.text,
            "more": line.more, "prefix": prefix_of(line.task, line.rank, line.attempt),
            "at": when, "at_iso": views.iso(when)}


# ---- the application ---------------------------------------------------------------------------

def build(server: Any) -> Any:
    """The ASGI application of `server` (a `DashboardServer`): Litestar inside `WholeBody`
    inside `Guard`."""
    home = server.home
    meter = views.UsageMeter(home)
    static = {name: (STATIC_DIR / name).read_bytes() for name in STATIC}

    def store() -> Store:
        return Store(home)

    def read(fn: Callable[[Store], Any]) -> Any:
        st = store()
        try:
            return fn(st)
        finally:
            st.close()

    # ---- API: reads ------------------------------------------------------------------------

    async def list_jobs(request: Request, status: Status = None, q: Search = None,
                        limit: Limit = None, offset: Offset = 0) -> Response[schemas.JobPage]:
        """Jobs, newest first, a page at a time: `status` filter, `q` search."""
        # (async, the store read on a thread: Litestar registers the handlers of a path that
        # has two methods twice, and wraps a sync handler's function twice)
        limit_, _ = views.check_page(limit, offset)
        jobs, total = await asyncio.to_thread(
            read, lambda st: views.jobs(st, status, q, limit_, offset))
        nxt = None
        if offset + len(jobs) < total:
            params = {k: v for k, v in (("status", status), ("q", q)) if v}
            nxt = f"{request.url.path}?" + urlencode(
                {**params, "limit": limit_, "offset": offset + limit_})
        return as_json(request, {"jobs": jobs, "total": total, "limit": limit_,
                                 "offset": offset, "next": nxt}, schemas.JobPage)

    def one_job(request: Request, job_id: JobId) -> Response[schemas.JobDetail]:
        """A job with its tasks and nodes: resources, use now, where it runs, what it waits
        for."""
        jid = _job_id(job_id)
        job = read(lambda st: views.job_detail(st, jid, meter))
        return as_json(request, job, schemas.JobDetail)

    def job_events(request: Request, job_id: JobId,
                   after: Annotated[int, Parameter(ge=0, le=10**15)] = 0
                   ) -> Response[schemas.EventList]:
        """The job's timeline, oldest first (events after the id `after`)."""
        jid = _job_id(job_id)
        evs = read(lambda st: views.events(st, jid, after=after))
        return as_json(request, {"events": evs}, schemas.EventList)

    def _selection(job_id: int, task: str | None, rank: int | None
                   ) -> tuple[int, int | None, int]:
        """(job id, task index or None, prefix width), validated against the job's own tasks
        (NotFound lists the valid ones)."""
        jid = _job_id(job_id)
        job = api.get_job(jid, home=home)
        selected = list(range(len(job.tasks))) if task is None else [api.resolve_task(job, task)]
        if rank is not None and all(rank >= job.tasks[i].num_nodes for i in selected):
            top = max(job.tasks[i].num_nodes for i in selected) - 1
            raise NotFound(f"no node {rank}: the selected task(s) have ranks 0-{top}.")
        width = max(len(prefix_of(job.tasks[i].name, r, 1))
                    for i in selected for r in range(job.tasks[i].num_nodes))
        return jid, (None if task is None else selected[0]), width

    def job_logs(request: Request, job_id: JobId, task: TaskSel = None, rank: Rank = None,
                 tail: Tail = None) -> Response[schemas.LogReply]:
        """The last `tail` lines of each selected node, merged across nodes in the order they
        were written (see `logmerge`), in at most 4 MiB of text; `truncated`: earlier lines
        were left out."""
        jid, task_idx, _ = _selection(job_id, task, rank)
        want = LOG_TAIL_DEFAULT if tail is None else tail
        lines = api.logs(jid, task_idx, rank=rank, follow=False, tail=want + 1, home=home)
        kept, truncated = logmerge.tail(lines, want, LOG_REPLY_MAX)
        merged = read(lambda st: logmerge.merge({k: list(v) for k, v in kept.items()},
                                                logmerge.clocks(st, jid)))
        body = msgspec.json.encode({"lines": [_line(ln) for ln in merged],
                                    "truncated": truncated})
        return tagged(request, body, "application/json")

    async def job_logs_stream(job_id: JobId, task: TaskSel = None, rank: Rank = None,
                              tail: Tail = None) -> Stream:
        """Server-Sent Events: `start` (the prefix width), then the last `tail` lines of each
        node merged in the order they were written, then every new line as it comes, then
        `end` once the selected tasks have ended. A comment every 15 s keeps it open."""
        jid, task_idx, width = await asyncio.to_thread(_selection, job_id, task, rank)
        if not server.streams.acquire(blocking=False):
            raise HTTPException(status_code=503, detail="too many log streams open")
        release = _once(server.streams.release)
        events = _sse(jid, task_idx, rank, width, LOG_TAIL_DEFAULT if tail is None else tail,
                      release)
        weakref.finalize(events, release)  # a stream never started (the client left) too
        return Stream(events, media_type="text/event-stream",
                      headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _sse(jid: int, task_idx: int | None, rank: int | None, width: int, want: int,
                   release: Callable[[], None]):
        """The events of a stream: a reader thread hands lines over in batches (at most
        LOG_BATCH characters, or whatever there is when it waits for more) through a queue of
        LOG_QUEUE batches: memory stays bounded whatever the size of the logs and the speed
        of the browser."""
        loop = asyncio.get_running_loop()
        q: queue.Queue[Any] = queue.Queue(maxsize=LOG_QUEUE)
        wake = asyncio.Event()
        stop = threading.Event()
        end = object()

        def woken() -> None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the server stopped: its loop is closed
                stop.set()

        reader = threading.Thread(target=_read_logs, name=f"logs-{jid}", daemon=True,
                                  args=(jid, task_idx, rank, want, q, stop, end, woken))
        try:
            yield f"event: start\ndata: {json.dumps({'width': width})}\n\n".encode()
            reader.start()
            quiet_since = time.monotonic()
            while not server.stopping.is_set():
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    wake.clear()
                    if not q.empty():
                        continue
                    try:
                        await asyncio.wait_for(wake.wait(), 1.0)
                    except TimeoutError:
                        if time.monotonic() - quiet_since >= KEEPALIVE_S:
                            quiet_since = time.monotonic()
                            yield b": keepalive\n\n"
                    continue
                quiet_since = time.monotonic()
                if item is end:
                    yield b"event: end\ndata: {}\n\n"
                    return
                yield "".join(f"data: {json.dumps(_line(ln))}\n\n" for ln in item).encode()
        finally:
            stop.set()
            release()

    def _read_logs(jid: int, task_idx: int | None, rank: int | None, want: int,
                   q: queue.Queue, stop: threading.Event, end: object,
                   woken: Callable[[], None]) -> None:
        batch: list[Any] = []
        held = 0
        window = logmerge.TailWindow(LOG_WINDOW)

        class Stopped(Exception):
            pass

        def put(item: Any) -> None:
            while not stop.is_set():
                try:
                    q.put(item, timeout=1.0)
                    woken()
                    return
                except queue.Full:
                    continue
            raise Stopped  # the browser went away: stop reading (even an idle job's files)

        def hand_over() -> None:
            nonlocal held
            if window.open:  # the tail is read: hand it on merged
                batch.extend(read(lambda st: window.close(st, jid)))
            if batch:
                put(batch.copy())
                batch.clear()
                held = 0
            elif stop.is_set():
                raise Stopped

        try:
            for line in api.logs(jid, task_idx, rank=rank, follow=True, tail=want,
                                 on_idle=hand_over, home=home):
                if window.open:
                    if window.add(line):
                        hand_over()
                    continue
                batch.append(line)
                held += len(line.text)
                if held >= LOG_BATCH or len(batch) >= 500:
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

    # ---- API: verbs ------------------------------------------------------------------------

    def _spec_request(request: Request, body: bytes) -> tuple[str, str | None, dict[str, str]]:
        """(YAML text, name, env) of a launch/validate request (the body is whole: WholeBody)."""
        ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype == "application/json":
            try:
                data = msgspec.json.decode(body or b"{}", type=schemas.LaunchBody)
            except msgspec.ValidationError as e:
                raise ValidationException(
                    f'expected {{"spec": "<YAML>", "name": ..., "env": {{...}}}}: {e}') from None
            except msgspec.DecodeError as e:
                raise ValidationException(f"the body is not valid JSON: {e}") from None
            env = api.parse_env(f"{k}={v}" for k, v in data.env.items())
            return data.spec, data.name, env
        try:
            return body.decode("utf-8"), None, {}
        except UnicodeDecodeError:
            raise ValidationException("the spec is not UTF-8 text") from None

    def _parse(text: str, name: str | None) -> Any:
        """Validate like the CLI; SpecError (-> 400 with problems) if invalid."""
        from jobgroup.spec.loader import parse

        if "\x00" in text:
            raise ValidationException("the spec contains NUL bytes")
        if not text.strip():
            raise ValidationException("the spec is empty")
        return parse(text, label="<posted>", name=name)

    def validate(request: Request, body: RawBody) -> schemas.ValidateReply:
        """Check a spec as `jobgroup validate` does; nothing is recorded."""
        from jobgroup.spec import SpecError

        text, name, _ = _spec_request(request, body)
        try:
            group, warnings = _parse(text, name)
        except SpecError as e:
            return schemas.ValidateReply(valid=False, problems=[
                msgspec.convert(_spec_problem(p), schemas.SpecProblem) for p in e.problems])
        return schemas.ValidateReply(valid=True, name=group.name,
                                     tasks=[t.name or "" for t in group.tasks],
                                     problems=[msgspec.convert(_spec_problem(w),
                                                               schemas.SpecProblem)
                                               for w in warnings])

    def launch(request: Request, body: RawBody,
               name: Annotated[str | None, Parameter(max_length=200)] = None
               ) -> Response[schemas.LaunchReply]:
        """Launch a job group (like `jobgroup launch -d`): 201 with the job and the
        warnings."""
        text, given, env = _spec_request(request, body)
        name = given or name
        _parse(text, name)  # problems labelled <posted>, before anything is recorded
        notes: list[str] = []
        # A trailing newline makes `launch` read the text as YAML, never as a file name.
        job = api.launch(text if text.endswith("\n") else text + "\n", name=name, env=env,
                         home=home, on_warning=notes.append)
        detail = read(lambda st: views.job_detail(st, job.id))
        return as_json(request, {"job": detail, "warnings": notes}, schemas.LaunchReply,
                       etag=False, status=201,
                       headers={"Location": f"{_base(request)}/jobs/{job.id}"})

    def cancel(job_id: JobId) -> schemas.CancelReply:
        """Ask for a job to be cancelled (the body, if any, is ignored)."""
        jid = _job_id(job_id)
        return schemas.CancelReply(id=jid, result=api.cancel(jid, home=home)[jid])

    def cancel_many(data: JSONBody[schemas.CancelManyBody]) -> schemas.CancelManyReply:
        """Cancel jobs by id (an unknown id cancels nothing: 404), or every active job."""
        if data.all:
            results = api.cancel_all(home=home)
        else:
            if not data.ids:
                raise ValidationException('expected {"ids": [positive integers]} or '
                                          '{"all": true}')
            results = api.cancel(data.ids, home=home)
        return schemas.CancelManyReply(results={str(k): v for k, v in results.items()})

    def openapi(request: Request) -> Response:
        body = msgspec.json.encode(request.app.openapi_schema.to_schema())
        return tagged(request, body, "application/json")

    # ---- pages -----------------------------------------------------------------------------

    def _jobs_html(request: Request, status: str | None, q: str | None, limit: int | None,
                   offset: int, render: Callable[..., str], kind: str) -> Response:
        """The jobs page or its live part, tagged by the store's fingerprint (see
        views.version): an unchanged store costs one small query, not a rendered page."""
        status = status or "all"
        views.status_filter(status)  # 400 for an unknown filter, before the 304 shortcut
        limit_, _ = views.check_page(limit, offset)
        q = q or ""
        st = store()
        try:
            key = f"{kind}:{status}:{q}:{limit_}:{offset}:{views.version(st)}"
            tag = '"v' + hashlib.blake2b(key.encode(), digest_size=12).hexdigest() + '"'
            if _not_modified(request, tag):
                return tagged(request, b"", HTML, tag)
            jobs, total = views.job_rows(st, status, q, limit_, offset)
        finally:
            st.close()
        return tagged(request, render(jobs, total, status, q, limit_, offset).encode(), HTML,
                      tag)

    def page_jobs(request: Request, status: Status = None, q: Search = None,
                  limit: Limit = None, offset: Offset = 0) -> Response:
        return _jobs_html(request, status, q, limit, offset, pages.jobs_page, "page")

    def fragment_jobs(request: Request, status: Status = None, q: Search = None,
                      limit: Limit = None, offset: Offset = 0) -> Response:
        return _jobs_html(request, status, q, limit, offset, pages.jobs_panel, "panel")

    def _group(job_id: int) -> tuple[dict, list[dict]]:
        jid = _job_id(job_id)
        return read(lambda st: (views.job_detail(st, jid, meter), views.events(st, jid)))

    def page_group(job_id: JobId) -> Response:
        job, events = _group(job_id)
        return Response(pages.group_page(job, events, time.time()), media_type=HTML,
                        headers={"Cache-Control": "no-cache"})

    def fragment_group(request: Request, job_id: JobId) -> Response:
        job, events = _group(job_id)
        return tagged(request, pages.group_live(job, events, time.time()).encode(), HTML)

    def static_file(request: Request, name: FromPath[str]) -> Response:
        if name not in STATIC:
            raise NotFound("no such file")
        return tagged(request, static[name], STATIC[name])

    def favicon() -> Response:
        return Response(b"", status_code=204, media_type="image/x-icon")

    # ---- routes ----------------------------------------------------------------------------

    def api_routes(method: Callable, path: str, fn: Callable, **kw: Any) -> list:
        """`fn` at /api/v1`path`, and at /api`path` (the first release's path, deprecated)."""
        kw = {"sync_to_thread": True, "responses": ERRORS, **kw}
        if asyncio.iscoroutinefunction(fn):
            kw.pop("sync_to_thread")
        return [method(f"/api/v1{path}", **kw)(fn),
                method(f"/api{path}", deprecated=True, **kw)(_copy(fn))]

    page = {"sync_to_thread": True, "include_in_schema": False}
    handlers = [
        *api_routes(get, "/jobs", list_jobs, tags=["jobs"]),
        *api_routes(post, "/jobs", launch, tags=["jobs"], operation_class=SpecBody,
                    status_code=201),
        *api_routes(post, "/validate", validate, tags=["jobs"], operation_class=SpecBody,
                    status_code=200),
        *api_routes(post, "/jobs/cancel", cancel_many, tags=["jobs"], status_code=200),
        *api_routes(get, "/jobs/{job_id:int}", one_job, tags=["jobs"]),
        *api_routes(get, "/jobs/{job_id:int}/events", job_events, tags=["jobs"]),
        *api_routes(get, "/jobs/{job_id:int}/logs", job_logs, tags=["logs"]),
        *api_routes(get, "/jobs/{job_id:int}/logs/stream", job_logs_stream, tags=["logs"],
                    media_type="text/event-stream"),
        *api_routes(post, "/jobs/{job_id:int}/cancel", cancel, tags=["jobs"], status_code=200),
        get("/api/v1/openapi.json", include_in_schema=False, sync_to_thread=False)(openapi),
        get("/api/openapi.json", include_in_schema=False, sync_to_thread=False)(_copy(openapi)),
        get("/", **page)(page_jobs),
        get("/fragments/jobs", **page)(fragment_jobs),
        get("/jobs/{job_id:int}", **page)(page_group),
        get("/fragments/jobs/{job_id:int}", **page)(fragment_group),
        get("/static/{name:str}", include_in_schema=False, sync_to_thread=False)(static_file),
        get("/favicon.ico", include_in_schema=False, sync_to_thread=False)(favicon),
    ]
    app = Litestar(
        handlers,
        openapi_config=OpenAPIConfig(
            title="jobgroup dashboard API", version="1",
            description=("The JSON API of `jobgroup dashboard`. Every request needs the state "
                         "directory's token (`Authorization: Bearer TOKEN`)."),
            # (Litestar's own copy, with a catch-all under it; ours: /api/v1/openapi.json)
            path="/api/v1/schema", render_plugins=[JsonRenderPlugin(path="/openapi.json")],
            use_handler_docstrings=True,
            security=[{"token": []}],
            components=Components(security_schemes={"token": SecurityScheme(
                type="http", scheme="bearer",
                description="the token of $JOBGROUP_HOME/dashboard.token")}),
        ),
        exception_handlers={Exception: _error},
        request_max_body_size=None,  # WholeBody has read (and bounded) it already
        logging_config=None,  # (Litestar's would configure the root logger of the process)
        debug=False,
    )
    return Guard(WholeBody(app, server), server)


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    """`fn`, called at most once however often this is."""
    lock, done = threading.Lock(), [False]

    def once() -> None:
        with lock:
            if done[0]:
                return
            done[0] = True
        fn()

    return once


def _copy(fn: Callable) -> Callable:
    """Another function object with `fn`'s code, signature and docstring: Litestar wraps a
    handler's function in place, so one function must not back two handlers."""
    import types

    new = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                             fn.__closure__)
    new.__kwdefaults__, new.__annotations__ = fn.__kwdefaults__, dict(fn.__annotations__)
    new.__doc__, new.__qualname__, new.__module__ = fn.__doc__, fn.__qualname__, fn.__module__
    return new


def _base(request: Request) -> str:
    return "/api/v1" if request.url.path.startswith("/api/v1/") else "/api"


def _error(request: Request, exc: Exception) -> Response:
    """Every error as `application/problem+json` (RFC 9457); on a page, 404 as HTML."""
    extra: dict[str, Any] = {}
    if isinstance(exc, NotFound):
        status, detail = 404, str(exc)
    elif isinstance(exc, JobGroupError):
        problems = getattr(exc, "problems", None)
        status, detail = 400, str(exc)
        if problems is not None:
            detail = "invalid spec"
            extra["problems"] = [_spec_problem(p) for p in problems]
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

