"""The last lines of several nodes merged in the order they were written, not file by file.

A line's time is the one the log reader gives it (`LogLine.at`, where the node's file has a
times index) and otherwise an estimate from what the file tells: when the node started writing
(the node's start, from the store), when it last wrote (the file's mtime) and how much it
wrote (its size): the last byte of a file was written at its mtime, the bytes before it at the
node's average rate since it started. Lines of one node keep their order; the pieces of a line
over 1 MiB stay together; nodes that ended long ago come before the ones still writing. For a
node that writes steadily the estimate is close; for one that writes in bursts, lines of two
nodes written within a burst may be shown in the wrong order (never a node's own lines).

`TailWindow` does this in bounded memory for the live stream: it holds the lines read before
the reader first waits for more (the tail), at most `budget` characters, merges and hands them
on, then lets later lines through in the order they arrive (already time order).
"""

from __future__ import annotations

import heapq
import json
import os
from collections import deque
from typing import Any, Iterable

from jobgroup.logfiles.follow import LogLine, rotated_path
from jobgroup.state import layout
from jobgroup.state.store import Store

Key = tuple[str, int, int]  # task name, rank, attempt


def clocks(store: Store, job_id: int) -> dict[Key, tuple[float, float, float]]:
    """{(task, rank, attempt): (start, last write, bytes written)} of every log file of the job
    that exists. `start`: the node's start for its current attempt, else the job's."""
    job = store.job(job_id)
    if job is None:
        return {}
    names = {t.idx: t.name for t in store.tasks(job_id)}
    job_start = job.started_at or job.submitted_at
    out = {}
    for n in store.nodes(job_id):
        name = names.get(n.task_idx)
        if name is None:
            continue
        for attempt in range(1, n.attempt + 1):
            path = layout.log_path(store.home, job_id, name, n.rank, attempt)
            try:
                st = os.stat(path)
            except OSError:
                continue
            size = st.st_size
            try:
                size += os.stat(rotated_path(path)).st_size
            except OSError:
                pass
            start = n.started_at if attempt == n.attempt and n.started_at else job_start
            out[(name, n.rank, attempt)] = (min(start, st.st_mtime), st.st_mtime, size)
    return out


def at(line: LogLine) -> float | None:
    """When the reader says `line` was written (None where its file has no times index)."""
    return getattr(line, "at", None)


def _times(lines: list[LogLine], clock: tuple[float, float, float] | None) -> list[float]:
    """The write time of each of one file's lines (oldest first): the reader's where it
    knows, else estimated; pieces of one long line get the time of its last piece."""
    start, mtime, size = clock or (0.0, 0.0, 0)
    rate = size / max(mtime - start, 1e-3)  # bytes per second
    out = [0.0] * len(lines)
    after = 0.0
    t = mtime
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        if not line.more:  # a whole line, or the last piece of one: its own time
            known = at(line)
            if known is not None:
                t = known
            elif clock is not None:
                t = max(start, mtime - after / rate) if rate > 0 else mtime
        out[i] = t
        after += len(line.text) + (0 if line.more else 1)
    return out


def merge(by_file: dict[Key, list[LogLine]],
          clock: dict[Key, tuple[float, float, float]]) -> list[LogLine]:
    """Every line of `by_file` (each file's lines oldest first), in estimated time order."""
    streams = []
    for order, (key, lines) in enumerate(by_file.items()):
        times = _times(lines, clock.get(key))
        streams.append([(t, order, i, line) for i, (t, line) in enumerate(zip(times, lines))])
    return [item[3] for item in heapq.merge(*streams)]


def _key(line: LogLine) -> Key:
    return (line.task, line.rank, line.attempt)


def json_size(text: str) -> int:
    """Bytes `text` takes in a JSON reply (escapes: up to 12 bytes a character)."""
    return len(text) if text.isascii() and text.isprintable() else len(json.dumps(text))


def tail(lines: Iterable[LogLine], want: int, budget: int) -> tuple[dict[Key, deque], bool]:
    """The last `want` lines of each file among `lines` (read with a tail of `want` + 1: one
    more tells whether there were earlier ones), in at most `budget` bytes of JSON text (beyond,
    the oldest pieces of the file holding the most go first). (lines by file, truncated)."""
    kept: dict[Key, deque[Any]] = {}
    size: dict[Key, int] = {}
    ended: dict[Key, int] = {}  # whole lines read of each file
    dropped: set[Key] = set()
    total = 0
    for line in lines:
        key = _key(line)
        if key not in kept:
            kept[key], size[key], ended[key] = deque(), 0, 0
        kept[key].append(line)
        cost = json_size(line.text)
        size[key] += cost
        ended[key] += not line.more
        total += cost
        while total > budget:
            big = max(size, key=size.__getitem__)
            if len(kept[big]) <= 1:
                break
            gone = json_size(kept[big].popleft().text)
            size[big] -= gone
            total -= gone
            dropped.add(big)
    # `want` counts per node (its attempts together): drop the extra line where there was one
    per_node: dict[tuple[str, int], int] = {}
    for (task, rank, _), n in ended.items():
        per_node[(task, rank)] = per_node.get((task, rank), 0) + n
    truncated = bool(dropped)
    for (task, rank), n in per_node.items():
        if n <= want:
            continue
        truncated = True
        first = min((k for k in kept if k[:2] == (task, rank) and k not in dropped and kept[k]),
                    key=lambda k: k[2], default=None)
        if first is not None:
            pieces = kept[first]
            while pieces and pieces.popleft().more:
                pass
    return kept, truncated


class TailWindow:
    """Holds a stream's first lines (up to `budget` characters) to hand them on merged."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.open = True
        self._by_file: dict[Key, list[LogLine]] = {}
        self._held = 0

    def add(self, line: LogLine) -> bool:
        """Hold `line`; True when the window is full (then `close` it)."""
        self._by_file.setdefault(_key(line), []).append(line)
        self._held += len(line.text)
        return self._held >= self.budget

    def close(self, store: Store, job_id: int) -> list[LogLine]:
        """The held lines, merged; the window lets everything through from now on."""
        self.open = False
        by_file, self._by_file, self._held = self._by_file, {}, 0
        if len(by_file) <= 1:
            return [ln for lines in by_file.values() for ln in lines]
        return merge(by_file, clocks(store, job_id))
