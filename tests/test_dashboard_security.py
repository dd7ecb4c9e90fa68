"""The dashboard against other local users and against broken or stalled clients, over real
sockets: another user (`nobody`, through setpriv) can neither act nor read without the token;
only complete requests are acted on; a stalled or idle connection is closed after the server's
request timeout, while a log stream (SSE) lives as long as its job."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import wait_for

from jobgroup import api
from jobgroup.dashboard.server import make_server, serve_in_thread
from test_dashboard_helpers import (  # noqa: F401 (fixtures are used by name)
    dashboard, launch_yaml, request, sse_events, stop_own_controller)

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
SLEEPER = "name: sleeper\nrun: echo started; sleep 300\n"


def _jobs(home) -> list:
    return api.queue(all=True, home=home) if (home / "state.db").exists() else []


def _cancel_requested(home, job_id: int) -> bool:
    return any(e.kind == "cancel-requested" for e in api.events(job_id, home=home))


def _as_nobody(code: str, *args: str) -> dict:
    """Run `code` (standard library only) as the user nobody; its JSON output."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become another user (setpriv)")
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    for python in ("/usr/bin/python3", os.path.join(sys.base_prefix, "bin", "python3")):
        if os.path.exists(python):
            break
    p = subprocess.run([*NOBODY, python, "-c", textwrap.dedent(code), *args],
                       capture_output=True, text=True, timeout=60, cwd="/")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


NOBODY_CLIENT = """
    import http.client, json, os, sys
    port, token_file, job = int(sys.argv[1]), sys.argv[2], sys.argv[3]

    def status(method, path, body=None, **headers):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        r.read()
        c.close()
        return r.status

    out = {"uid": os.getuid()}
    spec = b"run: cat /etc/shadow; touch /root/owned-by-nobody\\n"
    yaml = {"Content-Type": "application/yaml"}
    out["POST /api/jobs"] = status("POST", "/api/jobs", spec, **yaml)
    out["POST /api/jobs (json)"] = status(
        "POST", "/api/jobs", json.dumps({"spec": spec.decode()}),
        **{"Content-Type": "application/json"})
    out["POST /api/jobs (guessed token)"] = status(
        "POST", "/api/jobs", spec, Authorization="Bearer " + "A" * 43)
    out["POST cancel"] = status("POST", f"/api/jobs/{job}/cancel")
    out["POST cancel all"] = status("POST", "/api/jobs/cancel", b'{"all": true}')
    out["POST /api/validate"] = status("POST", "/api/validate", b"run: x\\n")
    for path in ("/", f"/jobs/{job}", "/api/jobs", f"/api/jobs/{job}", f"/api/jobs/{job}/events",
                 f"/api/jobs/{job}/logs", f"/api/jobs/{job}/logs/stream", "/fragments/jobs",
                 "/api/openapi.json", "/?token=guess"):
        out["GET " + path] = status("GET", path)
    try:
        open(token_file).read()
        out["token file"] = "read"
    except PermissionError:
        out["token file"] = "permission denied"
    print(json.dumps(out))
"""


def test_another_local_user_can_neither_act_nor_read(dashboard):
    """The issue's finding: as nobody, a job posted to the default dashboard ran as root."""
    job = launch_yaml(dashboard, SLEEPER)["id"]
    token_file = dashboard.home / "dashboard.token"
    out = _as_nobody(NOBODY_CLIENT, str(dashboard.port), str(token_file), str(job))
    assert out.pop("uid") == 65534
    assert out.pop("token file") == "permission denied"
    assert out == {k: 401 for k in out}, out
    st = token_file.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()
    # nothing was launched or cancelled
    jobs = _jobs(dashboard.home)
    assert [j.id for j in jobs] == [job]
    assert not jobs[0].done and not _cancel_requested(dashboard.home, job)
    assert not os.path.exists("/root/owned-by-nobody")


def _connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=60)


def _head(server, method: str, path: str, length: int | None = None,
          ctype: str = "application/yaml") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}",
             f"Authorization: Bearer {server.token}", f"Content-Type: {ctype}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout, failing
    the test, if it never does)."""
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def _dechunk(body: bytes) -> bytes:
    """The content of a `Transfer-Encoding: chunked` body (a stream's length is unknown)."""
    out = b""
    while body:
        size, _, body = body.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out, body = out + body[:n], body[n + 2:]
    return out


def test_a_body_cut_short_is_never_acted_on(dashboard):
    """A POST declaring more than it sends, then closing its side: 400, nothing launched or
    cancelled — even when what arrived is a valid spec or valid JSON."""
    running = launch_yaml(dashboard, SLEEPER)["id"]

    spec = b"name: cut\nrun: echo truncated\n"  # a complete, valid spec, but not the whole body
    s = _connect(dashboard)
    s.sendall(_head(dashboard, "POST", "/api/jobs", 1 << 19) + spec)
    s.shutdown(socket.SHUT_WR)
    reply = _read_all(s)
    s.close()
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:200]
    assert f"ended after {len(spec)} of its 524288 bytes".encode() in reply
    assert b"nothing was done" in reply

    body = b'{"all": true}'  # valid JSON, cut from a longer list
    s = _connect(dashboard)
    s.sendall(_head(dashboard, "POST", "/api/jobs/cancel", 100, "application/json") + body)
    s.shutdown(socket.SHUT_WR)
    assert _read_all(s).startswith(b"HTTP/1.1 400 ")
    s.close()

    # headers cut short (no blank line): the stdlib would take end of input for their end
    s = _connect(dashboard)
    s.sendall(_head(dashboard, "POST", f"/api/jobs/{running}/cancel")[:-2])
    s.shutdown(socket.SHUT_WR)
    assert b" 200 " not in _read_all(s)[:20]
    s.close()

    assert [j.id for j in _jobs(dashboard.home)] == [running]
    assert not api.get_job(running, home=dashboard.home).done
    assert not _cancel_requested(dashboard.home, running)
    # the server still serves complete requests
    ok = request(dashboard, "POST", f"/api/jobs/{running}/cancel")
    assert ok.json["result"] == "cancelling"


@pytest.fixture
def quick(jenv):
    """A dashboard whose request timeout is 1 s."""
    server = make_server(jenv.home, "127.0.0.1", 0, request_timeout=1.0)
    serve_in_thread(server)
    yield server
    server.shutdown()
    server.server_close()
    stop_own_controller(jenv)


def test_stalled_and_idle_connections_are_closed(quick):
    # stalled in the headers
    s = _connect(quick)
    s.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert _read_all(s) == b""
    s.close()

    # stalled in the body: 408, nothing launched
    s = _connect(quick)
    s.sendall(_head(quick, "POST", "/api/jobs", 1000) + b"run: id\n")
    reply = _read_all(s)
    s.close()
    assert reply.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 1 s" in reply
    assert _jobs(quick.home) == []

    # idle after a complete exchange (keep-alive): closed
    s = _connect(quick)
    s.sendall(_head(quick, "GET", "/api/jobs"))
    reply = _read_all(s)
    s.close()
    assert reply.startswith(b"HTTP/1.1 200 ") and b'{"jobs":[],"total":0,' in reply

    # trickling: a byte at a time never completes the request; closed anyway
    s = _connect(quick)
    head = _head(quick, "POST", "/api/jobs", 20000) + b"x" * 20000
    sent, closed = 0, False
    deadline = time.monotonic() + 120  # failing bound only: 5 bytes/s would take over an hour
    while time.monotonic() < deadline and sent < len(head):
        try:
            s.sendall(head[sent:sent + 1])
        except OSError:
            closed = True
            break
        sent += 1
        s.settimeout(0.2)  # pacing: one byte per 0.2 s unless the server closes meanwhile
        try:
            s.recv(65536)  # a 408, or the end of the connection: the server gave up either way
            closed = True
            break
        except socket.timeout:
            pass
        except OSError:  # a reset (the server closed with our bytes unread): it gave up too
            closed = True
            break
    s.close()
    assert closed and sent < len(head)
    assert _jobs(quick.home) == []


def test_a_log_stream_outlives_the_request_timeout(quick):
    """SSE is long-lived by design: a stream of a job that runs several times the timeout
    gets every line and its end."""
    job = launch_yaml(quick, """
        name: slow-ticker
        run: |
          for i in 1 2 3 4 5; do echo "tick $i"; sleep 0.8; done
        """)["id"]
    s = _connect(quick)
    s.sendall(_head(quick, "GET", f"/api/jobs/{job}/logs/stream"))
    head, _, body = _read_all(s).partition(b"\r\n\r\n")
    s.close()
    assert b"transfer-encoding: chunked" in head.lower()
    events = sse_events(_dechunk(body).decode())
    assert [json.loads(d)["text"] for n, d in events if n == "message"] == [
        f"tick {i}" for i in range(1, 6)]
    assert events[-1][0] == "end"


def test_a_client_that_stops_reading_is_disconnected(quick):
    """Writes time out too: a log stream whose client never reads (the kernel's buffers full)
    is closed after the request timeout, and its slot and reader are freed."""
    job = launch_yaml(quick, """
        name: chatty
        run: |
          python3 -c "
          import sys
          line = 'x' * 1000 + chr(10)
          for _ in range(60000): sys.stdout.write(line)
          "
          sleep 60
        """)["id"]
    deadline = time.monotonic() + 60
    log = quick.home / "jobs" / str(job) / "logs" / "chatty-0.log"
    while time.monotonic() < deadline and (not log.exists() or log.stat().st_size < 50 << 20):
        time.sleep(0.2)
    free = quick.streams._value
    s = _connect(quick)
    s.sendall(_head(quick, "GET", f"/api/jobs/{job}/logs/stream?tail=100000"))
    time.sleep(6)  # not read: past the kernel's buffers the server's writes block, time out
    s.settimeout(30)
    got, closed = 0, False
    try:
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                closed = True
                break
            got += len(chunk)
    except ConnectionResetError:
        closed = True
    s.close()
    assert closed and got < 50 << 20  # cut off, not the whole tail
    wait_for(lambda: quick.streams._value == free, timeout=10)
    api.cancel(job, home=quick.home)
