"""Helpers and fixtures of the dashboard tests (no tests here): a dashboard served on a thread of the test process, and raw
HTTP requests (http.client sends paths exactly as given: no normalisation of `..`)."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from typing import Any

from jobgroup.dashboard.server import DashboardServer


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def request(server: DashboardServer, method: str, path: str, body: bytes | str | None = None,
            headers: dict[str, str] | None = None, timeout: float = 30,
            token: bool = True) -> Reply:
    """One request on a fresh connection; with the server's token (`Authorization: Bearer`)
    unless `token=False` or the caller sends its own Authorization or Cookie."""
    host = server.server_address[0]
    headers = dict(headers or {})
    if token and server.token and not {"Authorization", "Cookie"} & set(headers):
        headers["Authorization"] = f"Bearer {server.token}"
    conn = http.client.HTTPConnection(host, server.port, timeout=timeout)
    try:
        data = body.encode() if isinstance(body, str) else body
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        return Reply(r.status, r.headers, r.read())
    finally:
        conn.close()


def sse_events(raw: str) -> list[tuple[str, str]]:
    """(event name, data) of each Server-Sent Event in `raw` (name 'message' when unnamed)."""
    out = []
    for block in raw.split("\n\n"):
        name, data = "message", []
        lines = [ln for ln in block.split("\n") if ln and not ln.startswith(":")]
        if not lines:
            continue
        for ln in lines:
            key, _, value = ln.partition(": ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
        out.append((name, "\n".join(data)))
    return out


# ---- fixtures (imported by name into the dashboard test modules) ------------------------------

import pytest  # noqa: E402

from jobgroup.dashboard.server import make_server, serve_in_thread  # noqa: E402


def stop_own_controller(jenv) -> None:
    """End the test's groups and stop its controller (reaped: launched through the API from this
    process, the controller is our child)."""
    from jobgroup import api

    if not (jenv.home / "state.db").exists():
        return
    for job in api.queue(home=jenv.home):
        api.cancel(job.id, home=jenv.home)
        api.wait(job.id, timeout=30, home=jenv.home)
    jenv.stop_controller()


@pytest.fixture
def dashboard(jenv):
    """A dashboard of the test's state directory on 127.0.0.1 (any free port)."""
    server = make_server(jenv.home, "127.0.0.1", 0)
    serve_in_thread(server)
    yield server
    server.shutdown()
    server.server_close()
    stop_own_controller(jenv)


def store_jobs(home, names: list[str], status: str = "PENDING", **options) -> list[int]:
    """Jobs written straight into the store (one task `t` of one node each), in `status`:
    nothing runs them (PENDING ones get cancelled by the fixture's teardown)."""
    from jobgroup.state.store import Store

    st = Store(home)
    try:
        ids = [st.create_job(name=n, execution="parallel", spec="name: t\nrun: x\n",
                             base_dir="/", options=dict(options), tasks=[("t", 1, True)])
               for n in names]
        if status != "PENDING":
            for i in ids:
                set_job(home, i, status=status, ended_at=time.time())
        return ids
    finally:
        st.close()


def set_job(home, job_id: int, **cols) -> None:
    """Write columns of a job's row (a status, a reason...) as the controller would."""
    from jobgroup.state.store import Store

    st = Store(home)
    try:
        with st.write() as c:
            c.execute(f"UPDATE jobs SET {', '.join(f'{k}=?' for k in cols)} WHERE id=?",
                      (*cols.values(), job_id))
    finally:
        st.close()


def launch_yaml(server: DashboardServer, text: str, **headers: str) -> dict:
    """POST a spec; the new job (asserts 201)."""
    import textwrap

    r = request(server, "POST", "/api/jobs", textwrap.dedent(text),
                {"Content-Type": "application/yaml", **headers})
    assert r.status == 201, (r.status, r.body)
    return r.json["job"]
