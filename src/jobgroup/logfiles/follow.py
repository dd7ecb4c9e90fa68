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
    attempt: int = 1  # restarts of a node write to a new file: attempt 2, 3, ...


@dataclass
class _Source:
    task_idx: int
    task: str
    rank: int
    path: Path
    attempt: int = 1
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
    """Lines of the selected tasks (and node `rank`, if given), interleaved as they arrive.
    Every attempt of a restarted node is read in order (attempt 1's file, then 2's, ...)."""
    tasks = {t.idx: t for t in store.tasks(job_id)}
    wanted = {(i, r) for i in task_indices for r in range(tasks[i].num_nodes)
              if rank is None or r == rank}
    sources: dict[tuple[int, int, int], _Source] = {}

    def discover() -> None:
        for n in store.nodes(job_id):
            if (n.task_idx, n.rank) not in wanted:
                continue
            for attempt in range(1, n.attempt + 1):
                key = (n.task_idx, n.rank, attempt)
                if key not in sources:
                    name = tasks[n.task_idx].name
                    sources[key] = _Source(n.task_idx, name, n.rank, paths.log_path(
                        store.home, job_id, name, n.rank, attempt), attempt)

    try:
        while True:
            ended = {t.idx for t in store.tasks(job_id) if t.status.terminal}
            discover()
            finished = not follow or all(i in ended for i, _ in wanted)
            got = False
            for key in sorted(sources):
                s = sources[key]
                newer = (s.task_idx, s.rank, s.attempt + 1) in sources
                for raw in s.read():
                    got = True
                    yield LogLine(s.task, s.rank, raw.decode(errors="replace"), s.attempt)
                if finished or newer or s.task_idx in ended:
                    for raw in s.flush():
                        yield LogLine(s.task, s.rank, raw.decode(errors="replace"), s.attempt)
            if finished:
                return
            if not got:
                time.sleep(poll)
    finally:
        for s in sources.values():
            s.close()
