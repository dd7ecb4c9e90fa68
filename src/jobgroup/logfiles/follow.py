"""Reading node logs: one file per node (written by the node itself, never through Python),
multiplexed here line by line, in the order the lines arrive, across every selected node.

Contract of `lines()`:
- yields `LogLine(task, rank, text, attempt, more)` for complete lines, without their newline
  (a last line without newline is yielded once its node has ended or a later attempt exists);
- memory does not grow with the size of the files: they are read in `CHUNK` blocks, lines are
  yielded as they are found (never collected), and a line is held whole only up to `MAX_LINE`
  bytes. A longer line is delivered in pieces of at most `MAX_LINE` bytes, cut between UTF-8
  characters, every piece but the last with `more=True`: the pieces' texts joined give the line
  back, no byte dropped or added. Bytes that are not UTF-8 read as U+FFFD. Work is linear in
  the bytes read;
- `tail=N`: start with the last N lines of each selected node (counted over its attempts,
  newest first; a line delivered in pieces counts once), found by reading its files backwards
  from their end, never from their start; `tail=0`: only what comes next. Applies to the files
  there are when reading starts; a node that has not written yet is read from its start;
- with `follow=True` it keeps reading while any selected task is not in a terminal status and
  stops after a final drain once they all are, so a task that ended never hangs the reader
  (even while its siblings run); while following, one file gives at most `ROUND` bytes per turn,
  so a node that writes without pause cannot starve the others. Without `follow` each node is
  read to its end in turn (task, rank, attempt order);
- rotation (the per-node size cap, `JOBGROUP_LOG_MAX`): when NAME.log is full the shim renames
  it NAME.log.1 (replacing the previous NAME.log.1) and starts a new NAME.log. A reader starts
  with NAME.log.1 when there is one, then NAME.log; a file it holds that is renamed away is read
  to its end before it moves on to the file(s) that replaced it, so no line still on disk is
  skipped or repeated, and a line cut by the rotation is joined again. A file rotated away twice
  before a reader got to it is gone from disk, and from that reader;
- `on_idle()`, if given, is called each time everything there is has been yielded and the
  reader is about to wait for more (e.g. to flush buffered output);
- reads the store and the files only: no controller round trip.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Callable, Iterator

from jobgroup.logfiles.times import Times
from jobgroup.state import layout as paths
from jobgroup.state.store import Store

CHUNK = 1 << 16
MAX_LINE = 1 << 20  # longest piece of a line held and delivered at once
ROUND = 4 << 20  # bytes one file gives per turn while following (fairness between nodes)


def rotated_path(path: Path) -> Path:
    """Where a full log file goes when the size cap rotates it: NAME.log -> NAME.log.1."""
    return path.with_name(path.name + ".1")


@dataclass(frozen=True)
class LogLine:
    task: str
    rank: int
    text: str
    attempt: int = 1  # restarts of a node write to a new file: attempt 2, 3, ...
    more: bool = False  # a piece of a line longer than MAX_LINE; the node's next piece goes on
    at: float | None = None  # when it came (seconds since the epoch; `times.py`), if asked


Piece = tuple[bytes, bool]  # (bytes, more)


def _cut(data: bytes, limit: int) -> int:
    """Length of the longest prefix of `data` of at most `limit` bytes that does not end inside
    a UTF-8 sequence (`limit` itself when the bytes there are not UTF-8 anyway)."""
    if len(data) <= limit:
        return len(data)
    k = limit
    while k > limit - 3 and (data[k] & 0xC0) == 0x80:  # a continuation byte: back up to its lead
        k -= 1
    return k if (data[k] & 0xC0) != 0x80 and k > 0 else limit


def _pieces(line: bytes) -> Iterator[Piece]:
    """A whole line as pieces of at most MAX_LINE bytes (only the last has more=False)."""
    while len(line) > MAX_LINE:
        k = _cut(line, MAX_LINE)
        yield line[:k], True
        line = line[k:]
    yield line, False


class _Splitter:
    """Cuts a byte stream into lines; keeps the unfinished line as a list of blocks (joined once,
    when it ends or reaches MAX_LINE), so a long line costs linear time."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def feed(self, data: bytes) -> list[Piece]:
        """The pieces `data` completes (a list: at most a block's worth of lines, plus pieces
        of a long line)."""
        if b"\n" not in data:
            self.parts.append(data)
            self.size += len(data)
            return self._spill()
        found = data.split(b"\n")
        rest = found.pop()
        out: list[Piece] = []
        if self.parts:
            self.parts.append(found[0])
            first = b"".join(self.parts)
            out.extend(_pieces(first))
            del found[0]
        out.extend(zip(found, repeat(False)))
        self.parts, self.size = ([rest], len(rest)) if rest else ([], 0)
        if self.size > MAX_LINE:
            out.extend(self._spill())
        return out

    def _spill(self) -> list[Piece]:
        out: list[Piece] = []
        while self.size > MAX_LINE:
            joined = b"".join(self.parts)
            k = _cut(joined, MAX_LINE)
            out.append((joined[:k], True))
            self.parts, self.size = [joined[k:]], len(joined) - k
        return out

    def flush(self) -> list[Piece]:
        line = b"".join(self.parts)
        self.parts, self.size = [], 0
        return list(_pieces(line)) if line else []


def _open(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


@dataclass
class _Source:
    """One attempt of one node: its file, and the files that replace it when rotated."""

    task_idx: int
    task: str
    rank: int
    path: Path
    attempt: int = 1
    fd: int | None = None
    ident: tuple[int, int] | None = None
    queue: list[tuple[int, tuple[int, int]]] = field(default_factory=list)  # next files, in order
    split: _Splitter = field(default_factory=_Splitter)
    eof: bool = False  # the last read stopped because there was nothing more (not its budget)
    done: bool = False  # finished (or skipped by a tail): never read again
    fpos: int = 0  # offset in the open file where the next read starts
    times: Times | None = None  # the open file's times, once asked for

    def files(self) -> bool:
        """Open this attempt's files, oldest first: NAME.log.1 (if any), then NAME.log. False
        while there is none. NAME.log is opened first: if a rotation happens in between,
        NAME.log.1 is then the very file already open, and is not read twice."""
        if self.fd is not None:
            return True
        cur = _open(self.path)
        old = _open(rotated_path(self.path))
        chain = [(fd, _ident(fd)) for fd in (old, cur) if fd is not None]
        if len(chain) == 2 and chain[0][1] == chain[1][1]:
            os.close(chain.pop(0)[0])
        if not chain:
            return False
        (self.fd, self.ident), self.queue = chain[0], chain[1:]
        self.fpos = 0
        return True

    def _successors(self) -> list[tuple[int, tuple[int, int]]]:
        """Files that replaced the open one since it was opened (rotation), oldest first; []
        when NAME.log is still the open file (or is being replaced right now)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []  # between the shim's rename and its new file: look again next time
        if (st.st_dev, st.st_ino) == self.ident:
            return []
        new = _open(self.path)
        if new is None:
            return []
        out = [(new, _ident(new))]
        if out[0][1] == self.ident:
            os.close(new)
            return []
        # Opened after NAME.log: NAME.log.1 is either the open file itself, the file just
        # opened (rotated again meanwhile), or a file written between the two: read that first.
        mid = _open(rotated_path(self.path))
        if mid is not None:
            mid_id = _ident(mid)
            if mid_id in (self.ident, out[0][1]):
                os.close(mid)
            else:
                out.insert(0, (mid, mid_id))
        return out

    def read(self, budget: int | None) -> Iterator[list[Piece]]:
        """Pieces available now, a block's worth at a time, up to about `budget` bytes read
        (None: to the end); sets `eof` when it stopped because there was nothing more."""
        self.eof = False
        if not self.files():
            self.eof = True
            return
        assert self.fd is not None
        used = 0
        while budget is None or used < budget:
            chunk = os.read(self.fd, CHUNK)
            if chunk:
                used += len(chunk)
                self.fpos += len(chunk)
                yield self.split.feed(chunk)
                continue
            if not self.queue:
                self.queue = self._successors()
                if not self.queue:
                    self.eof = True
                    return
                continue  # drain what was written before the rotation, then move on
            os.close(self.fd)
            self.fd, self.ident = self.queue.pop(0)
            self._new_file(0)

    def flush(self) -> list[Piece]:
        return self.split.flush()

    def _new_file(self, offset: int) -> None:
        self.fpos = offset
        if self.times is not None:
            self.times.close()
            self.times = None

    def stamp(self, pieces: list[Piece]) -> list[float | None]:
        """When each of `pieces` came (the pieces the last read or flush gave, in order): the
        time of the open file's index record covering its end (see `times.py`)."""
        if self.fd is None:
            return [None] * len(pieces)
        if self.times is None:
            self.times = Times(self.fd, self.path)
        if not self.times.present:
            return [None] * len(pieces)
        end = self.fpos - self.split.size - sum(len(b) + (not more) for b, more in pieces)
        out = []
        for b, more in pieces:
            end += len(b) + (not more)
            out.append(self.times.at(max(end, 0)))
        return out

    def seek(self, index: int, offset: int) -> None:
        """Start reading at `offset` of the index-th open file (0 = the current one)."""
        chain = [(self.fd, self.ident), *self.queue]
        for fd, _ in chain[:index]:
            os.close(fd)  # type: ignore[arg-type]
        (self.fd, self.ident), self.queue = chain[index], chain[index + 1:]  # type: ignore[assignment]
        os.lseek(self.fd, offset, os.SEEK_SET)  # type: ignore[arg-type]
        self._new_file(offset)

    def close(self) -> None:
        for fd in [self.fd, *(f for f, _ in self.queue)]:
            if fd is not None:
                os.close(fd)
        self.fd, self.queue = None, []
        if self.times is not None:
            self.times.close()
            self.times = None


def _last_lines(fds: list[int], want: int) -> tuple[int, int, int]:
    """Where the last `want` lines of the stream made of `fds` (oldest first, concatenated)
    start, read backwards in CHUNK blocks: (index of the file, offset, want). When the stream
    holds fewer lines: (0, 0, how many it holds)."""
    seen, last = 0, True
    for i in range(len(fds) - 1, -1, -1):
        end = os.fstat(fds[i]).st_size
        while end > 0:
            start = max(0, end - CHUNK)
            block = os.pread(fds[i], end - start, start)
            hi = len(block)
            if last and hi:
                last = False  # the stream's last byte: its newline ends the last line
                if block.endswith(b"\n"):
                    hi -= 1
            count = block.count(b"\n", 0, hi)
            if seen + count >= want:  # each newline starts the line after it
                for _ in range(want - seen):
                    hi = block.rfind(b"\n", 0, hi)
                return i, start + hi + 1, want
            seen += count
            end = start
    return 0, 0, seen + (0 if last else 1)


def _tail(attempts: list[_Source], n: int) -> None:
    """Position a node's sources (oldest attempt first) on its last `n` lines; attempts before
    them are skipped. n == 0: at the end of the newest attempt."""
    remaining, newest = n, True
    for s in reversed(attempts):
        if remaining <= 0 and not newest:
            s.close()
            s.done = True
            continue
        newest = False
        if not s.files():
            continue  # nothing written yet: read from its start when it appears
        fds = [s.fd, *(f for f, _ in s.queue)]
        if remaining <= 0:
            s.seek(len(fds) - 1, os.fstat(fds[-1]).st_size)  # type: ignore[arg-type]
            continue
        index, offset, found = _last_lines(fds, remaining)  # type: ignore[arg-type]
        s.seek(index, offset)
        remaining -= found


def _line_start(fd: int, off: int, floor: int) -> int:
    """Where the line holding byte `off` starts (not before `floor`; looked for at most
    MAX_LINE bytes back: a longer line is read from the middle, in pieces)."""
    end, stop = off, max(floor, off - MAX_LINE)
    while end > stop:
        start = max(stop, end - CHUNK)
        k = os.pread(fd, end - start, start).rfind(b"\n")
        if k >= 0:
            return start + k + 1
        end = start
    return stop


def _since(attempts: list[_Source], t: float) -> None:
    """Move a node's sources (oldest attempt first; placed by a tail, or at their starts)
    forward to the start of the line holding their first bytes that may have come at or after
    `t` (by their times index): what is older is never read. A file without an index is read
    from where it is (its lines' times are unknown)."""
    for s in attempts:
        if s.done or not s.files():
            continue
        chain = [s.fd, *(f for f, _ in s.queue)]
        for i, fd in enumerate(chain):
            assert fd is not None
            tm = Times(fd, s.path)
            try:
                if not tm.present:
                    break
                size = os.fstat(fd).st_size
                off = tm.offset_since(t)
                if off >= size and i < len(chain) - 1:
                    continue  # all of this file is older: the next one
                floor = s.fpos if i == 0 else 0
                s.seek(i, _line_start(fd, max(off, floor), floor))
                break
            finally:
                tm.close()


def _remaining(s: _Source) -> int:
    """Bytes the source's open files hold beyond where it reads now."""
    if s.fd is None:
        return 0
    return max(0, os.fstat(s.fd).st_size - s.fpos) + sum(os.fstat(f).st_size for f, _ in s.queue)


def lines(
    store: Store,
    job_id: int,
    *,
    task_indices: list[int],
    rank: int | None = None,
    follow: bool = True,
    poll: float = 0.1,
    tail: int | None = None,
    on_idle: Callable[[], None] | None = None,
    since: float | None = None,
    times: bool = False,
) -> Iterator[LogLine]:
    """Lines of the selected tasks (and node `rank`, if given), interleaved as they arrive.
    Every attempt of a restarted node is read in order (attempt 1's file, then 2's, ...).

    `times`: each line's `at` is when it came (`times.py`; None where no index says). With
    `tail` or `since` (seconds since the epoch: only lines that came then or later, the files
    entered where their index says, not read from their start), lines carry their time, and
    what is there when reading starts comes merged across nodes in time order (lines of
    unknown time first, each node's own order kept); what comes later is interleaved as it
    arrives."""
    timed = times or tail is not None or since is not None
    tasks = {t.idx: t for t in store.tasks(job_id)}
    wanted = {(i, r) for i in task_indices for r in range(tasks[i].num_nodes)
              if rank is None or r == rank}
    sources: dict[tuple[int, int, int], _Source] = {}

    def discover(tail: int | None, since: float | None) -> None:
        fresh: dict[tuple[int, int], list[_Source]] = {}
        for n in store.nodes(job_id):
            if (n.task_idx, n.rank) not in wanted:
                continue
            for attempt in range(1, n.attempt + 1):
                key = (n.task_idx, n.rank, attempt)
                if key not in sources:
                    name = tasks[n.task_idx].name
                    sources[key] = _Source(n.task_idx, name, n.rank, paths.log_path(
                        store.home, job_id, name, n.rank, attempt), attempt)
                    fresh.setdefault((n.task_idx, n.rank), []).append(sources[key])
        for attempts in fresh.values():
            if tail is not None:
                _tail(attempts, tail)
            if since is not None:
                _since(attempts, since)

    def emit(s: _Source, pieces: list[Piece]) -> Iterator[LogLine]:
        ats = s.stamp(pieces) if timed else repeat(None)
        for (raw, more), at in zip(pieces, ats):
            if since is not None and at is not None and at < since:
                continue
            yield LogLine(s.task, s.rank, raw.decode(errors="replace"), s.attempt, more, at)

    def backlog(s: _Source, final: bool) -> Iterator[LogLine]:
        """What the source holds now (and, when its writer is gone, its last unfinished
        line), with times."""
        for pieces in s.read(_remaining(s)):
            yield from emit(s, pieces)
        if final:
            yield from emit(s, s.flush())

    try:
        first = True
        while True:
            ended = {t.idx for t in store.tasks(job_id) if t.status.terminal}
            # a tail or --since applies to what is there at the start
            discover(tail if first else None, since if first else None)
            finished = not follow or all(i in ended for i, _ in wanted)
            if first and (tail is not None or since is not None):
                import heapq

                streams = [backlog(s, s.task_idx in ended or
                                   (s.task_idx, s.rank, s.attempt + 1) in sources)
                           for _, s in sorted(sources.items()) if not s.done]
                yield from heapq.merge(*streams, key=lambda ln: -1.0 if ln.at is None
                                       else ln.at)
            first = False
            got = False
            for key in sorted(sources):
                s = sources[key]
                if s.done:
                    continue
                newer = (s.task_idx, s.rank, s.attempt + 1) in sources
                for pieces in s.read(None if finished else ROUND):
                    got = True
                    yield from emit(s, pieces)
                if s.eof and (finished or newer or s.task_idx in ended):
                    yield from emit(s, s.flush())
                    if newer:  # a later attempt exists: this one's writer is gone for good
                        s.close()
                        s.done = True
            if finished:
                return
            if not got:
                if on_idle is not None:
                    on_idle()
                time.sleep(poll)
    finally:
        for s in sources.values():
            s.close()
