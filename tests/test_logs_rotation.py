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
