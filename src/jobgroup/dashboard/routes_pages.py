"""The pages' handlers: the jobs page, a group's page, the fragments their script polls (with
ETags, so an unchanged page costs one small query), the static files."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable

from litestar import Request, Response
from litestar.datastructures import State
from litestar.params import FromPath

from jobgroup.dashboard import pages, views
from jobgroup.dashboard.replies import HTML, job_id as checked_id, not_modified, read, tagged
from jobgroup.dashboard.routes_api import JobId, Limit, Offset, Search, StatusFilter
from jobgroup.errors import NotFound
from jobgroup.state.store import Store

STATIC_DIR = Path(__file__).parent / "static"
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}  # (+ charset: Litestar)


def _jobs_html(request: Request, state: State, status: str | None, q: str | None,
               limit: int | None, offset: int, render: Callable[..., str],
               kind: str) -> Response:
    """The jobs page or its live part, tagged by the store's fingerprint (see views.version):
    an unchanged store costs one small query, not a rendered page."""
    status = status or "all"
    views.status_filter(status)  # 400 for an unknown filter, before the 304 shortcut
    limit_, _ = views.check_page(limit, offset)
    q = q or ""
    st = Store(state.server.home)
    try:
        key = f"{kind}:{status}:{q}:{limit_}:{offset}:{views.version(st)}"
        tag = '"v' + hashlib.blake2b(key.encode(), digest_size=12).hexdigest() + '"'
        if not_modified(request, tag):
            return tagged(request, b"", HTML, tag)
        jobs, total = views.job_rows(st, status, q, limit_, offset)
    finally:
        st.close()
    return tagged(request, render(jobs, total, status, q, limit_, offset).encode(), HTML, tag)


def page_jobs(request: Request, state: State, status: StatusFilter = None, q: Search = None,
              limit: Limit = None, offset: Offset = 0) -> Response:
    return _jobs_html(request, state, status, q, limit, offset, pages.jobs_page, "page")


def fragment_jobs(request: Request, state: State, status: StatusFilter = None,
                  q: Search = None, limit: Limit = None, offset: Offset = 0) -> Response:
    return _jobs_html(request, state, status, q, limit, offset, pages.jobs_panel, "panel")


def _group(state: State, job_id: int) -> tuple[dict, list[dict]]:
    jid = checked_id(job_id)
    return read(state.server.home, lambda st: (views.job_detail(st, jid, state.meter),
                                               views.events(st, jid)))


def page_group(state: State, job_id: JobId) -> Response:
    job, events = _group(state, job_id)
    return Response(pages.group_page(job, events, time.time()), media_type=HTML,
                    headers={"Cache-Control": "no-cache"})


def fragment_group(request: Request, state: State, job_id: JobId) -> Response:
    job, events = _group(state, job_id)
    return tagged(request, pages.group_live(job, events, time.time()).encode(), HTML)


def static_file(request: Request, state: State, name: FromPath[str]) -> Response:
    if name not in STATIC:
        raise NotFound("no such file")
    return tagged(request, state.static[name], STATIC[name])


def favicon() -> Response:
    return Response(b"", status_code=204, media_type="image/x-icon")
