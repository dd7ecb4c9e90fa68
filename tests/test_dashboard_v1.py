"""The dashboard's API v1 and pages of issue 21, against a real state directory and server:
pagination and search, ISO 8601 times, RFC 9457 problems, the infra of each job (local, Slurm
job id, Kubernetes namespace), links between blocking and blocked jobs, nodes that never
started, per-node resources and use (cgroups), and log tails merged across nodes in the order
their lines were written. The merging itself is tested without a server too."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from jobgroup import api
from jobgroup.dashboard import logmerge, pages, views
from jobgroup.logfiles.follow import LogLine
from jobgroup.state.store import Store
from test_dashboard_helpers import (  # noqa: F401 (fixtures are used by name)
    dashboard, launch_yaml, request, set_job, sse_events, stop_own_controller, store_jobs)

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _jobs(home, n: int, **options) -> list[int]:
    return store_jobs(home, [f"job-{chr(97 + i)}" for i in range(n)], **options)


def test_pagination_search_and_iso_times(dashboard):
    ids = _jobs(dashboard.home, 5)
    set_job(dashboard.home, ids[1], name="needle-one", reason="waiting for 1 CPU(s)")
    page = request(dashboard, "GET", "/api/v1/jobs?limit=2").json
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 0
    assert [j["id"] for j in page["jobs"]] == ids[::-1][:2]
    assert page["next"] == "/api/v1/jobs?limit=2&offset=2"
    second = request(dashboard, "GET", page["next"]).json
    assert [j["id"] for j in second["jobs"]] == ids[::-1][2:4]
    last = request(dashboard, "GET", "/api/v1/jobs?limit=2&offset=4").json
    assert [j["id"] for j in last["jobs"]] == [ids[0]] and last["next"] is None
    # search: a part of the name or the reason (any case), or an id
    for q, want in (("NEEDLE", [ids[1]]), ("cpu(s)", [ids[1]]), (str(ids[3]), [ids[3]]),
                    (f"%23{ids[2]}", [ids[2]]), ("nothing-like-it", []), ("%25", [])):
        got = request(dashboard, "GET", f"/api/v1/jobs?q={q}").json
        assert [j["id"] for j in got["jobs"]] == want and got["total"] == len(want), q
    both = request(dashboard, "GET", "/api/v1/jobs?q=job-&status=PENDING&limit=1").json
    assert both["total"] == 4 and "q=job-" in both["next"] and "status=PENDING" in both["next"]
    # times: epoch seconds and ISO 8601 (UTC) side by side
    job = page["jobs"][0]
    assert ISO.match(job["submitted_at_iso"]) and job["started_at_iso"] is None
    assert abs(time.mktime(time.strptime(job["submitted_at_iso"][:19], "%Y-%m-%dT%H:%M:%S"))
               - time.timezone - job["submitted_at"]) < 1
    assert views.iso(0.0) == "1970-01-01T00:00:00.000Z"
    evs = request(dashboard, "GET", f"/api/v1/jobs/{ids[0]}/events").json["events"]
    assert evs and all(ISO.match(e["at_iso"]) for e in evs)
    # events: a cursor (the last id seen) and a limit
    from jobgroup.state.store import Store

    st = Store(dashboard.home)
    try:
        for i in range(4):
            st.add_event(ids[0], "note", f"n{i}")
    finally:
        st.close()
    first = request(dashboard, "GET", f"/api/v1/jobs/{ids[0]}/events?limit=2").json
    assert len(first["events"]) == 2 and first["next"].endswith(
        f"?after={first['events'][-1]['id']}&limit=2")
    seen = first["events"]
    page_ = first
    while page_["next"]:
        page_ = request(dashboard, "GET", page_["next"]).json
        seen += page_["events"]
    assert [e["message"] for e in seen][-4:] == ["n0", "n1", "n2", "n3"]
    assert len({e["id"] for e in seen}) == len(seen) == 5
    # out of range: a problem naming the parameter
    for bad in ("limit=0", "limit=1001", "offset=-1", "limit=x"):
        r = request(dashboard, "GET", f"/api/v1/jobs?{bad}")
        assert r.status == 400 and r.headers["Content-Type"] == "application/problem+json", bad
        assert bad.split("=")[0] in r.json["detail"], r.json
    # the jobs page: a page at a time, with links to the others, and the search box
    html = request(dashboard, "GET", "/?limit=2").text
    assert html.count("<tr data-id=") == 2 and "1–2 of 5 job(s)" in html
    assert 'id="page-next" href="/?limit=2&amp;offset=2"' in html or \
        'id="page-next" href="/?limit=2&offset=2"' in html
    found = request(dashboard, "GET", "/?q=needle").text
    assert found.count("<tr data-id=") == 1 and 'value="needle"' in found


def test_errors_are_problem_details(dashboard):
    for method, path, status in (("GET", "/api/v1/jobs/999", 404), ("GET", "/api/v1/nope", 404),
                                 ("DELETE", "/api/v1/jobs", 405),
                                 ("GET", "/api/v1/jobs?status=bogus", 400),
                                 ("POST", "/api/v1/jobs/cancel", 400)):
        r = request(dashboard, method, path, "{}" if method == "POST" else None)
        assert r.status == status, (path, r.status, r.body)
        assert r.headers["Content-Type"] == "application/problem+json"
        body = r.json
        assert body["status"] == status and body["type"] == "about:blank" and body["title"]
        assert body["detail"] and body["instance"] == path.split("?")[0]
        assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
    unauthorized = request(dashboard, "GET", "/api/v1/jobs", token=False)
    assert unauthorized.status == 401 and unauthorized.json["title"] == "Unauthorized"
    spec = request(dashboard, "POST", "/api/v1/jobs", "run: echo\nnum_nodes: -1\n")
    assert spec.status == 400 and spec.json["detail"] == "invalid spec"
    assert spec.json["problems"][0]["path"] == "num_nodes"


def test_infra_of_each_job(dashboard):
    local, = _jobs(dashboard.home, 1)
    slurm, = _jobs(dashboard.home, 1, infra="slurm", slurm_job_id="4242")
    queued, = _jobs(dashboard.home, 1, infra="slurm")
    k8s, = _jobs(dashboard.home, 1, infra="kubernetes", k8s_namespace="ml-team")
    got = {j["id"]: j["infra"] for j in request(dashboard, "GET", "/api/v1/jobs").json["jobs"]}
    assert got == {local: "local", slurm: "slurm:4242", queued: "slurm", k8s: "k8s:ml-team"}
    assert request(dashboard, "GET", f"/api/v1/jobs/{slurm}").json["infra"] == "slurm:4242"
    html = request(dashboard, "GET", "/").text
    assert '<td class="infra">slurm:4242</td>' in html and '<td class="infra">k8s:ml-team</td>' \
        in html
    assert 'id="job-infra">k8s:ml-team<' in request(dashboard, "GET", f"/jobs/{k8s}").text


def test_blocking_and_blocked_jobs_link_each_other(dashboard):
    holder, other, waiter = _jobs(dashboard.home, 3)
    set_job(dashboard.home, holder, status="RUNNING")
    set_job(dashboard.home, other, status="RUNNING")
    set_job(dashboard.home, waiter, reason=f"waiting for 4 CPU(s): 1 free, 3 held by jobs "
                                        f"{holder}, {other}")
    detail = request(dashboard, "GET", f"/api/v1/jobs/{waiter}").json
    assert detail["blocked_by"] == [holder, other] and detail["blocking"] == []
    assert request(dashboard, "GET", f"/api/v1/jobs/{holder}").json["blocking"] == [waiter]
    page = request(dashboard, "GET", f"/jobs/{waiter}").text
    assert f'<a class="job-ref" href="/jobs/{holder}">{holder}</a>' in page  # in the reason
    assert f'id="blocked-by">Waits for resources held by <a class="job-ref" href="/jobs/' \
           f'{holder}">job {holder}</a>' in page
    assert f'href="/jobs/{waiter}">job {waiter}</a>' in request(dashboard, "GET",
                                                                f"/jobs/{holder}").text
    rows = request(dashboard, "GET", "/").text
    assert f'held by jobs <a class="job-ref" href="/jobs/{holder}">{holder}</a>, ' in rows
    assert views.waits_on("waiting for 1 GPU(s) H100: 0 free but 1 kept for job 4 (first in "
                          "the queue), 2 held by jobs 1, 2") == [1, 2, 4]
    assert pages.linked("<b> job 3") == '&lt;b&gt; job <a class="job-ref" href="/jobs/3">3</a>'


def test_nodes_that_never_started(dashboard):
    job, = _jobs(dashboard.home, 1)
    set_job(dashboard.home, job, status="FAILED_NO_RESOURCE",
         reason="needs 64 CPU(s); this machine has 2", ended_at=time.time())
    node = request(dashboard, "GET", f"/api/v1/jobs/{job}").json["tasks"][0]["nodes"][0]
    assert node["phase"] == "waiting" and node["state"] == "never started"
    assert "p-never-started" in request(dashboard, "GET", f"/jobs/{job}").text
    pending, = _jobs(dashboard.home, 1)
    node = request(dashboard, "GET", f"/api/v1/jobs/{pending}").json["tasks"][0]["nodes"][0]
    assert node["state"] == "waiting"


def test_resources_requested_reserved_and_used(dashboard):
    job = launch_yaml(dashboard, """
        name: busy
        resources: {cpus: 1, memory: 1}
        run: |
          python3 -c "
          import time
          x = bytearray(64 << 20)
          t = time.time()
          while time.time() - t < 30: pass
          "
        """)["id"]
    detail = None
    deadline = time.time() + 30
    while time.time() < deadline:
        detail = request(dashboard, "GET", f"/api/v1/jobs/{job}").json
        node = detail["tasks"][0]["nodes"][0]
        use = node["usage"]
        if node["phase"] == "run" and use and use["cpu_cores"] is not None and \
                (use["memory_bytes"] or 0) > 32 << 20:  # (its 64 MiB allocated)
            break
        time.sleep(0.5)
    node = detail["tasks"][0]["nodes"][0]
    res = node["resources"]
    assert res["cpus"] == 1 and res["memory_gb"] == 1 and not res["best_effort"]
    assert res["reserved"] is True  # admitted on this machine: its placement
    if os.geteuid() != 0:
        pytest.skip("use comes from cgroups, which only root may create here")
    use = node["usage"]  # the controller's `top` (Backend.usage)
    assert use is not None and use["processes"] >= 1, node
    assert use["memory_bytes"] > 32 << 20  # the 64 MiB it holds (resident)
    assert use["cpu_seconds"] > 0 and 0.2 < use["cpu_cores"] <= 1.3  # busy, capped at 1 CPU
    html = request(dashboard, "GET", f"/fragments/jobs/{job}").text
    assert "1 CPU · 1 GB" in html and re.search(r"CPU \d\.\d\d · \d+\.\d MiB", html), html
    api.cancel(job, home=dashboard.home)


def test_best_effort_and_unplaced_requests_read_from_the_spec(dashboard):
    st = Store(dashboard.home)
    try:
        job = st.create_job(name="asks", execution="parallel", base_dir="/", options={},
                            spec="name: asks\nresources: {cpus: 2, memory: 4, "
                                 "accelerators: 'H100:1'}\nrun: x\n", tasks=[("asks", 1, True)])
        free = st.create_job(name="free", execution="parallel", base_dir="/", options={},
                             spec="name: free\nrun: x\n", tasks=[("free", 1, True)])
    finally:
        st.close()
    asks = request(dashboard, "GET", f"/api/v1/jobs/{job}").json["tasks"][0]["nodes"][0]
    assert asks["resources"] == {"cpus": 2.0, "memory_gb": 4.0, "gpus": 1, "gpu_type": "H100",
                                 "gpu_indices": [], "best_effort": False, "reserved": False}
    assert asks["usage"] is None
    assert pages.resources_text(asks["resources"]) == "2 CPU · 4 GB · 1× H100"
    fr = request(dashboard, "GET", f"/api/v1/jobs/{free}").json["tasks"][0]["nodes"][0]
    assert fr["resources"]["best_effort"] and pages.resources_text(fr["resources"]) == \
        "best-effort"


INTERLEAVED = """
    name: chorus
    execution: parallel
    ---
    name: a
    run: |
      echo a1; sleep 1.2; echo a2; sleep 1.2; echo a3
    ---
    name: b
    run: |
      sleep 0.6; echo b1; sleep 1.2; echo b2; sleep 1.2; echo b3
    """


def test_log_tail_merges_every_task_in_time_order(dashboard):
    job = launch_yaml(dashboard, INTERLEAVED)["id"]
    api.wait(job, timeout=60, home=dashboard.home)
    want = ["a1", "b1", "a2", "b2", "a3", "b3"]
    lines = request(dashboard, "GET", f"/api/v1/jobs/{job}/logs").json["lines"]
    assert [ln["text"] for ln in lines] == want
    tail = request(dashboard, "GET", f"/api/v1/jobs/{job}/logs?tail=2").json
    assert [ln["text"] for ln in tail["lines"]] == ["a2", "b2", "a3", "b3"] and tail["truncated"]
    raw = request(dashboard, "GET", f"/api/v1/jobs/{job}/logs/stream?tail=2").text
    got = [json.loads(d)["text"] for n, d in sse_events(raw) if n == "message"]
    assert got == ["a2", "b2", "a3", "b3"]


def _line(task: str, text: str, at: float | None = None, more: bool = False,
          rank: int = 0) -> LogLine:
    line = LogLine(task, rank, text, 1, more)
    if at is not None and hasattr(line, "at"):
        object.__setattr__(line, "at", at)
    return line


def test_merge_estimates_times_from_the_files():
    """Without times from the reader: the last byte at the file's mtime, earlier ones at the
    node's average rate since it started; a node's own order and a long line's pieces kept."""
    a = [_line("a", "x" * 9), _line("a", "y" * 9)]  # 20 bytes over 0..10 s: at 5, 10
    b = [_line("b", "p" * 4, more=True), _line("b", "q" * 5), _line("b", "r" * 9)]
    # b: 20 bytes over 2..12 s: the long line (p+q) at 7, r at 12
    clock = {("a", 0, 1): (0.0, 10.0, 20), ("b", 0, 1): (2.0, 12.0, 20)}
    merged = logmerge.merge({("a", 0, 1): a, ("b", 0, 1): b}, clock)
    assert [ln.text[0] for ln in merged] == ["x", "p", "q", "y", "r"]
    # a file never stat'ed keeps its place (time 0: first), its order unchanged
    merged = logmerge.merge({("a", 0, 1): a, ("b", 0, 1): b}, {("a", 0, 1): clock[("a", 0, 1)]})
    assert [ln.text[0] for ln in merged] == ["p", "q", "r", "x", "y"]


def test_merge_prefers_the_readers_times():
    if "at" not in LogLine.__dataclass_fields__:
        pytest.skip("the log reader gives no line times in this tree")
    a = [_line("a", "a1", 1.0), _line("a", "a2", 5.0)]
    b = [_line("b", "b1", 2.0), _line("b", "b2", 3.0)]
    merged = logmerge.merge({("a", 0, 1): a, ("b", 0, 1): b}, {})
    assert [ln.text for ln in merged] == ["a1", "b1", "b2", "a2"]


def test_tail_window_and_byte_cap():
    lines = [_line("a", f"a{i}") for i in range(1, 5)] + [_line("b", f"b{i}") for i in range(3)]
    kept, truncated = logmerge.tail(iter(lines), 3, 1 << 20)  # read with a tail of 4
    assert {k: [ln.text for ln in v] for k, v in kept.items()} == {
        ("a", 0, 1): ["a2", "a3", "a4"], ("b", 0, 1): ["b0", "b1", "b2"]}
    assert truncated
    kept, truncated = logmerge.tail(iter(lines), 10, 8)  # 8 bytes of JSON text: the newest
    assert sum(len(v) for v in kept.values()) <= 4 and truncated
    w = logmerge.TailWindow(budget=6)
    assert not w.add(_line("a", "xyz")) and w.add(_line("b", "uvw"))


def test_log_streams_are_bounded_and_their_slots_come_back(dashboard, monkeypatch):
    """At most MAX_STREAMS streams at once (503 beyond); a stream that ends, or whose client
    leaves, gives its slot back."""
    import http.client
    import threading

    job = launch_yaml(dashboard, "name: quiet\nrun: sleep 60\n")["id"]
    dashboard.streams = threading.BoundedSemaphore(2)
    conns = []
    for _ in range(2):
        c = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=30)
        c.request("GET", f"/api/v1/jobs/{job}/logs/stream",
                  headers={"Authorization": f"Bearer {dashboard.token}"})
        assert c.getresponse().status == 200
        conns.append(c)
    third = request(dashboard, "GET", f"/api/v1/jobs/{job}/logs/stream")
    assert third.status == 503 and third.json["detail"] == "too many log streams open"
    for c in conns:
        c.close()  # the clients leave: their slots come back
    deadline = time.time() + 10
    while time.time() < deadline:
        c = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=30)
        c.request("GET", f"/api/v1/jobs/{job}/logs/stream",
                  headers={"Authorization": f"Bearer {dashboard.token}"})
        status = c.getresponse().status
        c.close()
        if status == 200:
            break
        time.sleep(0.2)
    assert status == 200
    api.cancel(job, home=dashboard.home)


def test_head_answers_like_get_without_a_body(dashboard):
    _jobs(dashboard.home, 2)
    for path in ("/api/v1/jobs", "/", "/static/app.js"):
        got, head = request(dashboard, "GET", path), request(dashboard, "HEAD", path)
        assert head.status == 200 and head.body == b"", path
        assert head.headers["Content-Length"] == str(len(got.body))
        assert head.headers["Content-Type"] == got.headers["Content-Type"]
        assert got.headers["Content-Type"].count("charset") <= 1
        assert head.headers["Content-Security-Policy"] == got.headers["Content-Security-Policy"]
    assert request(dashboard, "HEAD", "/api/v1/jobs/1/logs/stream").status == 405
