"""The JSON API's handlers (routed under /api/v1 and the first release's /api by `app`). Each
reads the dashboard from `state.server` (a `DashboardServer`) and `state.meter` (its
`views.UsageMeter`); their signatures and return types are the OpenAPI description."""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Annotated, Any, Callable
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import FromPath, JSONBody, Parameter, RawBody
from litestar.response import Stream

from jobgroup import api
from jobgroup.dashboard import logmerge, logstream, schemas, views
from jobgroup.dashboard.replies import (as_json, job_id as checked_id, log_line, prefix_of,
                                        read, spec_problem, tagged)
from jobgroup.errors import NotFound

LOG_TAIL_DEFAULT = 10_000  # lines of each node a log reply or stream starts with
LOG_REPLY_MAX = 4 << 20  # bytes of log text, as JSON, in one /logs reply (the oldest go first)

JobId = FromPath[int]
Limit = Annotated[int | None, Parameter(ge=1, le=views.MAX_LIMIT,
                                        description="jobs per page (default 100)")]
Offset = Annotated[int, Parameter(ge=0, le=10**9, description="jobs to skip (newest first)")]
StatusFilter = Annotated[str | None, Parameter(
    description="all, active, ended, failed, or a status (RUNNING, FAILED_SETUP, ...)")]
Search = Annotated[str | None, Parameter(
    description="a job id (17 or #17), or a part of a job's name or reason", max_length=200)]
Rank = Annotated[int | None, Parameter(ge=0, le=10**9, description="one node of the task(s)")]
Tail = Annotated[int | None, Parameter(ge=0, le=10**9, description="start with the last N "
                                       "lines of each node (default 10,000)")]
TaskSel = Annotated[str | None, Parameter(description="a task, by index or name",
                                          max_length=200)]


# ---- reads -------------------------------------------------------------------------------------

async def list_jobs(request: Request, state: State, status: StatusFilter = None,
                    q: Search = None, limit: Limit = None,
                    offset: Offset = 0) -> Response[schemas.JobPage]:
    """Jobs, newest first, a page at a time: `status` filter, `q` search."""
    # (async, the store read on a thread: Litestar registers the handlers of a path with two
    # methods twice, and would wrap a sync handler's function twice)
    limit_, _ = views.check_page(limit, offset)
    jobs, total = await asyncio.to_thread(
        read, state.server.home, lambda st: views.jobs(st, status, q, limit_, offset))
    nxt = None
    if offset + len(jobs) < total:
        params = {k: v for k, v in (("status", status), ("q", q)) if v}
        nxt = f"{request.url.path}?" + urlencode(
            {**params, "limit": limit_, "offset": offset + limit_})
    return as_json(request, {"jobs": jobs, "total": total, "limit": limit_, "offset": offset,
                             "next": nxt}, schemas.JobPage)


def one_job(request: Request, state: State, job_id: JobId) -> Response[schemas.JobDetail]:
    """A job with its tasks and nodes: resources, use now, where it runs, what it waits for."""
    jid = checked_id(job_id)
    job = read(state.server.home, lambda st: views.job_detail(st, jid, state.meter))
    return as_json(request, job, schemas.JobDetail)


def job_events(request: Request, state: State, job_id: JobId,
               after: Annotated[int, Parameter(ge=0, le=10**15, description="an event id: "
                                               "only later events (the cursor)")] = 0,
               limit: Annotated[int, Parameter(ge=1, le=10_000)] = 1000
               ) -> Response[schemas.EventList]:
    """The job's timeline, oldest first: at most `limit` events after the id `after`; `next`:
    the URL of the following ones."""
    jid = checked_id(job_id)
    evs = read(state.server.home, lambda st: views.events(st, jid, after=after))
    nxt = None
    if len(evs) > limit:
        evs = evs[:limit]
        nxt = f"{request.url.path}?" + urlencode({"after": evs[-1]["id"], "limit": limit})
    return as_json(request, {"events": evs, "next": nxt}, schemas.EventList)


def _selection(home: Any, job_id: int, task: str | None, rank: int | None
               ) -> tuple[int, int | None, int]:
    """(job id, task index or None, prefix width), validated against the job's own tasks
    (NotFound lists the valid ones)."""
    jid = checked_id(job_id)
    job = api.get_job(jid, home=home)
    selected = list(range(len(job.tasks))) if task is None else [api.resolve_task(job, task)]
    if rank is not None and all(rank >= job.tasks[i].num_nodes for i in selected):
        top = max(job.tasks[i].num_nodes for i in selected) - 1
        raise NotFound(f"no node {rank}: the selected task(s) have ranks 0-{top}.")
    width = max(len(prefix_of(job.tasks[i].name, r, 1))
                for i in selected for r in range(job.tasks[i].num_nodes))
    return jid, (None if task is None else selected[0]), width


def job_logs(request: Request, state: State, job_id: JobId, task: TaskSel = None,
             rank: Rank = None, tail: Tail = None) -> Response[schemas.LogReply]:
    """The last `tail` lines of each selected node, merged across nodes in the order they were
    written (see `logmerge`), in at most 4 MiB of text; `truncated`: earlier lines were left
    out."""
    home = state.server.home
    jid, task_idx, _ = _selection(home, job_id, task, rank)
    want = LOG_TAIL_DEFAULT if tail is None else tail
    lines = api.logs(jid, task_idx, rank=rank, follow=False, tail=want + 1, home=home)
    kept, truncated = logmerge.tail(lines, want, LOG_REPLY_MAX)
    merged = read(home, lambda st: logmerge.merge({k: list(v) for k, v in kept.items()},
                                                  logmerge.clocks(st, jid)))
    body = msgspec.json.encode({"lines": [log_line(ln) for ln in merged],
                                "truncated": truncated})
    return tagged(request, body, "application/json")


async def job_logs_stream(state: State, job_id: JobId, task: TaskSel = None,
                          rank: Rank = None, tail: Tail = None) -> Stream:
    """Server-Sent Events: `start` (the prefix width), then the last `tail` lines of each node
    merged in the order they were written, then every new line as it comes, then `end` once
    the selected tasks have ended. A comment every 15 s keeps it open."""
    server = state.server
    jid, task_idx, width = await asyncio.to_thread(_selection, server.home, job_id, task, rank)
    if not server.streams.acquire(blocking=False):
        raise HTTPException(status_code=503, detail="too many log streams open")
    release = _once(server.streams.release)
    events = logstream.events(server.home, jid, task_idx, rank, width,
                              LOG_TAIL_DEFAULT if tail is None else tail, server.stopping,
                              release)
    weakref.finalize(events, release)  # a stream never started (the client left) too
    return Stream(events, media_type="text/event-stream",
                  headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


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


# ---- verbs -------------------------------------------------------------------------------------

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

    def problems(ps: list) -> list[schemas.SpecProblem]:
        return [msgspec.convert(spec_problem(p), schemas.SpecProblem) for p in ps]

    text, name, _ = _spec_request(request, body)
    try:
        group, warnings = _parse(text, name)
    except SpecError as e:
        return schemas.ValidateReply(valid=False, problems=problems(e.problems))
    return schemas.ValidateReply(valid=True, name=group.name,
                                 tasks=[t.name or "" for t in group.tasks],
                                 problems=problems(warnings))


def launch(request: Request, state: State, body: RawBody,
           name: Annotated[str | None, Parameter(max_length=200)] = None
           ) -> Response[schemas.LaunchReply]:
    """Launch a job group (like `jobgroup launch -d`): 201 with the job and the warnings."""
    home = state.server.home
    text, given, env = _spec_request(request, body)
    name = given or name
    _parse(text, name)  # problems labelled <posted>, before anything is recorded
    notes: list[str] = []
    # A trailing newline makes `launch` read the text as YAML, never as a file name.
    job = api.launch(text if text.endswith("\n") else text + "\n", name=name, env=env,
                     home=home, on_warning=notes.append)
    detail = read(home, lambda st: views.job_detail(st, job.id))
    base = "/api/v1" if request.url.path.startswith("/api/v1/") else "/api"
    return as_json(request, {"job": detail, "warnings": notes}, schemas.LaunchReply,
                   etag=False, status=201, headers={"Location": f"{base}/jobs/{job.id}"})


def cancel(state: State, job_id: JobId) -> schemas.CancelReply:
    """Ask for a job to be cancelled (the body, if any, is ignored)."""
    jid = checked_id(job_id)
    return schemas.CancelReply(id=jid, result=api.cancel(jid, home=state.server.home)[jid])


def cancel_many(state: State, data: JSONBody[schemas.CancelManyBody]
                ) -> schemas.CancelManyReply:
    """Cancel jobs by id (an unknown id cancels nothing: 404), or every active job."""
    home = state.server.home
    if data.all:
        results = api.cancel_all(home=home)
    else:
        if not data.ids:
            raise ValidationException('expected {"ids": [positive integers]} or {"all": true}')
        results = api.cancel(data.ids, home=home)
    return schemas.CancelManyReply(results={str(k): v for k, v in results.items()})


def openapi(request: Request) -> Response:
    """The OpenAPI description (served at /api/v1/openapi.json and /api/openapi.json)."""
    body = msgspec.json.encode(request.app.openapi_schema.to_schema())
    return tagged(request, body, "application/json")
