"""Reading node logs: one file per node (written by the node itself, never through Python),
multiplexed here line by line, in the order the lines arrive, across every selected node.

Contract of `lines()`:
- yields `LogLine(task, rank, text)` for complete lines (a last line without newline is
  yielded once its node has ended);
- with `follow=True` it keeps reading while any selected task is not in a terminal status and
  stops after a final drain once they all are, so a task that ended never hangs the reader
  (even while its siblings run);
- reads the store and the files only: no controller round trip.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from jobgroup.controller import paths
from jobgroup.state.store import Store

CHUNK = 1 << 16


@dataclass(frozen=True)
class LogLine:
    task: str
    rank: int
    text: str


@dataclass
class _Source:
    task_idx: int
    task: str
    rank: int
    path: Path
    fd: int | None = None
    partial: bytes = b""
    done: bool = field(default=False)

    def read(self) -> list[bytes]:
        """Complete lines available now (without their newline)."""
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return []
        out: list[bytes] = []
        while True:
            chunk = os.read(self.fd, CHUNK)
            if not chunk:
                break
            data = self.partial + chunk
            *complete, self.partial = data.split(b"\n")
            out.extend(complete)
            if len(chunk) < CHUNK:
                break
        return out

    def flush(self) -> list[bytes]:
        rest, self.partial = self.partial, b""
        return [rest] if rest else []

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def lines(
    store: Store,
    job_id: int,
    *,
    task_indices: list[int],
    rank: int | None = None,
    follow: bool = True,
    poll: float = 0.1,
) -> Iterator[LogLine]:
    """Lines of the selected tasks (and node `rank`, if given), interleaved as they arrive."""
    tasks = {t.idx: t for t in store.tasks(job_id)}
    sources = [
        _Source(i, tasks[i].name, r, paths.log_path(store.home, job_id, tasks[i].name, r))
        for i in task_indices
        for r in range(tasks[i].num_nodes)
        if rank is None or r == rank
    ]
    try:
        while True:
            ended = {t.idx for t in store.tasks(job_id) if t.status.terminal}
            finished = not follow or all(s.task_idx in ended for s in sources)
            got = False
            for s in sources:
                for raw in s.read():
                    got = True
                    yield LogLine(s.task, s.rank, raw.decode(errors="replace"))
                if finished or s.task_idx in ended:
                    for raw in s.flush():
                        yield LogLine(s.task, s.rank, raw.decode(errors="replace"))
            if finished:
                return
            if not got:
                time.sleep(poll)
    finally:
        for s in sources:
            s.close()
