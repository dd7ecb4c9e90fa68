"""Staying with a launched group in the foreground: its status line while it waits, its logs
while it runs, the final status line and the exit code. Used by `launch` on both roads
(`cli.jobs` after click, `cli.fastlaunch` without it) and by `logs`; it imports neither of
them, so neither imports the other through it.

The status line (`LiveStatus`), while the group is PENDING or STARTING:
- on a terminal (stderr), one line rewritten in place: a spinner, the status, the time since
  submission and the reason (why it waits: resources, the cluster's scheduler...), cut to the
  terminal's width; it is wiped before any log line is printed and drawn again when the logs
  are idle;
- otherwise (a pipe, a file, CI), a plain line each time the status or the reason changes, never
  a carriage return;
- once the group leaves PENDING/STARTING, one line saying where it runs (`local`,
  `slurm:<Slurm job id>`, `k8s:<namespace>`) and how long after submission it started.
No library draws it: a spinner is a few escape codes, and the foreground road imports nothing
more for it (`import rich.live` takes ~34 ms here, which every foreground `launch` would pay).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import IO, TYPE_CHECKING, Callable

import click

from jobgroup.cli.output import end_line, paint, use_colour
from jobgroup.humanize import human_duration
from jobgroup.state.status import Status

if TYPE_CHECKING:
    from jobgroup import api

_WAITING = (Status.PENDING, Status.STARTING)


def exit_for(job: api.Job) -> int:
    return 0 if job.status == Status.SUCCEEDED else 1


def print_end(job: api.Job) -> None:
    click.echo(end_line(job, use_colour(sys.stderr)), err=True)


class LiveStatus:
    """The one-line status of a group while it is PENDING or STARTING (module docstring).

    `tick()` when the logs are idle (it reads the job at most every `every` seconds);
    `clear()` before printing anything else to the terminal. `get` returns the job (default:
    `api.get_job`)."""

    FRAMES_UTF8 = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
    FRAMES_ASCII = "|/-\\"

    def __init__(self, job_id: int, *, stream: IO[str] | None = None, tty: bool | None = None,
                 get: Callable[[int], api.Job] | None = None, every: float = 0.2) -> None:
        self.job_id = job_id
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        if get is None:
            from jobgroup import api

            get = api.get_job
        self.get = get
        self.every = every
        self.colour = self.tty and not os.environ.get("NO_COLOR")
        encoding = (getattr(self.stream, "encoding", "") or "").lower().replace("-", "")
        self.frames = self.FRAMES_UTF8 if encoding == "utf8" else self.FRAMES_ASCII
        self.frame = 0
        self.shown = False  # a line is drawn on the terminal now
        self.last: tuple[Status, str] | None = None
        self.checked = 0.0
        self.done = False  # the group left PENDING/STARTING (said where it runs)
        self.job: api.Job | None = None

    def tick(self, force: bool = False) -> None:
        if self.done:
            return
        now = time.monotonic()
        if force or now - self.checked >= self.every or self.job is None:
            self.checked = now
            self.job = self.get(self.job_id)
        job = self.job
        elapsed = max(0.0, time.time() - job.submitted_at)
        if job.status not in _WAITING:
            self.clear()
            self.done = True
            if job.started_at is not None:  # (a group that never started: the end line says)
                waited = max(0.0, job.started_at - job.submitted_at)
                self._say(f"Job {job.id} started on {job.infra} ({human_duration(waited)} "
                          "after submission).")
            return
        reason = job.reason or ("waiting for the controller" if job.status == Status.PENDING
                                else "starting its nodes")
        key = (job.status, reason)
        if self.tty:
            frame = self.frames[self.frame % len(self.frames)]
            self.frame += 1
            text = (f"{frame} Job {job.id} {job.status.value} {human_duration(elapsed)}: "
                    f"{reason}")
            width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
            if len(text) > width:
                text = text[:width - 1] + "…"
            self.stream.write("\r\x1b[K" + (paint(text, "dim", True) if self.colour else text))
            self.stream.flush()
            self.shown = True
        elif key != self.last and (job.status == Status.PENDING or reason != "admitted"):
            # (STARTING because admitted says nothing of a wait: "started on" follows)
            self._say(f"Job {job.id} {job.status.value} ({human_duration(elapsed)}): {reason}")
        self.last = key

    @property
    def pending(self) -> bool:
        return self.job is not None and self.job.status == Status.PENDING

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False

    def _say(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


def follow_until_end(job_id: int) -> int:
    """Stream every task's logs until the job ends, with the status line while it waits; its
    exit code (0 only if SUCCEEDED). Ctrl-C detaches (exit 130) and says how to re-attach and
    cancel."""
    from jobgroup import api
    from jobgroup.cli.logs import follow_job

    live = LiveStatus(job_id)
    try:
        live.tick(force=True)
        follow_job(job_id, task=None, rank=None, follow=True, live=live)
        final = api.wait(job_id)
    except KeyboardInterrupt:
        live.clear()
        click.echo(f"\nDetached; job {job_id} keeps running. Re-attach: jobgroup logs {job_id}"
                   f"   Cancel: jobgroup cancel {job_id}", err=True)
        return 130
    live.clear()
    print_end(final)
    return exit_for(final)
