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
import types
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable

from litestar import Litestar, get, post
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import (Components, OpenAPIMediaType, OpenAPIType, Operation,
                                   RequestBody, Schema, SecurityScheme)

from jobgroup.dashboard import routes_api as a, routes_pages as p, schemas, views
from jobgroup.dashboard.middleware import PROBLEM, Guard, WholeBody
from jobgroup.dashboard.replies import error

ERRORS = {
    code: ResponseSpec(data_container=schemas.Problem, media_type=PROBLEM,
                       generate_examples=False, description=HTTPStatus(code).phrase)
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


def _copy(fn: Callable) -> Callable:
    """Another function object with `fn`'s code, signature and docstring: Litestar wraps a
    handler's function in place, so one function must not back two handlers."""
    new = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                             fn.__closure__)
    new.__kwdefaults__, new.__annotations__ = fn.__kwdefaults__, dict(fn.__annotations__)
    new.__doc__, new.__qualname__, new.__module__ = fn.__doc__, fn.__qualname__, fn.__module__
    return new


def _api(method: Callable, path: str, fn: Callable, **kw: Any) -> list:
    """`fn` at /api/v1`path`, and at /api`path` (the first release's path, deprecated)."""
    kw = {"responses": ERRORS, **kw}
    if not asyncio.iscoroutinefunction(fn):
        kw["sync_to_thread"] = True  # (the store and the log files block)
    return [method(f"/api/v1{path}", **kw)(fn),
            method(f"/api{path}", deprecated=True, **kw)(_copy(fn))]


def _routes() -> list:
    page = {"sync_to_thread": True, "include_in_schema": False}
    bare = {"sync_to_thread": False, "include_in_schema": False}
    return [
        *_api(get, "/jobs", a.list_jobs, tags=["jobs"]),
        *_api(post, "/jobs", a.launch, tags=["jobs"], operation_class=SpecBody,
              status_code=201),
        *_api(post, "/validate", a.validate, tags=["jobs"], operation_class=SpecBody,
              status_code=200),
        *_api(post, "/jobs/cancel", a.cancel_many, tags=["jobs"], status_code=200),
        *_api(get, "/jobs/{job_id:int}", a.one_job, tags=["jobs"]),
        *_api(get, "/jobs/{job_id:int}/events", a.job_events, tags=["jobs"]),
        *_api(get, "/jobs/{job_id:int}/logs", a.job_logs, tags=["logs"]),
        *_api(get, "/jobs/{job_id:int}/logs/stream", a.job_logs_stream, tags=["logs"],
              media_type="text/event-stream"),
        *_api(post, "/jobs/{job_id:int}/cancel", a.cancel, tags=["jobs"], status_code=200),
        get("/api/v1/openapi.json", **bare)(a.openapi),
        get("/api/openapi.json", **bare)(_copy(a.openapi)),
        get("/", **page)(p.page_jobs),
        get("/fragments/jobs", **page)(p.fragment_jobs),
        get("/jobs/{job_id:int}", **page)(p.page_group),
        get("/fragments/jobs/{job_id:int}", **page)(p.fragment_group),
        get("/static/{name:str}", **bare)(p.static_file),
        get("/favicon.ico", **bare)(p.favicon),
    ]


def build(server: Any) -> Any:
    """The ASGI application of `server` (a `DashboardServer`): Litestar inside `WholeBody`
    inside `Guard`. Handlers find the server in `state.server`."""
    state = State({
        "server": server, "meter": views.UsageMeter(server.home),
        "static": {name: (p.STATIC_DIR / name).read_bytes() for name in p.STATIC},
    })
    app = Litestar(
        _routes(),
        state=state,
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
        exception_handlers={Exception: error},
        request_max_body_size=None,  # WholeBody has read (and bounded) it already
        logging_config=None,  # (Litestar's would configure the root logger of the process)
        debug=False,
    )
    return Guard(WholeBody(app, server), server)
