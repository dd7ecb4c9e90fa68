"""The dashboard's HTTP API and pages against a real state directory, real groups and a real
server on a socket: every endpoint, with good and bad input (unknown jobs, path traversal,
oversized or invalid YAML, cross-site requests, the token on every address), under /api/v1 and
under the first release's paths (/api/..., aliases for one release)."""

from __future__ import annotations

import http.client
import json
import os
import re
import stat
import textwrap
import pytest

from jobgroup import api
from jobgroup.dashboard.server import MAX_BODY, make_server, serve_in_thread
from test_dashboard_helpers import (  # noqa: F401 (fixtures are used by name)
    dashboard, launch_yaml, request, sse_events, stop_own_controller)

GROUP = """
    name: pair
    execution: parallel
    ---
    name: server
    setup: echo "server setting up"
    run: |
      echo "serving on $SKYPILOT_NODE_IPS"
      sleep 0.5
      echo "server done"
    ---
    name: workers
    num_nodes: 2
    run: |
      echo "worker $SKYPILOT_NODE_RANK says $GREETING"
    """

SLEEPER = """
    name: sleeper
    run: echo started; sleep 300
    """


EMPTY = {"jobs": [], "total": 0, "limit": 100, "offset": 0, "next": None}


def _finished(server, job_id: int, timeout: float = 60) -> dict:
    api.wait(job_id, timeout=timeout, home=server.home)
    return request(server, "GET", f"/api/v1/jobs/{job_id}").json


def _problem(reply) -> str:
    """The `detail` of an RFC 9457 problem reply (asserting its media type and fields)."""
    assert reply.headers["Content-Type"].startswith("application/problem+json"), reply.headers
    body = reply.json
    assert body["status"] == reply.status and body["title"] and body["type"] == "about:blank"
    return body["detail"]


def test_empty_store(dashboard):
    assert request(dashboard, "GET", "/api/v1/jobs").json == EMPTY
    assert request(dashboard, "GET", "/api/jobs").json == EMPTY  # the first release's path
    r = request(dashboard, "GET", "/")
    assert r.status == 200 and "No jobs." in r.text
    assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert request(dashboard, "GET", "/static/app.js").headers["Content-Type"].startswith(
        "text/javascript")
    assert request(dashboard, "GET", "/favicon.ico").status == 204


def test_launch_then_read_everything(dashboard):
    r = request(dashboard, "POST", "/api/jobs", json.dumps(
        {"spec": textwrap.dedent(GROUP), "name": "pair-api", "env": {"GREETING": "hello"}}),
        {"Content-Type": "application/json"})
    assert r.status == 201, r.body
    job = r.json["job"]
    jid = job["id"]
    assert r.headers["Location"] == f"/api/jobs/{jid}"  # (posted to the first release's path)
    assert job["name"] == "pair-api" and job["num_tasks"] == 2 and job["num_nodes"] == 3
    assert job["status"] in ("PENDING", "STARTING", "RUNNING")

    final = _finished(dashboard, jid)
    assert final["status"] == "SUCCEEDED", final
    nodes = [n for t in final["tasks"] for n in t["nodes"]]
    assert [(n["task"], n["rank"]) for n in nodes] == [("server", 0), ("workers", 0),
                                                      ("workers", 1)]
    assert all(n["phase"] == "ended" and n["exit"] == "exit code 0" for n in nodes)
    assert [n["hostname"] for n in nodes] == ["server-0", "workers-0", "workers-1"]
    assert all(n["address"] for n in nodes) and len({n["address"] for n in nodes}) == 3
    assert final["restarts"] == 0 and final["duration"] > 0

    # the queue, with status filters, and ETags
    r = request(dashboard, "GET", "/api/jobs")
    assert [j["id"] for j in r.json["jobs"]] == [jid]
    again = request(dashboard, "GET", "/api/jobs", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status == 304 and again.body == b""
    assert request(dashboard, "GET", "/api/jobs?status=succeeded").json["jobs"][0]["id"] == jid
    assert request(dashboard, "GET", "/api/jobs?status=ended").json["jobs"][0]["id"] == jid
    assert request(dashboard, "GET", "/api/v1/jobs?status=RUNNING").json["jobs"] == []
    assert request(dashboard, "GET", "/api/jobs?status=active").json["jobs"] == []
    bad = request(dashboard, "GET", "/api/jobs?status=bogus")
    assert bad.status == 400 and "unknown status filter" in _problem(bad)

    # events, like `jobgroup events --json`
    evs = request(dashboard, "GET", f"/api/jobs/{jid}/events").json["events"]
    kinds = [e["kind"] for e in evs]
    assert kinds[0] == "submitted" and "run-started" in kinds
    assert kinds[-1] == "job RUNNING -> SUCCEEDED"
    assert {(e["task"], e["rank"]) for e in evs if e["kind"] == "run-ended"} == {
        ("server", 0), ("workers", 0), ("workers", 1)}
    later = request(dashboard, "GET", f"/api/jobs/{jid}/events?after={evs[-2]['id']}").json
    assert [e["kind"] for e in later["events"]] == [kinds[-1]]

    # logs: every task, one task by name or index, one node
    lines = request(dashboard, "GET", f"/api/jobs/{jid}/logs").json["lines"]
    texts = {(ln["prefix"], ln["text"]) for ln in lines}
    assert ("(server, rank=0)", "server setting up") in texts
    assert ("(workers, rank=1)", "worker 1 says hello") in texts
    by_name = request(dashboard, "GET", f"/api/jobs/{jid}/logs?task=workers").json["lines"]
    by_index = request(dashboard, "GET", f"/api/jobs/{jid}/logs?task=1").json["lines"]
    assert by_name == by_index and {ln["task"] for ln in by_name} == {"workers"}
    one = request(dashboard, "GET", f"/api/jobs/{jid}/logs?task=workers&rank=1").json["lines"]
    assert [ln["text"] for ln in one] == ["worker 1 says hello"]
    tail = request(dashboard, "GET", f"/api/jobs/{jid}/logs?task=server&tail=1").json
    assert [ln["text"] for ln in tail["lines"]] == ["server done"] and tail["truncated"]

    # the stream of an ended job: everything, then `end`
    r = request(dashboard, "GET", f"/api/jobs/{jid}/logs/stream?task=server")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[0] == ("start", json.dumps({"width": len("(server, rank=0)")}))
    assert events[-1][0] == "end"
    got = [json.loads(d)["text"] for n, d in events if n == "message"]
    assert got[0] == "server setting up" and got[-1] == "server done"

    # the pages
    page = request(dashboard, "GET", f"/jobs/{jid}").text
    for needle in ("pair-api", "server-0", "workers-1", "<svg", "SUCCEEDED", "task-filter"):
        assert needle in page, needle
    frag = request(dashboard, "GET", f"/fragments/jobs/{jid}")
    assert 'data-done="1"' in frag.text
    assert request(dashboard, "GET", f"/fragments/jobs/{jid}",
                   headers={"If-None-Match": frag.headers["ETag"]}).status == 304
    rows = request(dashboard, "GET", "/fragments/jobs?status=SUCCEEDED").text
    assert f'data-id="{jid}"' in rows
    assert "No jobs." in request(dashboard, "GET", "/fragments/jobs?status=FAILED").text
    assert 'value="SUCCEEDED" selected' in request(dashboard, "GET", "/?status=SUCCEEDED").text


def test_stream_follows_a_running_job(dashboard):
    job = launch_yaml(dashboard, """
        name: ticker
        run: |
          for i in 1 2 3; do echo "tick $i"; sleep 0.3; done
        """)
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=30)
    conn.request("GET", f"/api/jobs/{job['id']}/logs/stream",
                 headers={"Authorization": f"Bearer {dashboard.token}"})
    r = conn.getresponse()
    assert r.status == 200
    raw = r.read().decode()  # returns when the server ends the stream (the job ended)
    conn.close()
    texts = [json.loads(d)["text"] for n, d in sse_events(raw) if n == "message"]
    assert texts == ["tick 1", "tick 2", "tick 3"]
    assert sse_events(raw)[-1][0] == "end"
    assert _finished(dashboard, job["id"])["status"] == "SUCCEEDED"


def test_invalid_specs_are_400_with_every_problem(dashboard, monkeypatch):
    r = request(dashboard, "POST", "/api/jobs", textwrap.dedent("""\
        name: bad
        execution: parallel
        ---
        name: a
        num_nodes: zero
        run: echo
        ---
        name: b
        runn: echo
        """), {"Content-Type": "application/yaml"})
    assert r.status == 400
    body = r.json
    assert _problem(r) == "invalid spec"
    paths = {(p["where"], p["path"]) for p in body["problems"]}
    assert ("task 'a'", "num_nodes") in paths and ("task 'b'", "runn") in paths
    assert all(p["text"].startswith("<posted>:") and p["line"] for p in body["problems"])

    syntax = request(dashboard, "POST", "/api/jobs", "name: [unclosed\n")
    assert syntax.status == 400 and "invalid YAML" in syntax.json["problems"][0]["message"]
    assert request(dashboard, "POST", "/api/jobs", "   \n").status == 400
    assert request(dashboard, "POST", "/api/jobs", b"run: \xff\xfe\n").status == 400
    assert request(dashboard, "POST", "/api/jobs", "run: echo\x00\n").status == 400
    not_json = request(dashboard, "POST", "/api/jobs", "{", {"Content-Type": "application/json"})
    assert not_json.status == 400 and "not valid JSON" in _problem(not_json)
    no_spec = request(dashboard, "POST", "/api/jobs", '{"yaml": "run: x"}',
                      {"Content-Type": "application/json"})
    assert no_spec.status == 400
    bad_env = request(dashboard, "POST", "/api/jobs", json.dumps(
        {"spec": "run: echo hi\n", "env": {"1BAD": "x"}}), {"Content-Type": "application/json"})
    assert bad_env.status == 400 and "--env" in _problem(bad_env)
    # a spec the backend refuses (like the CLI: a UsageError, not a traceback)
    infra = request(dashboard, "POST", "/api/jobs", "run: echo hi\nresources: {infra: k8s}\n")
    assert infra.status == 400 and "infra" in _problem(infra)
    # a short text is YAML, never a file name (the CLI would read a file by that name)
    tmp = dashboard.home.parent
    (tmp / "spec.yaml").write_text("run: echo from a file\n")
    monkeypatch.chdir(tmp)
    assert request(dashboard, "POST", "/api/jobs", "spec.yaml").status == 400
    assert request(dashboard, "GET", "/api/v1/jobs").json["jobs"] == []  # nothing was recorded


def test_validate_endpoint(dashboard):
    ok = request(dashboard, "POST", "/api/validate", "name: v\nrun: echo hi\n").json
    assert ok["valid"] is True and ok["tasks"] == ["v"]
    bad = request(dashboard, "POST", "/api/validate", "run: echo\nnum_nodes: -1\n").json
    assert bad["valid"] is False and bad["problems"][0]["path"] == "num_nodes"


def test_oversized_body_is_413_without_reading_it(dashboard):
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    conn.putrequest("POST", "/api/jobs")
    conn.putheader("Authorization", f"Bearer {dashboard.token}")
    conn.putheader("Content-Type", "application/yaml")
    conn.putheader("Content-Length", str(MAX_BODY + 1))
    conn.endheaders()
    conn.send(b"run: echo " + b"x" * 1000)  # the rest never comes: the server must not wait
    r = conn.getresponse()
    assert r.status == 413 and "at most" in json.loads(r.read())["detail"]
    conn.close()
    big = "run: echo hi\n" + "# padding\n" * (MAX_BODY // 10 + 1)
    assert request(dashboard, "POST", "/api/jobs", big).status == 413
    assert request(dashboard, "POST", "/api/validate", big).status == 413
    # no Content-Length: 411
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    conn.putrequest("POST", "/api/jobs")
    conn.putheader("Authorization", f"Bearer {dashboard.token}")
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()


def test_unknown_jobs_tasks_and_ranks(dashboard):
    for path in ("/api/jobs/999", "/api/jobs/999/events", "/api/jobs/999/logs",
                 "/api/jobs/999/logs/stream", "/fragments/jobs/999"):
        r = request(dashboard, "GET", path)
        assert r.status == 404 and "no job 999" in _problem(r), path
    page = request(dashboard, "GET", "/jobs/999")
    assert page.status == 404 and "text/html" in page.headers["Content-Type"]
    assert request(dashboard, "POST", "/api/jobs/999/cancel").status == 404
    assert request(dashboard, "GET", "/api/jobs/99999999999999999999").status == 404
    assert request(dashboard, "GET", "/nope").status == 404
    assert request(dashboard, "DELETE", "/api/jobs").status == 405
    assert request(dashboard, "GET", "/api/jobs/cancel").status == 405

    job = launch_yaml(dashboard, "name: one\nrun: echo one\n")
    jid = job["id"]
    r = request(dashboard, "GET", f"/api/jobs/{jid}/logs?task=nope")
    assert r.status == 404 and "Valid tasks: 0 (one)" in _problem(r)
    assert request(dashboard, "GET", f"/api/jobs/{jid}/logs?task=7").status == 404
    assert request(dashboard, "GET", f"/api/jobs/{jid}/logs?rank=3").status == 404
    for bad in ("-1", "x", "1.5", "9" * 20):
        assert request(dashboard, "GET", f"/api/jobs/{jid}/logs?rank={bad}").status == 400
    assert request(dashboard, "GET", f"/api/jobs/{jid}/events?after=x").status == 400
    _finished(dashboard, jid)


TRAVERSALS = [
    "/static/../state.db", "/static/%2e%2e/state.db", "/static/..%2fstate.db",
    "/static/app.js/../../state.db", "/static//etc/passwd", "/static/app.js%00.css",
    "/static/secret.js", "/api/jobs/..%2f..%2fstate.db/events", "/api/jobs/1/../../state.db",
    "/jobs/1/../../../etc/passwd", "//etc/passwd", "/api/jobs/1/logs/../../../../state.db",
    "/api/jobs/%31/events/..", "/%2e%2e/%2e%2e/etc/passwd",
]
TRAVERSAL_QUERIES = [
    "task=../../state.db", "task=..%2F..%2Fstate.db", "task=/etc/passwd",
    "task=one/../../../state.db", "task=0&rank=../1", "task=%00", "rank=0/../../x",
    "task=one-0.log", "task=..", "task=one%2F..%2F..%2Fcontroller.log",
]


def test_path_traversal_is_refused(dashboard, tmp_path):
    job = launch_yaml(dashboard, "name: one\nrun: echo one\n")
    jid = job["id"]
    _finished(dashboard, jid)
    secret = b"TOP-SECRET-OUTSIDE"
    (tmp_path / "secret.log").write_bytes(secret)
    outside = os.path.relpath(tmp_path / "secret.log", dashboard.home / "jobs" / str(jid) / "logs")
    queries = TRAVERSAL_QUERIES + [f"task={outside}", f"task={outside[:-4]}&rank=0"]
    replies = [(p, request(dashboard, "GET", p)) for p in TRAVERSALS]
    replies += [(q, request(dashboard, "GET", f"/api/jobs/{jid}/logs?{q}")) for q in queries]
    replies += [(q, request(dashboard, "GET", f"/api/jobs/{jid}/logs/stream?{q}"))
                for q in queries]
    for what, r in replies:
        assert r.status in (400, 404), (what, r.status, r.body[:200])
        assert b"SQLite format" not in r.body and b"root:" not in r.body, what
        assert secret not in r.body, what
        assert b"Traceback" not in r.body, what


def test_cancel(dashboard):
    a = launch_yaml(dashboard, SLEEPER)["id"]
    b = launch_yaml(dashboard, SLEEPER)["id"]
    r = request(dashboard, "POST", f"/api/jobs/{a}/cancel")
    assert r.status == 200 and r.json == {"id": a, "result": "cancelling"}
    assert _finished(dashboard, a)["status"] == "CANCELLED"
    again = request(dashboard, "POST", f"/api/jobs/{a}/cancel").json
    assert again["result"] == "already ended (CANCELLED)"
    # several at once: an unknown id changes nothing (404), like the CLI
    r = request(dashboard, "POST", "/api/jobs/cancel", json.dumps({"ids": [b, 999]}))
    assert r.status == 404
    assert api.get_job(b, home=dashboard.home).status.value in ("PENDING", "STARTING", "RUNNING")
    for body in ('{"ids": "1"}', '{"ids": []}', '{"ids": [true]}', "[]", "{"):
        assert request(dashboard, "POST", "/api/jobs/cancel", body).status == 400, body
    r = request(dashboard, "POST", "/api/jobs/cancel", json.dumps({"all": True}))
    assert r.json == {"results": {str(b): "cancelling"}}
    assert _finished(dashboard, b)["status"] == "CANCELLED"
    evs = request(dashboard, "GET", f"/api/jobs/{b}/events").json["events"]
    assert any(e["kind"] == "cancel-requested" for e in evs)
    page = request(dashboard, "GET", f"/fragments/jobs/{b}").text
    assert "cancel requested" in page and "cancel-btn" not in page


def test_openapi_describes_every_route(dashboard):
    """The description is generated from the handlers: every API route the application
    serves is in it (under /api/v1, and the first release's paths marked deprecated), with
    its parameters and reply schemas, every $ref resolved."""
    spec = request(dashboard, "GET", "/api/v1/openapi.json").json
    assert spec["openapi"].startswith("3.1")
    assert request(dashboard, "GET", "/api/openapi.json").json == spec
    described = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    litestar_app = dashboard.app.app.app  # inside the Guard and WholeBody layers
    served = {(m, r.path_format) for r in litestar_app.routes
              for h in getattr(r, "route_handlers", ()) for m in h.http_methods
              if r.path_format.startswith("/api/") and h.include_in_schema and m != "OPTIONS"
              and not r.path_format.startswith("/api/v1/schema")}
    assert served == described and len(described) == 18
    for method, path in described:
        op = spec["paths"][path][method.lower()]
        assert op["deprecated"] == (not path.startswith("/api/v1/")), (method, path)
        assert "401" in op["responses"] and op["responses"]["401"]["content"] == {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    params = {p["name"]: p for p in spec["paths"]["/api/v1/jobs"]["get"]["parameters"]}
    assert set(params) == {"status", "q", "limit", "offset"}
    assert params["limit"]["schema"]["maximum"] == 1000
    launch = spec["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]
    assert set(launch) == {"application/yaml", "application/json"}
    refs = re.findall(r'"\$ref": "#/components/schemas/(\w+)"', json.dumps(spec))
    assert set(refs) <= set(spec["components"]["schemas"])
    node = spec["components"]["schemas"]["Node"]["properties"]
    assert {"resources", "usage", "state", "started_at_iso"} <= set(node)
    assert spec["components"]["securitySchemes"]["token"]["scheme"] == "bearer"


def test_loopback_refuses_other_hosts_and_cross_site_posts(dashboard):
    port = dashboard.port
    evil = request(dashboard, "GET", "/api/jobs", headers={"Host": f"evil.example:{port}"})
    assert evil.status == 403  # DNS rebinding: another site's name pointed at 127.0.0.1
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert request(dashboard, "GET", "/api/jobs", headers={"Host": host}).status == 200
    spec = "name: v\nrun: echo\n"
    cross = request(dashboard, "POST", "/api/validate", spec,
                    {"Origin": "http://evil.example", "Content-Type": "text/plain"})
    assert cross.status == 403
    same = request(dashboard, "POST", "/api/validate", spec,
                   {"Origin": f"http://127.0.0.1:{port}"})
    assert same.status == 200


@pytest.fixture(params=["127.0.0.1", "127.0.0.2"])
def served(jenv, request):
    """A dashboard on loopback (127.0.0.1) and one beyond it (127.0.0.2): both need the token."""
    server = make_server(jenv.home, request.param, 0)
    serve_in_thread(server)
    yield server
    server.shutdown()
    server.server_close()
    stop_own_controller(jenv)


def test_token_required_on_every_address(served, jenv):
    path = jenv.home / "dashboard.token"
    token = path.read_text().strip()
    assert served.token == token and len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert served.login_url == f"{served.url}?token={token}"

    r = request(served, "GET", "/api/jobs", token=False)
    assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    page = request(served, "GET", "/", token=False)
    assert page.status == 401 and "Token required" in page.text
    for bad in ("Bearer nope", f"Basic {token}", f"Bearer {token}x", "Bearer", ""):
        assert request(served, "GET", "/api/jobs",
                       headers={"Authorization": bad}).status == 401, bad
    assert request(served, "POST", "/api/validate", "run: x\n", token=False).status == 401
    assert request(served, "POST", "/api/jobs", "run: echo hi\n", token=False).status == 401
    assert request(served, "POST", "/api/jobs/cancel", '{"all": true}', token=False).status == 401
    assert request(served, "GET", "/static/app.js", token=False).status == 401
    assert request(served, "GET", "/api/jobs/1/logs/stream", token=False).status == 401
    ok = request(served, "GET", "/api/jobs", headers={"Authorization": f"Bearer {token}"})
    assert ok.status == 200 and ok.json == EMPTY
    assert not (jenv.home / "state.db").exists() or api.queue(home=jenv.home) == []

    # ?token= on an API path authenticates that request (curl without a cookie jar)
    assert request(served, "GET", f"/api/jobs?token={token}", token=False).json == EMPTY
    assert request(served, "GET", "/api/jobs?token=wrong", token=False).status == 401

    # ?token= on a page signs a browser in: a session cookie, and a page that moves on to the
    # URL without the token
    assert request(served, "GET", "/?token=wrong", token=False).status == 401
    r = request(served, "GET", f"/?status=all&token={token}", token=False)
    assert r.status == 200
    assert '<meta http-equiv="refresh" content="0; url=/?status=all">' in r.text
    assert token not in r.text
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(f"jobgroup_dashboard_{served.port}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    jar = cookie.split(";")[0]
    assert token not in jar  # the cookie is a session of this server, not the token
    assert request(served, "GET", "/", headers={"Cookie": jar}).status == 200
    assert request(served, "GET", "/", headers={"Cookie": jar + "x"}).status == 401
    named = f"jobgroup_dashboard_{served.port}={token}"
    assert request(served, "GET", "/", headers={"Cookie": named}).status == 401
    other_port = f"jobgroup_dashboard_{served.port + 1}={jar.split('=', 1)[1]}"
    assert request(served, "GET", "/", headers={"Cookie": other_port}).status == 401
    # the sign-in page never sends the browser to another server
    for evil in ("//evil.example/", "/\\evil.example/", "/%5Cevil.example/"):
        r = request(served, "GET", f"{evil}?token={token}", token=False)
        target = re.search(r'content="0; url=([^"]*)"', r.text).group(1)
        assert target.startswith("/") and target[1:2] not in ("/", "\\"), (evil, target)

    # the same token next time (generated once); a cookie of an earlier run no longer works
    again = make_server(jenv.home, served.bound_host, 0)
    serve_in_thread(again)
    try:
        assert again.token == token
        stale = f"jobgroup_dashboard_{again.port}={jar.split('=', 1)[1]}"
        assert request(again, "GET", "/", headers={"Cookie": stale}).status == 401
    finally:
        again.shutdown()
        again.server_close()


def test_token_file_with_loose_mode_is_tightened(jenv):
    from jobgroup.dashboard import auth

    jenv.home.mkdir(parents=True, exist_ok=True)
    path = jenv.home / "dashboard.token"
    path.write_text("t" * 40 + "\n")
    os.chmod(path, 0o644)
    assert auth.load_or_create_token(jenv.home) == "t" * 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("")
    assert len(auth.load_or_create_token(jenv.home)) >= 32
    assert not auth.is_loopback("127.0.0.2") and not auth.is_loopback("0.0.0.0")
    assert all(auth.is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]"))


def test_jobs_page_lists_every_job_with_its_facts(dashboard):
    from jobgroup.state.store import Store

    st = Store(dashboard.home)
    ids = [st.create_job(name=f"job-{i}", execution="parallel", spec="run: x\n", base_dir="/",
                         options={}, tasks=[("a", 2, True), ("b", 1, False)]) for i in range(3)]
    st.close()
    page = request(dashboard, "GET", "/").text
    for i in ids:
        assert f'href="/jobs/{i}"' in page
    assert page.count('data-status="PENDING"') == 3
    assert "3 job(s)" in page
    data = request(dashboard, "GET", "/api/jobs?status=active").json["jobs"]
    assert [(j["num_tasks"], j["num_nodes"], j["restarts"]) for j in data] == [(2, 3, 0)] * 3
