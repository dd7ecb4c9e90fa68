"""The local backend's C shim, with real processes (no mocks).

Every process a test starts is killed by pid in a finalizer, even when the test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jobgroup.backends.local import shim

TIMEOUT = 30.0  # generous: only there so a broken shim fails instead of hanging


# ---------------------------------------------------------------- helpers


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat, or None when there is no such process."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2 :].split()[19])


def proc_state(pid: int) -> str | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].split()[0].decode()


def gone(pid: int, started: int) -> bool:
    """The process (pid, start time) no longer runs (absent, reused or a zombie)."""
    st = start_time(pid)
    return st is None or st != started or proc_state(pid) in ("Z", "X")


def wait_until(cond, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def read_pid(path: Path) -> int:
    wait_until(lambda: path.exists() and path.read_text().endswith("\n"), f"{path}")
    return int(path.read_text())


class Procs:
    """Tracks what a test starts; the finalizer SIGKILLs whatever still runs, by pid."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.popens: list[subprocess.Popen] = []
        self.pids: list[tuple[int, int]] = []  # (pid, start time): never kill a reused pid
        self.cgroup: Path | None = None  # set by the `tracking` fixture: shims get -G
        self.cgroups: list[Path] = []

    def track(self, pid: int) -> int:
        st = start_time(pid)
        if st is not None:
            self.pids.append((pid, st))
        return pid

    def shim(self, argv: list[str], *, grace: float | None = None, workdir=None,
             name: str = "node", pass_fds=(), umask: int | None = None,
             where: Path | None = None) -> tuple[subprocess.Popen, Path, Path]:
        where = self.tmp if where is None else where
        status, log = where / f"{name}.status", where / f"{name}.log"
        cg = None
        if self.cgroup is not None:
            cg = self.cgroup / name
            self.cgroups.append(cg)
        cmd = shim.shim_command(status, log, argv, grace=grace, workdir=workdir, cgroup=cg,
                                umask=umask)
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True, pass_fds=pass_fds)
        self.popens.append(p)
        return p, status, log

    def wait_child(self, status: Path) -> int:
        """Wait for the shim's pid file; track and return the child pid."""
        wait_until(lambda: shim.read_pid_file(status) is not None, "the pid file")
        return self.track(shim.read_pid_file(status).child_pid)

    def cleanup(self) -> None:
        # First let each live shim kill its whole tree (it finds what the test never saw).
        for p in self.popens:
            if p.poll() is None:
                p.send_signal(signal.SIGUSR1)
        for p in self.popens:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for pid, st in self.pids:
            if start_time(pid) == st:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.popens:
            if p.poll() is None:
                p.kill()
            p.wait()
            if p.stderr:
                p.stderr.close()
        for cg in [*self.cgroups, *([self.cgroup] if self.cgroup else [])]:
            try:
                cg.rmdir()
            except FileNotFoundError:
                pass


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("JOBGROUP_HOME", str(h))
    monkeypatch.setenv("JOBGROUP_CACHE", str(h / "bin"))
    return h


@pytest.fixture
def procs(tmp_path, home, request):
    p = Procs(tmp_path)
    request.addfinalizer(p.cleanup)
    return p


def _v2_parent() -> Path | None:
    from jobgroup.resources import cgroups

    parent = cgroups.tracking_parent()
    return Path(parent) if parent else None


@pytest.fixture(params=["walk", "cgroup"])
def tracking(request, procs, tmp_path):
    """Run a stopping test twice: the shim finding the node's processes by walking /proc, and
    by reading the node's cgroup v2 (-G; skipped where no cgroup2 hierarchy is writable)."""
    if request.param == "cgroup":
        parent = _v2_parent()
        if parent is None:
            pytest.skip("no writable cgroup2 hierarchy here")
        procs.cgroup = parent / f"test-shim-{os.getpid()}-{tmp_path.name}"
        procs.cgroup.mkdir()
    return request.param


def in_cgroup(pid: int, cg: Path) -> bool:
    """Whether process `pid` is in cgroup v2 directory `cg` (its /proc/PID/cgroup `0::` line)."""
    line = next(l for l in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                if l.startswith("0::"))
    return str(cg).endswith(line[3:])


def finish(p: subprocess.Popen) -> int:
    return p.wait(timeout=TIMEOUT)


# ---------------------------------------------------------------- build


def test_source_compiles_cleanly_with_werror(tmp_path):
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    r = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-std=c11", "-D_GNU_SOURCE",
                        "-o", str(tmp_path / "s"), str(shim.SHIM_SOURCE)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_concurrent_first_use_compiles_one_binary(home):
    results: list[str] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(shim.shim_path())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not errors
    assert len(results) == 8 and len(set(results)) == 1
    binaries = [f for f in (home / "bin").iterdir() if not f.name.endswith(".lock")]
    assert [f.name for f in binaries] == [Path(results[0]).name]  # no temp files left
    assert os.access(results[0], os.X_OK)


def test_concurrent_first_use_across_processes(home):
    code = "from jobgroup.backends.local import shim; print(shim.shim_path())"
    ps = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
          for _ in range(4)]
    try:
        outs = {p.communicate(timeout=TIMEOUT)[0].strip() for p in ps}
    finally:
        for p in ps:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert len(outs) == 1 and all(p.returncode == 0 for p in ps)
    assert len([f for f in (home / "bin").iterdir() if not f.name.endswith(".lock")]) == 1


def test_missing_compiler_is_a_clear_error(home, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler-xyz")
    with pytest.raises(shim.ShimBuildError, match="no-such-compiler-xyz") as info:
        shim.shim_path()
    assert info.value.exit_code == 1
    monkeypatch.delenv("CC")
    monkeypatch.setenv("PATH", str(home))  # an empty PATH: no cc, gcc, clang
    with pytest.raises(shim.ShimBuildError, match="No C compiler found"):
        shim.shim_path()


def test_unwritable_cache_dir_is_a_clear_error(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("JOBGROUP_CACHE", str(blocker / "cache"))  # under a regular file
    with pytest.raises(shim.ShimBuildError, match="JOBGROUP_CACHE"):
        shim.shim_path()


def test_compiler_errors_are_reported(home, monkeypatch, tmp_path):
    fake = tmp_path / "fakecc"
    fake.write_text("#!/bin/sh\necho 'shim.c:1: error: the sky is falling' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    with pytest.raises(shim.ShimBuildError, match="the sky is falling"):
        shim.shim_path()


# ---------------------------------------------------------------- outcomes


def test_exit_code_recorded(procs):
    p, status, _ = procs.shim(["sh", "-c", "exit 3"])
    assert finish(p) == 3
    st = shim.read_status(status)
    assert st is not None
    assert (st.exit_code, st.signal, st.stopped) == (3, None, False)
    info = shim.read_pid_file(status)
    assert info is not None and info.child_pid == st.pid
    assert status.read_text().endswith("}\n") and "\n" not in status.read_text()[:-1]
    assert not Path(f"{status}.tmp").exists()


def test_signal_death_recorded(procs):
    p, status, _ = procs.shim(["sh", "-c", "kill -KILL $$"])
    assert finish(p) == 128 + 9
    st = shim.read_status(status)
    assert st is not None
    assert (st.exit_code, st.signal, st.core, st.stopped) == (None, 9, False, False)
    assert st.returncode == 137


def test_output_lands_in_log_in_order_and_appends(procs, tmp_path):
    log = tmp_path / "node.log"
    log.write_text("earlier run\n")
    script = "echo one; echo two >&2; echo three; echo four >&2"
    p, _, log = procs.shim(["sh", "-c", script])
    assert finish(p) == 0
    assert log.read_text() == "earlier run\none\ntwo\nthree\nfour\n"


def test_stdin_is_dev_null_and_no_fds_leak(procs):
    r, w = os.pipe()  # an fd the test process holds; it must not reach the node
    try:
        p, _, log = procs.shim(["sh", "-c", "cat; ls -l /proc/self/fd/"], pass_fds=(w,))
        assert finish(p) == 0
    finally:
        os.close(r)
        os.close(w)
    # cat read EOF at once (the test would hang otherwise); the pipe did not reach the node.
    listing = log.read_text()
    assert "/dev/null" in listing and "pipe:" not in listing


def test_exec_failure_is_127_with_message(procs):
    p, status, log = procs.shim(["/no/such/program-xyz", "arg"])
    assert finish(p) == 127
    assert shim.read_status(status).exit_code == 127
    assert "cannot execute '/no/such/program-xyz': No such file or directory" in log.read_text()


def test_workdir_applied(procs, tmp_path):
    wd = tmp_path / "work dir"
    wd.mkdir()
    p, _, log = procs.shim(["pwd"], workdir=wd)
    assert finish(p) == 0
    assert log.read_text().strip() == str(wd)


def test_bad_workdir_is_exit_1_with_message(procs, tmp_path):
    p, status, log = procs.shim(["pwd"], workdir=tmp_path / "missing")
    assert finish(p) == 1
    assert shim.read_status(status).exit_code == 1
    assert "cannot change directory" in log.read_text()


def test_startup_errors(procs, tmp_path):
    sp = shim.shim_path()
    r = subprocess.run([sp, "-o", str(tmp_path / "l"), "--", "true"], capture_output=True,
                       text=True, timeout=TIMEOUT)
    assert r.returncode == shim.EXIT_USAGE and "usage:" in r.stderr
    r = subprocess.run([sp, "-s", str(tmp_path / "s"), "-o", str(tmp_path / "no/dir/l"), "--",
                        "true"], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == shim.EXIT_STARTUP and "cannot open log file" in r.stderr
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.pid").exists()
    r = subprocess.run([sp, "-s", str(tmp_path / "s"), "-o", str(tmp_path / "l"), "-g", "soon",
                        "--", "true"], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == shim.EXIT_USAGE and "grace" in r.stderr


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs of our own (root only), unmounted afterwards: a disk that fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "jobgroup-test", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_outcome_recorded_when_the_node_fills_the_disk(procs, small_fs):
    """The node fills the state directory's file system, then exits 0: the record says 0 (its
    space was reserved before the node started), not a lost node."""
    fill = "dd if=/dev/zero of=fill bs=64k 2>/dev/null; test ! -s /nonexistent; exit 0"
    p, status, _ = procs.shim(["sh", "-c", fill], workdir=small_fs, where=small_fs)
    assert finish(p) == 0
    assert os.statvfs(small_fs).f_bavail == 0  # really full
    st = shim.read_status(status)
    assert st is not None and (st.exit_code, st.signal) == (0, None)
    assert not Path(f"{status}.rsv").exists()


def test_full_disk_at_start_starts_nothing(procs, small_fs, tmp_path):
    with open(small_fs / "fill", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    marker = tmp_path / "ran"
    r = subprocess.run([shim.shim_path(), "-s", str(small_fs / "s"), "-o", str(tmp_path / "l"),
                        "--", "touch", str(marker)], capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == shim.EXIT_STARTUP
    assert "cannot reserve the status file" in r.stderr and "No space left" in r.stderr
    assert not marker.exists()
    assert not (small_fs / "s").exists() and not (small_fs / "s.pid").exists()


def test_umask_of_the_node(procs, tmp_path):
    p, status, _ = procs.shim(["sh", "-c", "umask; touch made"], workdir=tmp_path, umask=0o027)
    assert finish(p) == 0
    assert (tmp_path / "node.log").read_text().strip() == "0027"
    assert (tmp_path / "made").stat().st_mode & 0o777 == 0o640
    r = subprocess.run([shim.shim_path(), "-s", str(tmp_path / "s"), "-o", str(tmp_path / "l"),
                        "-m", "999", "--", "true"], capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == shim.EXIT_USAGE and "umask" in r.stderr


def test_stale_status_removed_at_start(procs):
    p, status, _ = procs.shim(["sh", "-c", "exit 5"])
    assert finish(p) == 5
    old_child = shim.read_status(status).pid
    p, status, _ = procs.shim(["sleep", "1000"])
    wait_until(lambda: getattr(shim.read_pid_file(status), "child_pid", old_child) != old_child,
               "the new pid file")
    procs.track(shim.read_pid_file(status).child_pid)
    assert shim.read_status(status) is None  # the old record does not describe this run
    p.send_signal(signal.SIGUSR1)
    finish(p)


# ---------------------------------------------------------------- stopping


def test_stop_reaches_child_and_setsid_grandchild(procs, tmp_path, tracking):
    marker = tmp_path / "marker"
    # The grandchild leaves the session, traps TERM (proving TERM, not KILL, reached it), and
    # has a child of its own that becomes an orphan when it exits.
    gc = tmp_path / "gc.sh"
    gc.write_text(f"echo $$ > {tmp_path}/gc.pid; trap 'echo gc-term >> {marker}; exit 0' TERM\n"
                  f"sleep 1000 & echo $! > {tmp_path}/ggc.pid; wait\n")
    script = f"setsid sh {gc} & exec sleep 1000"
    # A long grace: the test only ends in time if SIGTERM does the job.
    p, status, _ = procs.shim(["sh", "-c", script], grace=600)
    child = procs.wait_child(status)
    pids = [child, procs.track(read_pid(tmp_path / "gc.pid")),
            procs.track(read_pid(tmp_path / "ggc.pid"))]
    starts = {pid: start_time(pid) for pid in pids}
    sids = {pid: int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[3])
            for pid in pids}
    assert sids[pids[1]] == pids[1] != sids[child] == child  # really another session
    if tracking == "cgroup":  # every process of the node is in its cgroup, the shim is not
        assert all(in_cgroup(pid, procs.cgroups[0]) for pid in pids)
        assert not in_cgroup(p.pid, procs.cgroups[0])

    p.send_signal(signal.SIGTERM)
    assert finish(p) == 128 + signal.SIGTERM
    st = shim.read_status(status)
    assert (st.signal, st.stopped, st.pid) == (signal.SIGTERM, True, child)
    assert marker.read_text() == "gc-term\n"
    for pid in pids:
        assert gone(pid, starts[pid]), f"process {pid} outlived the shim"
    if tracking == "cgroup":
        assert (procs.cgroups[0] / "cgroup.procs").read_text() == ""


def test_child_ignoring_term_is_killed_after_grace(procs, tmp_path, tracking):
    script = f"trap '' TERM; echo $$ > {tmp_path}/ready; while :; do sleep 1; done"
    p, status, _ = procs.shim(["sh", "-c", script], grace=0.5)
    child = procs.wait_child(status)
    read_pid(tmp_path / "ready")  # the trap is in place
    p.send_signal(signal.SIGTERM)
    assert finish(p) == 128 + 9
    st = shim.read_status(status)
    assert (st.signal, st.stopped) == (9, True)
    assert start_time(child) is None or proc_state(child) == "Z"


def test_sigint_and_sighup_are_stop_requests(procs):
    for sig in (signal.SIGINT, signal.SIGHUP):
        p, status, _ = procs.shim(["sleep", "1000"], name=f"n{int(sig)}")
        procs.wait_child(status)
        p.send_signal(sig)
        assert finish(p) == 128 + signal.SIGTERM
        assert shim.read_status(status).stopped


def test_sigusr1_kills_now(procs, tmp_path, tracking):
    script = f"trap '' TERM; echo $$ > {tmp_path}/ready; while :; do sleep 1; done"
    p, status, _ = procs.shim(["sh", "-c", script], grace=600)
    procs.wait_child(status)
    read_pid(tmp_path / "ready")
    p.send_signal(signal.SIGUSR1)
    assert finish(p) == 128 + 9
    st = shim.read_status(status)
    assert (st.signal, st.stopped) == (9, True)


def test_leftovers_cleaned_after_normal_exit(procs, tmp_path, tracking):
    script = (f"sleep 1000 & echo $! > {tmp_path}/bg.pid; "
              f"setsid sh -c 'echo $$ > {tmp_path}/sid.pid; exec sleep 1000' & "
              f"while [ ! -s {tmp_path}/sid.pid ]; do sleep 0.05; done; exit 4")
    p, status, _ = procs.shim(["sh", "-c", script], grace=600)
    procs.wait_child(status)
    pids = [procs.track(read_pid(tmp_path / n)) for n in ("bg.pid", "sid.pid")]
    starts = {pid: start_time(pid) for pid in pids}
    assert finish(p) == 4
    st = shim.read_status(status)
    assert (st.exit_code, st.stopped) == (4, False)
    for pid in pids:
        assert gone(pid, starts[pid]), f"process {pid} outlived the shim"


def test_sigkill_of_shim_kills_direct_child(procs):
    p, status, _ = procs.shim(["sleep", "1000"])
    child = procs.wait_child(status)
    started = start_time(child)
    info = shim.read_pid_file(status)
    assert info.shim_start_time == start_time(p.pid)
    p.kill()
    p.wait(timeout=TIMEOUT)
    wait_until(lambda: gone(child, started), "PDEATHSIG to kill the child")
    assert shim.read_status(status) is None  # nothing recorded: the controller settles it


def test_processes_forked_while_stopping_are_killed(procs, tmp_path, tracking):
    # On TERM the node spawns more processes (in new sessions, too) and carries on.
    script = (f"trap 'sleep 1000 & setsid sleep 1000 & echo x >> {tmp_path}/forked' TERM; "
              f"echo $$ > {tmp_path}/ready; while :; do sleep 0.1; done")
    p, status, _ = procs.shim(["sh", "-c", script], grace=1)
    procs.wait_child(status)
    read_pid(tmp_path / "ready")
    p.send_signal(signal.SIGTERM)
    assert finish(p) == 128 + 9
    assert (tmp_path / "forked").exists()
    assert shim.read_status(status).stopped


def test_unusable_cgroup_falls_back_to_walking_proc(procs, tmp_path):
    """-G naming a directory that is no cgroup: a note in the log, and stopping still reaches
    a setsid'ed grandchild (by walking /proc)."""
    not_a_cgroup = tmp_path / "plain-dir"
    script = f"setsid sleep 1000 & echo $! > {tmp_path}/gc.pid; exec sleep 1000"
    status, log = tmp_path / "n.status", tmp_path / "n.log"
    p = subprocess.Popen(shim.shim_command(status, log, ["sh", "-c", script], grace=600,
                                           cgroup=not_a_cgroup),
                         stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    procs.popens.append(p)
    procs.wait_child(status)
    gc = procs.track(read_pid(tmp_path / "gc.pid"))
    started = start_time(gc)
    p.send_signal(signal.SIGTERM)
    assert finish(p) == 128 + signal.SIGTERM
    assert gone(gc, started)
    assert "walking /proc" in log.read_text()


def test_shim_outlives_its_parent(procs, tmp_path):
    """The controller may die at any moment: the shim carries on and records the end."""
    go = tmp_path / "go"
    status, log = tmp_path / "n.status", tmp_path / "n.log"
    cmd = shim.shim_command(status, log,
                            ["sh", "-c", f"while [ ! -e {go} ]; do sleep 0.05; done; exit 7"])
    spawner = ("import os, subprocess, sys\n"
               "p = subprocess.Popen(sys.argv[1:], start_new_session=True)\n"
               "print(p.pid, flush=True)\n"
               "os.kill(os.getpid(), 9)\n")
    parent = subprocess.run([sys.executable, "-c", spawner, *cmd], capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert parent.returncode == -9
    shim_pid = procs.track(int(parent.stdout))
    shim_start = start_time(shim_pid)
    child = procs.wait_child(status)
    assert not gone(shim_pid, shim_start) and not gone(child, start_time(child))
    go.touch()
    wait_until(lambda: shim.read_status(status) is not None, "the status file")
    assert shim.read_status(status).exit_code == 7
    wait_until(lambda: gone(shim_pid, shim_start), "the orphaned shim to exit")


# ---------------------------------------------------------------- cost


def test_idle_shim_pss_under_1mb(procs):
    p, status, _ = procs.shim(["sleep", "1000"])
    procs.wait_child(status)
    rollup = Path(f"/proc/{p.pid}/smaps_rollup").read_text()
    pss_kb = next(int(line.split()[1]) for line in rollup.splitlines()
                  if line.startswith("Pss:"))
    print(f"idle shim PSS: {pss_kb} kB")
    assert pss_kb < 1024
    # ~0 CPU while waiting: blocked in sigtimedwait, not polling.
    assert proc_state(p.pid) == "S"
    p.send_signal(signal.SIGTERM)
    finish(p)


# ---------------------------------------------------------------- readers


@pytest.mark.parametrize("text", [
    "", "{", '{"exit_code": 0, "pid": 5}',  # no newline: torn
    "garbage\n", "[1]\n", '{"pid": 5}\n', '{"exit_code": 0, "signal": 9, "pid": 5}\n',
    '{"exit_code": true, "pid": 5}\n', '{"exit_code": 0}\n', "\xff\xfe\n",
])
def test_read_status_tolerates_garbage(tmp_path, text):
    f = tmp_path / "s"
    f.write_bytes(text.encode("utf-8", "surrogateescape"))
    assert shim.read_status(f) is None


def test_readers_missing_and_valid(tmp_path):
    f = tmp_path / "s"
    assert shim.read_status(f) is None and shim.read_pid_file(f) is None
    f.write_text('{"signal": 11, "core": true, "stopped": true, "pid": 42}\n')
    assert shim.read_status(f) == shim.ShimStatus(pid=42, signal=11, core=True, stopped=True)
    for bad in ("", "12", "12 34", "x 34\n", "-3 4\n"):
        Path(f"{f}.pid").write_text(bad)
        assert shim.read_pid_file(f) is None
    Path(f"{f}.pid").write_text("12 34\n")
    assert shim.read_pid_file(f) == shim.ShimPid(child_pid=12, shim_start_time=34)
