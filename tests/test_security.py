"""Issue 16's findings about the controller and the state directory, tried the way an attacker
(another local user, `nobody`) or a failing disk would: real sockets, real users (setpriv), real
mounts (a small tmpfs, a read-only bind mount), the real CLI and controller.

- the controller's sockets are files in the private state directory: another user can neither
  reach them nor take their names; the client sends nothing to a server of another user;
- a launch sends only the variables nodes inherit by name (or those asked for), never the
  whole environment;
- the state directory is private whatever its prior mode;
- a full or read-only state directory never produces a wrong result or a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_for

from jobgroup.controller import rpc

ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (another user, mounts)")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
PY = sys.base_prefix + "/bin/python3"  # a python `nobody` may run (the venv may be private)


def as_nobody(code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NOBODY, PY, "-c", code], capture_output=True, text=True,
                          timeout=timeout)


def _open_path(path: Path) -> None:
    """Let `nobody` traverse down to `path` (the test's tmp folders are root's, 0700)."""
    for p in [path, *path.parents]:
        if p == Path("/"):
            break
        os.chmod(p, os.stat(p).st_mode | 0o711)


# ---- sockets ----------------------------------------------------------------------------------


@ROOT
def test_another_user_cannot_reach_the_controller(jenv):
    jenv.jg("controller", "start", check=True)
    _open_path(jenv.tmp)
    assert sorted(p.name for p in jenv.home.glob("controller.*") if p.is_socket()) == [
        "controller.sock", "controller.wake"]
    spec = jenv.spec("name: evil\nrun: touch /tmp/should-not-exist-jobgroup\n")
    code = f"""
import socket
home = {str(jenv.home)!r}
for kind, name, msg in ((socket.SOCK_STREAM, "controller.sock",
                         b'{{"op": "launch", "path": "{spec}"}}\\n'),
                        (socket.SOCK_DGRAM, "controller.wake", b"stop")):
    s = socket.socket(socket.AF_UNIX, kind)
    try:
        s.connect(home + "/" + name)
        s.send(msg)
        print(name, "REACHED")
    except PermissionError:
        print(name, "denied")
"""
    p = as_nobody(code)
    assert p.stdout.split() == ["controller.sock", "denied", "controller.wake", "denied"], \
        p.stdout + p.stderr
    status = json.loads(jenv.jg("controller", "status", "--json", check=True).stdout)
    assert status["running"] and status["active_groups"] == 0
    assert not os.path.exists("/tmp/should-not-exist-jobgroup")


@ROOT
def test_names_taken_first_by_another_user_change_nothing(jenv, tmp_path):
    """`nobody` binds the abstract names earlier versions used (and would have received the
    launch, environment included, and answered it): launches go to the real controller."""
    got = tmp_path / "got"
    got.mkdir()
    os.chmod(got, 0o777)
    _open_path(got)
    home = os.fsencode(jenv.home)
    code = f"""
import os, socket, select, time
home = {home!r}
rpc = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
rpc.bind(b"\\0jobgroup:" + home + b":rpc")
rpc.listen(8)
wake = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
wake.bind(b"\\0jobgroup:" + home)
print("bound", flush=True)
end = time.monotonic() + 20
while time.monotonic() < end:
    r, _, _ = select.select([rpc, wake], [], [], 0.2)
    for s in r:
        if s is rpc:
            c, _ = rpc.accept()
            data = c.recv(1 << 20)
            c.sendall(b'{{"ok": true, "job": {{"id": 4242, "name": "forged", "tasks": []}}}}\\n')
        else:
            data = wake.recv(4096)
        open({str(got / "received")!r}, "ab").write(data)
    if os.path.exists({str(got / "done")!r}):
        break
"""
    squatter = subprocess.Popen([*NOBODY, PY, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout.readline().strip() == "bound"
        for _ in range(2):  # the first starts the controller (long road), the second is short
            p = jenv.jg("launch", str(jenv.spec("name: real\nrun: echo real-run\n")), "-d",
                        check=True)
            assert "4242" not in p.stdout
            job = int(p.stdout.split()[1])
            assert jenv.wait(job)["status"] == "SUCCEEDED"
            assert "real-run" in jenv.log(job, "real")
    finally:
        (got / "done").touch()
        squatter.wait(timeout=30)
    assert not (got / "received").exists()


@ROOT
def test_client_sends_nothing_to_a_server_of_another_user(tmp_path):
    """Belt and braces: even a socket file in the state directory (only root could put one
    there) gets nothing from `launch` when the process listening on it is not this user."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(home / "controller.sock"))
    os.chmod(home / "controller.sock", 0o777)
    code = f"""
import socket
s = socket.socket(fileno={srv.fileno()})
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
c.settimeout(5)
print("received", len(c.recv(1 << 20)), flush=True)
"""
    listener = subprocess.Popen([*NOBODY, PY, "-c", code], stdout=subprocess.PIPE, text=True,
                                pass_fds=[srv.fileno()])
    srv.close()
    try:
        assert listener.stdout.readline().strip() == "listening"
        answer = rpc.call(home, {"op": "launch", "path": "/x", "env": {"TOKEN": "s3cr3t"}})
        assert answer is not None and not answer["ok"] and answer["exit_code"] == 1
        assert "not by you" in answer["error"]
        assert listener.stdout.readline().split() == ["received", "0"]
    finally:
        listener.kill()
        listener.wait()


# ---- the environment a launch sends -------------------------------------------------------------


ENV_SPEC = """\
name: envcheck
run: |
  echo "secret=${JG_TEST_SECRET_TOKEN:-absent}"
  echo "path=${PATH:+set}"
  echo "home=$HOME"
"""


def test_launch_sends_only_named_variables(jenv):
    jenv.env["JG_TEST_SECRET_TOKEN"] = "s3cr3t-value-1234"
    seen = []
    for extra in ((), (), ("--env", "JG_TEST_SECRET_TOKEN"), ("--inherit-env",)):
        job = jenv.launch_d(ENV_SPEC, *extra)  # the first starts the controller: both roads
        assert jenv.wait(job)["status"] == "SUCCEEDED"
        seen.append(jenv.log(job, "envcheck"))
    for log in seen[:2]:
        assert "secret=absent" in log and "path=set" in log
        assert f"home={os.environ['HOME']}" in log
    assert "secret=s3cr3t-value-1234" in seen[2] and "secret=s3cr3t-value-1234" in seen[3]
    jenv.stop_controller()  # the store's files checkpointed and closed
    # The first two launches stored nothing of it either (the later two asked for it).
    raw = b"".join(p.read_bytes() for p in jenv.home.glob("state.db*"))
    assert raw.count(b"s3cr3t-value-1234") <= 2 * 2  # base_env/env of jobs 3 and 4 only
    p = jenv.jg("launch", str(jenv.spec(ENV_SPEC)), "--env", "JG_TEST_SURELY_UNSET_VAR")
    assert p.returncode == 2 and "JG_TEST_SURELY_UNSET_VAR is not set" in p.stderr


# ---- the state directory's mode -----------------------------------------------------------------


@ROOT
def test_state_dir_made_beforehand_with_mode_755_becomes_private(jenv):
    jenv.home.mkdir(mode=0o755)
    os.chmod(jenv.home, 0o755)
    _open_path(jenv.home)
    job = jenv.launch_d("name: leak\nrun: echo the-secret-in-a-log\n")
    assert jenv.wait(job)["status"] == "SUCCEEDED"
    assert os.stat(jenv.home).st_mode & 0o777 == 0o700
    for db in jenv.home.glob("state.db*"):
        assert os.stat(db).st_mode & 0o077 == 0, db
    log = jenv.home / "jobs" / str(job) / "logs" / "leak-0.log"
    assert "the-secret-in-a-log" in log.read_text()
    p = as_nobody(f"""
import glob
for path in [{str(log)!r}, *glob.glob({str(jenv.home)!r} + "/state.db*"),
             {str(jenv.home / "controller.sock")!r}]:
    try:
        open(path, "rb").read()
        print("READ", path)
    except PermissionError:
        print("denied")
""")
    assert p.stdout.split() and set(p.stdout.split()) == {"denied"}, p.stdout + p.stderr


@ROOT
def test_state_dir_of_another_user_is_refused(jenv):
    jenv.home.mkdir(mode=0o700)
    os.chown(jenv.home, 65534, 65534)
    p = jenv.jg("launch", str(jenv.spec("name: x\nrun: echo x\n")), "-d")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "belongs to user 'nobody'" in p.stderr and "not to you" in p.stderr
    p = jenv.jg("queue")
    assert p.returncode == 2 and "belongs to user 'nobody'" in p.stderr
    os.chown(jenv.home, 0, 0)


def test_state_dir_that_is_a_file_is_refused(jenv):
    jenv.home.write_text("not a directory\n")
    p = jenv.jg("launch", str(jenv.spec("name: x\nrun: echo x\n")), "-d")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "not a directory" in p.stderr.lower()


# ---- a full or read-only state directory --------------------------------------------------------


@pytest.fixture
def small_home(jenv, tmp_path):
    """The state directory on a tmpfs of its own (16 MiB), unmounted afterwards."""
    jenv.home.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "jobgroup-test-home",
                    str(jenv.home)], check=True)
    yield jenv.home
    jenv.jg("cancel", "--all", timeout=30)
    jenv.stop_controller()
    subprocess.run(["umount", "-l", str(jenv.home)], check=False)


def _status(jenv) -> dict:
    p = jenv.jg("controller", "status", "--json")
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    return json.loads(p.stdout)


@ROOT
def test_full_disk_never_invents_an_outcome(jenv, small_home, tmp_path):
    """The node fills the state directory's disk and exits 0. Nothing can be recorded: the
    group waits (never FAILED_CONTROLLER), `controller status` says why, a controller killed
    and restarted meanwhile does not call the node killed; once there is room again the group
    SUCCEEDS with exit code 0 recorded."""
    scratch = jenv.home / "scratch"  # on the state directory's file system, shared (workdir)
    scratch.mkdir()
    go = scratch / "go"  # (a node's /tmp may be its own: the workdir is shared)
    job = jenv.launch_d(f"""\
name: filler
workdir: {scratch}
run: |
  while [ ! -e go ]; do sleep 0.05; done
  dd if=/dev/zero of=fill bs=64k 2>/dev/null
  exit 0
""")
    wait_for(lambda: jenv.job(job)["status"] == "RUNNING", timeout=30)
    go.touch()
    fill = scratch / "fill"
    wait_for(lambda: fill.exists() and os.statvfs(jenv.home).f_bavail == 0, timeout=30)
    wait_for(lambda: "disk full" in (_status(jenv)["problem"] or ""), timeout=30)
    p = jenv.jg("controller", "status")
    assert "Problem: cannot write state in" in p.stderr and "disk full" in p.stderr
    assert jenv.job(job)["status"] == "RUNNING"  # not terminal, and not invented
    p = jenv.jg("launch", str(jenv.spec("name: more\nrun: echo more\n")), "-d")
    assert p.returncode == 1 and "disk full" in p.stderr and "Traceback" not in p.stderr
    # A controller killed now, and started again on the full disk, reads the node's record.
    os.kill(jenv.controller_pid(), signal.SIGKILL)
    time.sleep(0.2)
    assert jenv.jg("controller", "start").returncode == 0
    assert jenv.job(job)["status"] == "RUNNING"
    fill.unlink()
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED", final
    events = jenv.jg("events", str(job), check=True).stdout
    assert "exit code 0" in events and "lost" not in events and "signal 9" not in events


@pytest.fixture
def read_only(jenv):
    """Make the state directory read-only (a read-only bind mount over it) and back."""
    mounted = []

    def make(on: bool) -> None:
        if on:
            subprocess.run(["mount", "--bind", str(jenv.home), str(jenv.home)], check=True)
            mounted.append(1)
            subprocess.run(["mount", "-o", "remount,ro,bind", str(jenv.home)], check=True)
        elif mounted:
            subprocess.run(["umount", str(jenv.home)], check=True)
            mounted.pop()

    yield make
    while mounted:
        subprocess.run(["umount", "-l", str(jenv.home)], check=False)
        mounted.pop()


@ROOT
def test_read_only_state_dir(jenv, read_only, tmp_path):
    """While the state directory is read-only: a running group is not failed and its node is
    not abandoned, launch refuses (exit 1, no job left half-made), `queue` and `controller
    status` answer without a traceback; afterwards the group ends as its node did."""
    shared = tmp_path / "shared"  # the node's workdir: shared with the host (its /tmp may not be)
    shared.mkdir()
    go = shared / "go"
    job = jenv.launch_d(f"""\
name: ro
workdir: {shared}
run: |
  while [ ! -e go ]; do sleep 0.05; done
  echo done-waiting
""")
    wait_for(lambda: jenv.job(job)["status"] == "RUNNING", timeout=30)
    read_only(True)
    p = jenv.jg("launch", str(jenv.spec("name: more\nrun: echo more\n")), "-d")
    assert p.returncode == 1 and "read-only file system" in p.stderr
    assert "Traceback" not in p.stderr
    p = jenv.jg("queue", "--all")
    assert p.returncode == 0 and "Traceback" not in p.stderr
    status = _status(jenv)
    assert status["running"] and "read-only file system" in status["problem"]
    go.touch()
    time.sleep(1.5)  # the node ends; the group's teardown cannot complete while read-only
    assert jenv.job(job)["status"] != "FAILED_CONTROLLER"
    read_only(False)
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED", final
    assert "done-waiting" in jenv.log(job, "ro")
    assert len(json.loads(jenv.jg("queue", "--all", "--json", check=True).stdout)) == 1
