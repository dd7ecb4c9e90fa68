"""The unprivileged path of issue 4: a user without root gets the best level this machine allows
(`user` where bubblewrap works through unprivileged user namespaces, else `none`), is told so
at launch, and the group runs.

As root the test drops to uid/gid 65534 with setpriv (no capabilities); as any other user it runs
as that user. The state directory, shim cache and YAML live in a fresh directory under /tmp
owned by that user (pytest's own tmp directories are 0700 root). The project's venv python may
sit under /root (0700): then the system python of the same version runs the checkout with the
venv's site-packages on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, processes_of, wait_for

NOBODY = 65534


def _as_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop root")
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def _runs(prefix: list[str], argv: list[str], env: dict[str, str]) -> bool:
    # Through a shell: setpriv's own exec may reach a binary the user cannot (seen here with a
    # venv python under /root), while the user's processes (the controller) cannot.
    try:
        return subprocess.run([*prefix, "/bin/sh", "-c", 'exec "$@"', "sh", *argv], env=env,
                              capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _python(prefix: list[str], env: dict[str, str]) -> tuple[str, dict[str, str]]:
    """A python the user can run that imports this checkout, and the env it needs."""
    probe = ["-c", "import jobgroup, msgspec, click"]
    if _runs(prefix, [sys.executable, *probe], env):
        return sys.executable, env
    site = [p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix)]
    env = {**env, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *site])}
    for cand in ("/usr/bin/python3", shutil.which("python3") or ""):
        if not cand or not os.path.exists(cand):
            continue
        ver = subprocess.run([cand, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
        if ver == str(tuple(sys.version_info[:2])) and _runs(prefix, [cand, *probe], env):
            return cand, env
    pytest.skip("no python the unprivileged user can run imports this checkout (the venv "
                "is unreadable to it and no system python of the same version exists)")


@pytest.fixture
def unpriv():
    prefix = _as_user()
    base = Path(tempfile.mkdtemp(prefix="jg-unpriv-", dir="/tmp"))
    os.chmod(base, 0o755)
    if prefix:
        os.chown(base, NOBODY, NOBODY)
    (base / "work").mkdir()
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(base),
        "JOBGROUP_HOME": str(base / "home"),
        "JOBGROUP_CACHE": str(base / "cache"),
        "NO_COLOR": "1",
        "LANG": "C.UTF-8",
    }
    python, env = _python(prefix, env)

    def jg(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, python, "-m", "jobgroup", *args], env=env,
                              capture_output=True, text=True, timeout=timeout,
                              cwd=base / "work")

    yield base, prefix, env, jg
    if (base / "home" / "state.db").exists():
        jg("cancel", "--all", timeout=60)
        try:
            wait_for(lambda: not processes_of(base / "home"), timeout=20)
        except AssertionError:
            pass
        jg("controller", "stop", timeout=60)
    left = processes_of(base / "home")
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(base, ignore_errors=True)
    assert not left, f"processes left behind: {left}"


def test_unprivileged_run_states_its_fallback_and_succeeds(unpriv):
    base, prefix, env, jg = unpriv
    bwrap = shutil.which("bwrap")
    bwrap_works = bool(bwrap) and _runs(
        prefix, [bwrap, "--ro-bind", "/", "/", "--unshare-uts", "true"], env)
    expected = "user" if bwrap_works else "none"
    spec = base / "work" / "group.yaml"
    spec.write_text(textwrap.dedent("""\
        name: unpriv
        execution: parallel
        primary_tasks: [cli]
        termination_delay: 0s
        ---
        name: srv
        num_nodes: 2
        run: |
          me=$(echo "$SKYPILOT_NODE_IPS" | sed -n "$((SKYPILOT_NODE_RANK + 1))p")
          python3 -c '
          import http.server, socket, sys
          class H(http.server.BaseHTTPRequestHandler):
              def do_GET(self):
                  body = f"{socket.gethostname()} {sys.argv[2]}".encode()
                  self.send_response(200)
                  self.send_header("Content-Length", str(len(body)))
                  self.end_headers()
                  self.wfile.write(body)
              def log_message(self, *a):
                  pass
          http.server.HTTPServer((sys.argv[1], 28766), H).serve_forever()
          ' "$me" "$SKYPILOT_NODE_RANK"
        ---
        name: cli
        run: |
          echo "HOSTNAME $(hostname) UID $(id -u)"
          python3 - <<'EOF'
          import os, sys, time, urllib.request
          by_name = os.environ["LEVEL"] == "user"
          for rank in (0, 1):
              host = f"srv-{rank}.unpriv" if by_name else None
              if host is None:  # level none: names do not resolve, addresses come by env
                  topo = __import__("json").load(open(os.environ["JOBGROUP_TOPOLOGY"]))
                  host = [t for t in topo["tasks"] if t["name"] == "srv"][0]["nodes"][rank]["address"]
              deadline = time.monotonic() + 30
              while True:
                  try:
                      print("GOT", urllib.request.urlopen(f"http://{host}:28766/", timeout=2).read().decode())
                      break
                  except OSError as e:
                      if time.monotonic() > deadline:
                          sys.exit(f"{host}: {e}")
                      time.sleep(0.1)
          EOF
        """))
    if prefix:
        os.chown(spec, NOBODY, NOBODY)
    p = jg("launch", str(spec), "-d", "--env", f"LEVEL={expected}")
    assert p.returncode == 0, p.stderr
    assert f"Isolation: {expected} (" in p.stderr, p.stderr
    job = int(p.stdout.split()[1])
    w = jg("wait", str(job), "--json", "--timeout", "90", timeout=150)
    final = json.loads(w.stdout)
    log = (base / "home" / "jobs" / str(job) / "logs" / "cli-0.log").read_text()
    assert final["status"] == "SUCCEEDED", (final, log)
    assert final["isolation"] == expected
    uid = NOBODY if prefix else os.geteuid()
    if expected == "user":
        assert f"HOSTNAME cli-0 UID {uid}" in log, log
        assert "GOT srv-0 0" in log and "GOT srv-1 1" in log, log
    else:
        assert f"UID {uid}" in log and "GOT " in log, log
    assert not (base / "home" / "jobs" / str(job) / "hosts").exists()
    # No root: nothing may have been made in the machine's network.
    from jobgroup.backends.local import network

    assert network.existing(network.home_tag(base / "home")) == {
        "bridges": [], "veths": [], "netns": []}
