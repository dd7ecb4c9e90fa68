"""Operating a running group (issue 20) through the real CLI on the local backend: `jobgroup
exec` runs in the node's own view (hostname, names only the group resolves, its private /tmp,
its environment) with the exit code passed through, also as an interactive shell on a
pseudo-terminal; `port-forward` reaches a server bound inside a node and ends with the node;
`top` shows a node's memory growing and its processes; each is recorded in the group's events;
another user is refused."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import wait_for

root = pytest.mark.root
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: nodes get their own "
                                "namespaces and roots (level `namespaces`)")

GROUP = """\
    name: ops
    execution: parallel
    ---
    name: web
    run: |
      echo "only-web-wrote-this" > /tmp/mine.txt
      mkdir -p /tmp/site && echo "hello from $(hostname)" > /tmp/site/index.html
      cd /tmp/site && exec python3 -m http.server 18931 --bind 0.0.0.0
    ---
    name: other
    num_nodes: 2
    run: exec sleep 120
    """


def _events(jenv, job: int) -> list[dict]:
    return json.loads(jenv.jg("events", str(job), "--json", check=True).stdout)


def _running(jenv, job: int) -> None:
    wait_for(lambda: jenv.job(job)["status"] == "RUNNING", timeout=30)
    # the web node serves (asked inside it: its port is not the host's)
    wait_for(lambda: jenv.jg("exec", str(job), "web", "--", "python3", "-c",
                             "import socket; socket.create_connection(('127.0.0.1', 18931))"
                             ).returncode == 0, timeout=30)


@root
@needs_root
def test_exec_runs_in_the_node_s_view_and_passes_the_exit_code(jenv):
    job = jenv.launch_d(GROUP)
    _running(jenv, job)
    p = jenv.jg("exec", str(job), "web", "--", "sh", "-c",
                'hostname; cat /tmp/mine.txt; getent hosts other-1.ops | wc -l; '
                'echo "rank=$SKYPILOT_NODE_RANK task=$JOBGROUP_TASK group=$SKYPILOT_JOBGROUP_NAME";'
                ' exit 7')
    assert p.returncode == 7, p.stderr
    lines = p.stdout.split("\n")
    assert lines[:4] == ["web-0", "only-web-wrote-this", "1", "rank=0 task=web group=ops"], p.stdout
    # another node does not see web's private /tmp; --node picks the rank
    p = jenv.jg("exec", str(job), "other", "--node", "1", "--", "sh", "-c",
                "hostname; cat /tmp/mine.txt")
    assert p.returncode == 1 and p.stdout.startswith("other-1\n")
    assert "No such file" in p.stderr
    # the host does not resolve the group's names: the node does
    assert subprocess.run(["getent", "hosts", "other-1.ops"], capture_output=True).returncode
    # stdin passes through
    p = jenv.jg("exec", str(job), "web", "--", "wc", "-c", input="12345")
    assert p.returncode == 0 and p.stdout.strip() == "5"
    execs = [e["message"] for e in _events(jenv, job) if e["kind"] == "exec"]
    assert any("ran sh -c" in m and m.endswith("on web-0") for m in execs), execs
    assert any(m.endswith("ran wc -c on web-0") for m in execs), execs


@root
@needs_root
def test_exec_says_what_is_wrong(jenv):
    job = jenv.launch_d("name: quick\nrun: exit 3\n")
    assert jenv.wait(job)["status"] == "FAILED"
    p = jenv.jg("exec", str(job), "--", "true")
    assert p.returncode == 1 and "node quick-0 of job 1 has ended (exit code 3" in p.stderr
    p = jenv.jg("exec", "99", "--", "true")
    assert p.returncode == 2 and "no job 99" in p.stderr
    job2 = jenv.launch_d(GROUP)
    p = jenv.jg("exec", str(job2), "--", "true")
    assert p.returncode == 2 and "name one (web, other)" in p.stderr
    p = jenv.jg("exec", str(job2), "wbe", "--", "true")
    assert p.returncode == 2 and "did you mean 'web'" in p.stderr
    p = jenv.jg("exec", str(job2), "other", "--node", "5", "--", "true")
    assert p.returncode == 2 and "ranks 0 to 1" in p.stderr
    p = jenv.jg("exec", str(job2), "web")
    assert p.returncode == 2 and "give the command after `--`" in p.stderr
    assert "Traceback" not in p.stderr


@root
@needs_root
def test_exec_gives_an_interactive_shell_on_a_terminal(jenv):
    job = jenv.launch_d(GROUP)
    _running(jenv, job)
    pid, fd = pty.fork()
    if pid == 0:  # the child: `jobgroup exec` on the pseudo-terminal, as a user types it
        os.environ.update(jenv.env)
        os.environ["TERM"] = "dumb"
        os.chdir(jenv.tmp)
        os.execv(sys.executable, [sys.executable, "-m", "jobgroup", "exec", str(job), "web",
                                  "--", "bash", "--norc", "-i"])
    out = b""

    def read_until(needle: bytes, timeout: float = 20) -> None:
        nonlocal out
        deadline = time.monotonic() + timeout
        while needle not in out and time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break
        assert needle in out, out.decode(errors="replace")

    try:
        read_until(b"bash-")  # bash's prompt (`bash-5.2# `): it is interactive
        os.write(fd, b"tty; hostname; cat /tmp/mine.txt; exit 5\n")
        read_until(b"only-web-wrote-this")
        _, status = os.waitpid(pid, 0)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    text = out.decode(errors="replace")
    assert "/dev/pts/" in text and "web-0" in text, text
    assert os.waitstatus_to_exitcode(status) == 5


@root
@needs_root
def test_port_forward_reaches_a_server_in_a_node_and_ends_with_it(jenv):
    job = jenv.launch_d(GROUP)
    _running(jenv, job)
    proc = subprocess.Popen([sys.executable, "-m", "jobgroup", "port-forward", str(job), "web",
                             "0:18931"], env=jenv.env, cwd=jenv.tmp, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert line.startswith("Forwarding 127.0.0.1:") and "-> web-0:18931" in line, line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        assert port != 18931  # 0 picked a free one
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10).read()
        assert body == b"hello from web-0\n"
        jenv.jg("cancel", str(job), check=True)
        assert proc.wait(timeout=30) == 0
        assert "web-0 ended; forwarding stopped." in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)
    kinds = [e["kind"] for e in _events(jenv, job)]
    assert "port-forward" in kinds


@root
@needs_root
def test_top_shows_a_node_s_memory_growing_and_its_processes(jenv):
    job = jenv.launch_d("""\
        name: grow
        resources: {memory: 1}
        run: |
          exec python3 -c "
          import time
          hold = []
          for i in range(60):
              hold.append(bytearray(8 * 2**20))
              time.sleep(0.1)
          time.sleep(60)
          "
        """)
    wait_for(lambda: jenv.job(job)["status"] == "RUNNING", timeout=30)

    def memory() -> int:
        doc = json.loads(jenv.jg("top", str(job), "--json", check=True).stdout)
        use = doc["nodes"][0].get("usage") or {}
        return use.get("memory_bytes") or 0

    wait_for(lambda: memory() > 0, timeout=20)
    first = memory()
    wait_for(lambda: memory() > first + 64 * 2**20, timeout=30)
    doc = json.loads(jenv.jg("top", str(job), "--json", check=True).stdout)
    node = doc["nodes"][0]
    assert node["node"] == "grow-0" and node["requested"]["memory_gb"] == 1
    assert node["usage"]["memory_limit_bytes"] == 2**30
    assert any("python3" in p["command"] for p in node["usage"]["processes"])
    p = jenv.jg("top", str(job), check=True)  # not a terminal: one table, then exit
    head = p.stdout.splitlines()
    assert head[0] == f"Job {job} (grow) RUNNING"
    assert head[1].split() == ["NODE", "PHASE", "CPU", "MEMORY", "GPU", "MEMORY", "PROCS",
                               "REQUESTED"]
    assert head[2].startswith("grow-0") and "/ 1.00 GiB" in head[2]


@root
@needs_root
def test_another_user_is_refused(jenv):
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    job = jenv.launch_d(GROUP)
    _running(jenv, job)
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    p = subprocess.run([*nobody, sys.executable, "-m", "jobgroup", "exec", str(job), "web", "--",
                        "id"], env=jenv.env, capture_output=True, text=True, timeout=60,
                       cwd="/")
    assert p.returncode != 0 and "uid=" not in p.stdout
    assert not [e for e in _events(jenv, job) if e["kind"] == "exec" and "nobody" in e["message"]]
