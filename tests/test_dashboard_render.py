"""The dashboard's pure parts: the SVG timeline, the HTML (escaping), readiness, and the
`jobgroup dashboard` command itself (light to import, prints the URL with its token, --no-auth
with its warning)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import pytest
from conftest import wait_for

from jobgroup.dashboard import pages, timeline, views
from jobgroup.state.status import Phase
from jobgroup.state.store import NodeRec

T0 = 1_000_000.0


def _job(done: bool = True, status: str = "FAILED", reason: str = "task 'w' node 1 failed",
         nodes_per_task: int = 2) -> dict:
    tasks = []
    for i, name in enumerate(["srv", "w"]):
        tasks.append({"index": i, "name": name, "status": "RUNNING", "reason": "",
                      "num_nodes": nodes_per_task, "primary": True, "restarts": 0,
                      "started_at": T0, "ended_at": None, "duration": 1.0,
                      "nodes": [{"rank": r} for r in range(nodes_per_task)]})
    return {"id": 7, "name": "g", "status": status, "reason": reason, "done": done,
            "submitted_at": T0, "started_at": T0 + 1, "ended_at": T0 + 30 if done else None,
            "tasks": tasks}


def _ev(at: float, kind: str, message: str = "", task: str | None = None,
        rank: int | None = None) -> dict:
    return {"id": 0, "at": T0 + at, "kind": kind, "message": message, "task": task, "rank": rank}


EVENTS = [
    _ev(0, "submitted", "2 task(s)"),
    _ev(1, "job PENDING -> STARTING", "admitted"),
    _ev(1.1, "setup-started", "pid 1", "srv", 0),
    _ev(2, "setup-ended", "exit code 0", "srv", 0),
    _ev(2.1, "run-started", "pid 2", "srv", 0),
    _ev(2.1, "job STARTING -> RUNNING"),
    _ev(4, "ready", "GET http://10.0.0.2:8000/", "srv", 0),
    _ev(5, "run-started", "pid 3", "w", 1),
    _ev(8, "run-ended", "exit code 3", "w", 1),
    _ev(8.1, "restart", "attempt 2", "w", 1),
    _ev(8.2, "run-started", "pid 4", "w", 1),
    _ev(20, "cancel-requested", "cancel requested by the user"),
    _ev(20.1, "stop", "cancelled by the user", "srv", 0),
    _ev(20.5, "run-ended", "signal 15", "srv", 0),
    _ev(29, "outcome", "FAILED: <b>boom</b>"),
    _ev(30, "job RUNNING -> FAILED", "x"),
]


def test_timeline_draws_phases_marks_and_reasons():
    svg = timeline.render(_job(), EVENTS, now=T0 + 99)
    root = ET.fromstring(svg)  # well-formed XML (inline SVG)
    assert root.tag.endswith("svg")
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert "setup: exit code 0" in titles
    assert "ready: GET http://10.0.0.2:8000/" in titles
    assert "run ended: exit code 3" in titles
    assert "restarted: attempt 2" in titles
    assert "stopped: cancelled by the user" in titles
    assert "run ended: signal 15 (stopped: cancelled by the user)" in titles
    assert "run (attempt 2): running" in titles  # w-1 is still in its second attempt
    assert "bar-run retry open" in svg
    assert "FAILED: task 'w' node 1 failed" in titles  # the end line carries the reason
    assert "cancel requested" in svg and ">FAILED</text>" in svg
    for cls in ("m-ready", "m-exit-bad", "m-restart", "m-stop", "m-exit-stopped", "bar-setup",
                "bar-run"):
        assert f'class="{cls}' in svg or f'mark {cls}"' in svg, cls
    labels = re.findall(r'class="lane-label"[^>]*>([^<]+)<', svg)
    assert labels == ["group", "srv-0", "srv-1", "w-0", "w-1"]
    # marks are drawn after (over) every bar
    assert svg.rfind("<rect class=\"bar-") < svg.find('<g class="mark')
    # the time axis spans submission to the end, in whole steps
    ticks = re.findall(r'class="tick"[^>]*>([^<]+)<', svg)
    assert ticks[0] == "+0s" and ticks[-1] == "+30s"


def test_timeline_of_a_running_job_reaches_now_and_caps_lanes():
    job = _job(done=False, status="RUNNING", nodes_per_task=150)
    svg = timeline.render(job, EVENTS[:6], now=T0 + 600)
    ticks = re.findall(r'class="tick"[^>]*>([^<]+)<', svg)
    assert ticks[-1] == "+10m"
    assert "… 100 more nodes" in svg
    assert len(re.findall(r'class="lane-label"', svg)) == 1 + timeline.MAX_LANES + 1


def test_html_escapes_what_users_wrote():
    job = _job()
    job.update(num_tasks=2, num_nodes=4, restarts=0, group_restarts=0, cancel_requested=False,
               execution="parallel", isolation="none", duration=1.0, infra="k8s:<ns>")
    job["reason"] = "<script>alert(1)</script>"
    for t in job["tasks"]:
        t["nodes"] = [{"rank": 0, "phase": "ended", "attempt": 1, "address": "",
                       "hostname": "<img>", "restarts": 0, "readiness": "-",
                       "exit": "exit code 0", "started_at": None, "ended_at": None}]
    html = pages.group_live(job, EVENTS, T0 + 40)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<img>" not in html and "<b>boom</b>" not in html
    rows = pages.job_rows([{**job, "name": "a<b"}])
    assert "a&lt;b" in rows and "<script>" not in rows


def _node(**kw) -> NodeRec:
    base = dict(job_id=1, task_idx=0, rank=0, phase=Phase.RUN, handle={"pid": 1, "start": 1},
                exit_code=None, signal=None, stopped=False, stop_requested_at=None,
                started_at=T0, ended_at=None, address="", hostname="", attempt=1)
    return NodeRec(**{**base, **kw})


def test_readiness_and_exit_words():
    assert views.readiness(_node(), probed=True) == "waiting"
    assert views.readiness(_node(), probed=False) == "started"
    assert views.readiness(_node(ready_at=T0 + 1), probed=True) == "ready"
    assert views.readiness(_node(probe_failed="GET x failed"), probed=True) == "failed: GET x failed"
    assert views.readiness(_node(phase=Phase.WAITING), probed=True) == "-"
    assert views.exit_text(_node()) == ""
    assert views.exit_text(_node(phase=Phase.ENDED, exit_code=0)) == "exit code 0"
    assert views.exit_text(_node(phase=Phase.ENDED, signal=15, stopped=True)) == \
        "signal 15 (stopped)"
    assert views.exit_text(_node(phase=Phase.ENDED, stopped=True)) == "stopped"
    assert views.probed_tasks("name: a\nrun: x\nreadiness_probe: {tcp: {port: 1}}\n") == \
        frozenset({"a"})
    assert pages.fmt_duration(3.25) == "3.2s" and pages.fmt_duration(3725) == "1h 02m"


def test_the_cli_does_not_import_the_server():
    code = ("import sys; from jobgroup.cli.main import cli; "
            "print(any(m.startswith('jobgroup.dashboard') or m == 'http.server' "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _start(jenv, *args: str) -> tuple[subprocess.Popen, list[str]]:
    """`jobgroup dashboard --port 0 ARGS`; the process and the lines of stdout up to its
    'Press Ctrl-C' (stderr stays readable on the process)."""
    p = subprocess.Popen([sys.executable, "-m", "jobgroup", "dashboard", "--port", "0", *args],
                         env=jenv.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [p.stdout.readline()]
    while "Ctrl-C" not in lines[-1] and p.poll() is None:
        lines.append(p.stdout.readline())
    return p, lines


def _status(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """(status, body, Set-Cookie) of a GET, redirects not followed."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode(), r.headers.get("Set-Cookie") or ""
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), ""


def _stop(p: subprocess.Popen) -> tuple[str, str]:
    p.send_signal(signal.SIGINT)
    return p.communicate(timeout=10)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2"])
def test_dashboard_command_prints_the_url_with_its_token(jenv, host):
    p, lines = _start(jenv, "--host", host)
    try:
        token = (jenv.home / "dashboard.token").read_text().strip()
        assert oct(os.stat(jenv.home / "dashboard.token").st_mode & 0o777) == "0o600"
        text = "".join(lines)
        m = re.search(rf"(http://{re.escape(host)}:\d+/)\?token=(\S+)", lines[0])
        assert m and m.group(2) == token, text
        url = m.group(1)
        assert "Authorization: Bearer TOKEN" in text
        assert _status(url + "api/jobs")[0] == 401
        assert _status(url)[0] == 401
        assert _status(url + "api/jobs", {"Authorization": f"Bearer {token}"})[0] == 200
        # the printed URL signs a browser in: a cookie, then the page without the token
        status, body, cookie = _status(m.group(0))
        assert status == 200 and 'content="0; url=/"' in body and "HttpOnly" in cookie
        jobs = _status(url, {"Cookie": cookie.split(";")[0]})
        assert jobs[0] == 200 and "No jobs." in jobs[1]
    finally:
        out, err = _stop(p)
    assert p.returncode == 0 and "Stopped." in out and "Warning" not in err


def test_dashboard_command_open_keeps_the_token_off_the_command_line(jenv, tmp_path):
    """`--open` starts the browser ($BROWSER here: a script that records its arguments) on a
    0600 file that leads to the token URL: a command line is readable by every local user."""
    seen = tmp_path / "browser-args"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {seen}\n')
    browser.chmod(0o700)
    jenv.env["BROWSER"] = str(browser)
    p, lines = _start(jenv, "--open")
    try:
        token = (jenv.home / "dashboard.token").read_text().strip()
        login = jenv.home / "dashboard-open.html"
        # the browser runs after the URL is printed
        args = wait_for(lambda: seen.exists() and seen.read_text().split())
        assert args == [login.as_uri()] and token not in " ".join(args)
        assert oct(login.stat().st_mode & 0o777) == "0o600"
        url = re.search(r"http://\S+", lines[0]).group(0)
        assert f'content="0; url={url}"' in login.read_text()
    finally:
        out, _ = _stop(p)
    assert p.returncode == 0 and not login.exists()


def test_dashboard_command_no_auth_warns_and_serves_loopback_only(jenv):
    p, lines = _start(jenv, "--no-auth")
    try:
        url = re.search(r"(http://127\.0\.0\.1:\d+/)\s*$", lines[0]).group(1)
        status, body, _ = _status(url + "api/jobs")
        assert status == 200 and '"jobs":[]' in body
        assert not (jenv.home / "dashboard.token").exists()
        evil = _status(url + "api/jobs", {"Host": "evil.example"})  # DNS rebinding: still refused
        assert evil[0] == 403
    finally:
        out, err = _stop(p)
    assert p.returncode == 0 and "Stopped." in out
    assert "Warning: --no-auth" in err and "Any user of this machine" in err
    assert "token" not in "".join(lines)

    refused = jenv.jg("dashboard", "--no-auth", "--host", "127.0.0.2", "--port", "0")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "--no-auth is only allowed on 127.0.0.1, localhost or ::1" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_dashboard_command_reports_a_busy_port(jenv):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        p = jenv.jg("dashboard", "--port", str(s.getsockname()[1]))
    finally:
        s.close()
    assert p.returncode == 2 and "cannot listen on 127.0.0.1" in p.stderr
    assert "Traceback" not in p.stderr
    assert "dashboard" in jenv.jg("--help").stdout
