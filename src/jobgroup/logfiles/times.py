"""When each line of a node's log came: the side index the shim's copier writes beside the log.

The log itself is never prefixed (programs' output stays byte for byte what they wrote; tools
that read the file see no timestamps). Instead the copier, which receives every byte the node
writes (shim.c, `-T`), appends to `NAME.log.times`:

    header   "JGTIMES1", st_dev, st_ino of the log file it describes (little-endian u64 each)
    records  (size, ns): the log's size, and the CLOCK_REALTIME (ns) when the copier had
             received those bytes (little-endian i64 each)

at most one record every 10 ms while output comes, and one as soon as it pauses or ends, so a
record says: every byte up to `size` had arrived by `ns`, every byte after it came later. A line
gets the time of the first record that covers its end: when the copier had it, at most ~10 ms
after the node wrote it (or 10 ms after the first of a burst). Cost: 16 bytes per record (at most
1.6 kB/s per node while it writes), written by C, never by Python.

A rotated log (`JOBGROUP_LOG_MAX`) takes its index along (`NAME.log.1.times`); a reader matches
an index to an open log file by the header's device and inode, never by name alone, so a rotation
between opening the two cannot pair a file with another file's times.

Lines with no record yet (the copier records within 10 ms; or it was killed) take the log file's
modification time (when it was last written: true for its last bytes, an upper bound for others);
logs written before this index existed (or on Kubernetes, whose pod logs a follower copies) have
no index: their lines have no time (None).

Reading is forward-only with a block buffer (`Times.at` for growing offsets), plus a binary
search to start anywhere (a tail, `--since`): memory stays bounded whatever the file's size.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

MAGIC = b"JGTIMES1"
HEADER = 24
_REC = struct.Struct("<qq")
_HEAD = struct.Struct("<8sQQ")
BLOCK = 4096  # records read at once (64 KiB)


def index_path(log: Path) -> Path:
    """Where the times of log file `log` are: NAME.log -> NAME.log.times."""
    return log.with_name(log.name + ".times")


def _open_matching(fd: int, candidates: list[Path]) -> int | None:
    """An index among `candidates` whose header names the file open as `fd`."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    for path in candidates:
        try:
            t = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            head = os.pread(t, HEADER, 0)
        except OSError:
            head = b""
        if len(head) == HEADER:
            magic, dev, ino = _HEAD.unpack(head)
            if magic == MAGIC and (dev, ino) == (st.st_dev & (2**64 - 1), st.st_ino):
                return t
        os.close(t)
    return None


class Times:
    """The times of one open log file (its descriptor `fd`, opened as `path` or as its rotated
    name). `at(end)`: the time (seconds since the epoch) of a line ending at byte `end` (asked
    for growing `end`); None when the file has no index."""

    def __init__(self, fd: int, path: Path) -> None:
        self.log_fd = fd
        names = [index_path(path), index_path(path.with_name(path.name + ".1"))]
        self.fd = _open_matching(fd, names)
        self.buf: list[tuple[int, int]] = []
        self.first = 0  # index of buf[0] among the records
        self.pos = 0  # position in buf of the next record to look at
        self.started = False

    @property
    def present(self) -> bool:
        return self.fd is not None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _count(self) -> int:
        assert self.fd is not None
        return max(0, (os.fstat(self.fd).st_size - HEADER) // _REC.size)

    def _record(self, i: int) -> tuple[int, int]:
        assert self.fd is not None
        return _REC.unpack(os.pread(self.fd, _REC.size, HEADER + i * _REC.size))

    def _load(self, start: int) -> None:
        assert self.fd is not None
        data = os.pread(self.fd, BLOCK * _REC.size, HEADER + start * _REC.size)
        n = len(data) // _REC.size
        self.buf = [_REC.unpack_from(data, k * _REC.size) for k in range(n)]
        self.first, self.pos = start, 0

    def _search(self, pred) -> int:  # type: ignore[no-untyped-def]
        """The first record index for which pred(record) holds (count if none), by bisection
        (records grow in both size and time)."""
        lo, hi = 0, self._count()
        while lo < hi:
            mid = (lo + hi) // 2
            if pred(self._record(mid)):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def at(self, end: int) -> float | None:
        if self.fd is None:
            return None
        if not self.started:  # start where `end` is (a tail or --since began mid-file)
            self.started = True
            self._load(self._search(lambda r: r[0] >= end))
        while True:
            while self.pos < len(self.buf):
                size, ns = self.buf[self.pos]
                if size >= end:
                    return ns / 1e9
                self.pos += 1
            nxt = self.first + len(self.buf)
            self._load(nxt)
            if not self.buf:  # not recorded yet: when the file was last written
                self.first = nxt
                return os.fstat(self.log_fd).st_mtime_ns / 1e9

    def offset_since(self, t: float) -> int:
        """The size the log had before its first bytes that came at or after `t`: bytes from
        there on may be that recent, bytes before it are older (0 without an index)."""
        if self.fd is None:
            return 0
        ns = int(t * 1e9)
        i = self._search(lambda r: r[1] >= ns)
        return 0 if i == 0 else self._record(i - 1)[0]
