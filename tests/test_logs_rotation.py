"""Rotated node logs: readers go from NAME.log.1 to NAME.log, and a file renamed away while
they read it is read to its end first: no line still on disk is lost or repeated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import jobgroup
from conftest import wait_for
from test_logs_reading import log_path, running_job


def _lines(path: Path, start: int, stop: int, *, end: bytes = b"\n") -> None:
    with open(path, "ab") as f:
        f.write(b"".join(b"line %d%s" % (i, end) for i in range(start, stop)))


def _rotate(path: Path) -> None:
    """What the shim does when NAME.log is full: rename it NAME.log.1, start a new NAME.log."""
    os.rename(path, path.with_name(path.name + ".1"))
    path.touch()


def test_readers_follow_rotated_files_without_losing_or_repeating_lines(jenv):
    job = running_job(jenv)
    path = log_path(jenv, job, "big")
    out = jenv.tmp / "followed.txt"
    with open(out, "wb") as f:
        p = subprocess.Popen([sys.executable, "-m", "jobgroup", "logs", str(job)], stdout=f,
                             env=jenv.env, cwd=jenv.tmp)

    def shown() -> list[str]:
        return [ln.removeprefix("(big, rank=0) ") for ln in out.read_text().splitlines()]

    try:
        _lines(path, 0, 1000)
        wait_for(lambda: "line 999" in shown())
        # Lines written just before the file is renamed away (read from the old file after
        # the rename), and a line cut in two by the rotation (joined again).
        _lines(path, 1000, 1500)
        with open(path, "ab") as f:
            f.write(b"a line cut ")
        _rotate(path)
        with open(path, "ab") as f:
            f.write(b"by the rotation\n")
        _lines(path, 1500, 2000)
        wait_for(lambda: "line 1999" in shown())
        # Two rotations before it looks again: the file it holds is deleted from disk (it still
        # reads it to its end), then comes NAME.log.1, then NAME.log.
        _lines(path, 2000, 2500)
        _rotate(path)
        _lines(path, 2500, 3000)
        _rotate(path)
        _lines(path, 3000, 3500)
        wait_for(lambda: "line 3499" in shown())
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=30) == 130
    assert shown() == ["started", *(f"line {i}" for i in range(1500)),
                       "a line cut by the rotation", *(f"line {i}" for i in range(1500, 3500))]

    # A reader that starts now finds what is still on disk, NAME.log.1 first.
    on_disk = [f"line {i}" for i in range(2500, 3500)]
    got = jenv.jg("logs", str(job), "--no-follow", check=True).stdout.splitlines()
    assert [ln.removeprefix("(big, rank=0) ") for ln in got] == on_disk
    assert [ln.text for ln in jobgroup.logs(job, tail=700, home=jenv.home)] == on_disk[-700:]
    assert [ln.text for ln in jobgroup.logs(job, tail=3, home=jenv.home)] == on_disk[-3:]


def _launch_capped(jenv, text: str, cap: str | None = "64K") -> int:
    """Launch detached with JOBGROUP_LOG_MAX=cap in the launching environment only."""
    saved = jenv.env
    jenv.env = {**saved, "JOBGROUP_LOG_MAX": cap} if cap is not None else saved
    try:
        return jenv.launch_d(text)
    finally:
        jenv.env = saved


def _on_disk(path: Path) -> list[str]:
    old = path.with_name(path.name + ".1")
    return ((old.read_text() if old.exists() else "") + path.read_text()).splitlines()


def _numbers_then(lines: list[str], last: int, tail: list[str]) -> int:
    """Asserts `lines` are consecutive numbers up to `last`, then `tail`; returns the first."""
    assert lines[len(lines) - len(tail):] == tail
    numbers = [int(x) for x in lines[:len(lines) - len(tail)]]
    assert numbers == list(range(numbers[0], last + 1)), "lines missing or out of order"
    return numbers[0]


def test_log_cap_rotates_keeps_the_newest_lines_and_is_kept_with_the_job(jenv):
    # A pipeline: task b starts after a controller restart whose environment has no cap.
    job = _launch_capped(jenv, """
        name: capped
        execution: serial
        ---
        name: a
        workdir: .
        run: |
          readlink /proc/$$/fd/1
          while [ ! -e go ]; do sleep 0.05; done
          seq 1 100000
          echo last
        ---
        name: b
        run: seq 1 100000
        """)
    wait_for(lambda: "pipe:" in jenv.log(job, "a"))  # its output goes through the shim's copier
    jenv.stop_controller()
    jenv.jg("controller", "start", check=True)
    (jenv.tmp / "go").touch()
    assert jenv.wait(job)["status"] == "SUCCEEDED"

    for task, tail in (("a", ["last"]), ("b", [])):
        path = log_path(jenv, job, task)
        old = path.with_name(path.name + ".1")
        assert 0 < path.stat().st_size <= 64 << 10 and 32 << 10 < old.stat().st_size <= 64 << 10
        assert old.read_text().endswith("\n")  # rotated at a line end
        first = _numbers_then(_on_disk(path), 100000, tail)  # the newest lines, whole
        shown = jenv.jg("logs", str(job), task, "--no-follow", check=True).stdout.splitlines()
        assert [ln.removeprefix(f"({task}, rank=0) ") for ln in shown] == _on_disk(path)
        assert first > 75000  # no more than twice the cap is kept
        # each file's times went with it (the index names its file: logs --timestamps)
        assert path.with_name(path.name + ".times").exists()
        assert old.with_name(old.name + ".times").exists()
        stamped = jenv.jg("logs", str(job), task, "--no-follow", "--timestamps",
                          check=True).stdout.splitlines()
        assert len(stamped) == len(shown) and not any(ln.startswith("-") for ln in stamped)

    # Without the variable, a launch is not capped: the copier (which records when output
    # came, for logs --timestamps) never rotates, and every line is kept.
    plain = _launch_capped(jenv, """
        name: plain
        run: |
          readlink /proc/$$/fd/1
          seq 1 100000
        """, cap=None)
    assert jenv.wait(plain)["status"] == "SUCCEEDED"
    path = log_path(jenv, plain, "plain")
    assert not path.with_name(path.name + ".1").exists()
    lines = path.read_text().splitlines()
    assert lines[0].startswith("pipe:") and lines[1:] == [str(i) for i in range(1, 100001)]


def test_a_follower_sees_every_line_across_the_shims_rotations(jenv):
    job = _launch_capped(jenv, """
        name: w
        workdir: .
        run: |
          for k in $(seq 0 19); do
            while [ ! -e go$k ]; do sleep 0.05; done
            seq $((k * 5000 + 1)) $((k * 5000 + 5000))
          done
        """)
    out = jenv.tmp / "followed.txt"
    with open(out, "wb") as f:
        p = subprocess.Popen([sys.executable, "-m", "jobgroup", "logs", str(job)], stdout=f,
                             env=jenv.env, cwd=jenv.tmp)
    try:
        for k in range(20):  # ~29 KB a batch: at most one rotation between two looks
            (jenv.tmp / f"go{k}").touch()
            wait_for(lambda k=k: f"(w, rank=0) {k * 5000 + 5000}\n" in out.read_text())
        assert p.wait(timeout=60) == 0  # the job ended: the follower returns
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            p.wait(timeout=30)
    shown = [ln.removeprefix("(w, rank=0) ") for ln in out.read_text().splitlines()]
    assert shown == [str(i) for i in range(1, 100001)]
    path = log_path(jenv, job, "w")
    assert path.with_name(path.name + ".1").exists()
    _numbers_then(_on_disk(path), 100000, [])


def test_a_bad_log_cap_is_a_clear_error(jenv):
    for attempt in range(2):  # without a controller, then through a running one
        for value, words in (("lots", "expected a size"), ("10K", "at least 64K")):
            jenv.env = {**jenv.env, "JOBGROUP_LOG_MAX": value}
            p = jenv.jg("launch", str(jenv.spec("name: x\nrun: echo hi\n")), "-d")
            assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
            assert "JOBGROUP_LOG_MAX" in p.stderr and words in p.stderr, p.stderr
        jenv.env.pop("JOBGROUP_LOG_MAX")
        if attempt == 0:
            jenv.launch_d("name: ok\nrun: echo hi\n")  # starts the controller


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return True
    return state in (b"Z", b"X")


def test_the_shims_copier_outlives_a_stop_and_drains_after_a_kill(tmp_path):
    from jobgroup.backends.local import shim

    node = ('trap "echo bye from $$; exit 0" TERM; echo up; '
            'while :; do sleep 0.05; done')
    log = tmp_path / "n.log"
    cmd = shim.shim_command(tmp_path / "s", log, ["sh", "-c", node], grace=30,
                            log_max=64 << 10)
    p = subprocess.Popen(cmd, start_new_session=True)
    try:
        wait_for(lambda: "up" in _text(log))
        assert len(_children(p.pid)) == 2  # the node and the copier
        p.send_signal(signal.SIGTERM)  # a stop: the node says goodbye through the copier
        assert p.wait(timeout=30) == 0
        text = log.read_text()
        assert text.startswith("up\n") and "bye from " in text, text
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGUSR1)
            p.wait(timeout=30)

    # The shim SIGKILLed: its node's main process dies with it (PDEATHSIG); the copier keeps
    # draining while a descendant can still write (here `sleep`, until the controller kills
    # the node's session, as it does for a shim that vanished), then ends on its own.
    log2 = tmp_path / "k.log"
    cmd = shim.shim_command(tmp_path / "s2", log2, ["sh", "-c", "seq 1 5000; sleep 300"],
                            log_max=64 << 10)
    p = subprocess.Popen(cmd, start_new_session=True)
    node = 0
    try:
        wait_for(lambda: len(_children(p.pid)) == 2 and "5000\n" in _text(log2))
        node = shim.read_pid_file(tmp_path / "s2").child_pid
        copier = next(k for k in _children(p.pid) if k != node)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        wait_for(lambda: _gone(node))
        assert not _gone(copier)
        os.killpg(node, signal.SIGKILL)  # what is left of the node (`sleep`)
        wait_for(lambda: _gone(copier))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)
        if node:
            try:
                os.killpg(node, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert log2.read_text() == "".join(f"{i}\n" for i in range(1, 5001))
