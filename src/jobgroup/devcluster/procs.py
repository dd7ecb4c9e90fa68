"""Daemons we start and stop by pid, never by name.

A record file holds 'pid starttime' written right after the start; a process counts as ours only
while its start time (which survives exec) still matches and its command line still contains a
marker (the cluster's own config or socket path), so a recycled pid is never signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ")
    except OSError:
        return b""


def start(cmd: list[str], record: Path, log: Path, env: dict[str, str] | None = None) -> int:
    """Start a daemon in its own session, output appended to `log`; records and returns its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                             start_new_session=True, close_fds=True, env=env)
    st = start_time(p.pid)
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(f"{p.pid} {st if st is not None else 0}\n")
    tmp.replace(record)
    return p.pid


def alive(record: Path, marker: str | Callable[[bytes], bool]) -> int | None:
    """The pid in `record` if that very process still runs with `marker` in its command line
    (or, given a function, if it accepts the command line, NULs replaced by blanks)."""
    accept = marker if callable(marker) else (lambda cmd: marker.encode() in cmd)
    try:
        pid_s, st_s = record.read_text().split()[:2]
        pid, st = int(pid_s), int(st_s)
    except (OSError, ValueError):
        return None
    if start_time(pid) != st:
        return None
    # The command line reads empty for a moment while a process execs, and while Slurm's
    # daemons rewrite their process title: look again before deciding.
    for _ in range(20):
        cmd = cmdline(pid)
        if cmd:
            return pid if accept(cmd) else None
        time.sleep(0.01)
    return pid if start_time(pid) == st else None  # pid and start time: still that process


def _reap(pid: int) -> None:
    try:  # our own child (the Python API started it in this process): collect its status
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def terminate(pids: dict[int, int], timeout: float = 5.0) -> list[int]:
    """SIGTERM every pid (-> its start time), SIGKILL what is left after `timeout`; returns the
    pids that had to be killed. A pid whose start time changed is someone else's: left alone."""
    def ours(pid: int) -> bool:
        _reap(pid)
        return start_time(pid) == pids[pid]

    for pid in pids:
        if ours(pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    left = [p for p in pids if ours(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [p for p in left if ours(p)]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5.0
    still = list(left)
    while still and time.monotonic() < deadline:
        time.sleep(0.02)
        still = [p for p in still if ours(p)]
    return left


def in_net_namespaces(ns_paths: list[Path]) -> dict[int, int]:
    """Processes (pid -> start time) whose network namespace is one of `ns_paths` (bind mounts
    under /run/netns): what the emulated nodes still run, whoever started it."""
    inodes = set()
    for p in ns_paths:
        try:
            st = os.stat(p)
            inodes.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    if not inodes:
        return {}
    inos = {ino for _, ino in inodes}
    out: dict[int, int] = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if st.st_ino in inos:
            t = start_time(int(entry))
            if t is not None:
                out[int(entry)] = t
    return out
