"""Shared fixtures: a private state directory per test, the CLI as a user runs it, and a check
that no process of the test's groups (nor its controller) survives the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def processes_of(home: Path) -> list[int]:
    """Pids of processes started for groups of this state directory (their topology path)."""
    marker = f"JOBGROUP_TOPOLOGY={home}/".encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker in f.read():
                    out.append(int(entry))
        except OSError:
            continue
    return [p for p in out if p != os.getpid() and not _zombie(p)]


def processes_named(marker: str) -> list[int]:
    """Pids of processes (other than this one) whose command line holds `marker`. A test
    spells the marker whole only at run time (`exec -a "$m..."`), so that the shell that
    starts the process does not match too."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        out.append(int(entry))
            except OSError:
                pass
    return out


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


class Env:
    """A state directory plus helpers to drive jobgroup the way a user does."""

    def __init__(self, home: Path, tmp: Path) -> None:
        self.home = home
        self.tmp = tmp
        self.env = {**os.environ, "JOBGROUP_HOME": str(home), "NO_COLOR": "1"}

    def jg(self, *args: str, timeout: float = 60, check: bool = False,
           input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run `jobgroup ARGS` as a subprocess (in `cwd`, default the test's work folder);
        returns the completed process."""
        p = subprocess.run(
            [sys.executable, "-m", "jobgroup", *args], env=self.env, capture_output=True,
            text=True, timeout=timeout, input=input, cwd=cwd or self.tmp,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"jobgroup {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def spec(self, text: str, name: str = "group.yaml") -> Path:
        path = self.tmp / name
        path.write_text(textwrap.dedent(text))
        return path

    def force_level(self, level: str) -> None:
        """Run the groups of this test at isolation `level` (JOBGROUP_ISOLATION). Below
        `namespaces` a node's home is the host's: the test then gets a home of its own, so
        that nodes neither run nor change the real user's dotfiles (this machine's
        ~/.bashrc runs `pyenv rehash`, whose lock a node stopped at its start would leave in
        the real ~/.pyenv, holding every later shell 60 s). The shim's build cache stays the
        real one."""
        self.env["JOBGROUP_ISOLATION"] = level
        if level != "namespaces":
            self.own_home()

    def own_home(self) -> Path:
        """A home of this test's own for the nodes it starts where a node's home is the
        host's (levels below `namespaces`, Slurm's nodes): see `force_level`."""
        own = self.tmp / "user-home"
        own.mkdir(exist_ok=True)
        self.env.setdefault("XDG_CACHE_HOME", os.environ.get("XDG_CACHE_HOME") or
                            os.path.join(os.path.expanduser("~"), ".cache"))
        self.env["HOME"] = str(own)
        return own

    def launch_d(self, text: str, *extra: str) -> int:
        """Launch detached; returns the job id."""
        p = self.jg("launch", str(self.spec(text)), "-d", *extra, check=True)
        return int(p.stdout.split()[1])

    def wait(self, job_id: int, timeout: float = 60) -> dict:
        import json

        p = self.jg("wait", str(job_id), "--json", "--timeout", str(timeout), timeout=timeout + 30)
        return json.loads(p.stdout)

    def job(self, job_id: int) -> dict:
        import json

        jobs = json.loads(self.jg("queue", "--all", "--json", check=True).stdout)
        return next(j for j in jobs if j["id"] == job_id)

    def log(self, job_id: int, task: str, rank: int = 0) -> str:
        path = self.home / "jobs" / str(job_id) / "logs" / f"{task}-{rank}.log"
        return path.read_text() if path.exists() else ""

    def controller_pid(self) -> int | None:
        try:
            return int((self.home / "controller.pid").read_text().split()[0])
        except (OSError, ValueError):
            return None

    def stop_controller(self) -> None:
        pid = self.controller_pid()
        if pid is None or not os.path.exists(f"/proc/{pid}"):
            # No pid file, or a stale one (e.g. a full state directory kept the controller from
            # writing its own): ask it over its socket; the lock says whether one runs.
            if (self.home / "controller.lock").exists():
                self.jg("controller", "stop", timeout=30)
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:  # a controller the test process started in-process (API) is its child: reap it
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                pass
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)


def wait_for(pred, timeout: float = 30, interval: float = 0.05):
    """Poll `pred` until truthy; its value, or AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def _all_ended(e: Env) -> bool:
    import json

    p = e.jg("queue", "--all", "--json", timeout=30)
    if p.returncode != 0:
        return True  # nothing readable to wait for (a test broke the state directory on purpose)
    return all(j["status"] in _TERMINAL for j in json.loads(p.stdout))


_TERMINAL = {"SUCCEEDED", "CANCELLED", "FAILED", "FAILED_SETUP", "FAILED_PRECHECKS",
             "FAILED_NO_RESOURCE", "FAILED_CONTROLLER"}


@pytest.fixture
def jenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("JOBGROUP_HOME", str(home))
    monkeypatch.setenv("NO_COLOR", "1")
    e = Env(home, work)
    yield e
    # Cancel whatever is left, stop the controller, then insist nothing of ours survives.
    if (home / "state.db").exists():
        e.jg("cancel", "--all", timeout=30)
        try:
            wait_for(lambda: not processes_of(home), timeout=20)
            # A group's terminal status is written after its teardown (network, cgroups): stop
            # the controller only then, or it would leave the teardown undone.
            wait_for(lambda: _all_ended(e), timeout=20)
        except AssertionError:
            pass
    e.stop_controller()
    left = processes_of(home)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"processes left behind: {left}"
