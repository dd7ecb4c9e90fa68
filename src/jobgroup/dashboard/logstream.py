"""A job's logs as Server-Sent Events: `start` (the prefix width), then the last lines of each
node merged in the order they were written (`logmerge.TailWindow`), then every new line as it
comes, then `end` once the selected tasks have ended; a comment every 15 s keeps it open.

A reader thread (the log reader blocks: it polls the files) hands lines over in batches (at most
`BATCH` characters, or whatever there is when it waits for more) through a queue of `QUEUE`
batches; the event loop side sleeps on an asyncio.Event the thread sets. Memory stays bounded
whatever the size of the logs and the speed of the browser; a browser that goes away stops the
reader, even on an idle job's files.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from jobgroup import api
from jobgroup.dashboard import logmerge
from jobgroup.dashboard.replies import log_line, read

log = logging.getLogger("jobgroup.dashboard")

KEEPALIVE_S = 15.0
WINDOW = 8 << 20  # characters of a stream's first lines held to merge them in time order
BATCH = 256 << 10  # characters of log text the reader hands the writer at once
QUEUE = 8  # batches waiting for the writer: a slow browser pauses the reader


class _Stopped(Exception):
    """The stream's client went away (or the server stops): stop reading."""


def events(home: Path, job_id: int, task: int | None, rank: int | None, width: int,
           tail: int, stopping: threading.Event,
           release: Callable[[], None]) -> AsyncIterator[bytes]:
    """The stream's bytes; `release` is called once it ends, however it ends."""
    return _Stream(home, job_id, task, rank, tail).events(width, stopping, release)


class _Stream:
    def __init__(self, home: Path, job_id: int, task: int | None, rank: int | None,
                 tail: int) -> None:
        self.home, self.job_id, self.task, self.rank, self.tail = home, job_id, task, rank, tail
        self.q: queue.Queue[Any] = queue.Queue(maxsize=QUEUE)
        self.stop = threading.Event()
        self.end = object()
        self.woken: Callable[[], None] = lambda: None

    async def events(self, width: int, stopping: threading.Event,
                     release: Callable[[], None]) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def woken() -> None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the server stopped: its loop is closed
                self.stop.set()

        self.woken = woken
        reader = threading.Thread(target=self._read, name=f"logs-{self.job_id}", daemon=True)
        try:
            yield f"event: start\ndata: {json.dumps({'width': width})}\n\n".encode()
            reader.start()
            quiet_since = time.monotonic()
            while not stopping.is_set():
                try:
                    item = self.q.get_nowait()
                except queue.Empty:
                    wake.clear()
                    if not self.q.empty():
                        continue
                    try:
                        await asyncio.wait_for(wake.wait(), 1.0)
                    except TimeoutError:
                        if time.monotonic() - quiet_since >= KEEPALIVE_S:
                            quiet_since = time.monotonic()
                            yield b": keepalive\n\n"
                    continue
                quiet_since = time.monotonic()
                if item is self.end:
                    yield b"event: end\ndata: {}\n\n"
                    return
                yield "".join(f"data: {json.dumps(log_line(ln))}\n\n" for ln in item).encode()
        finally:
            self.stop.set()
            release()

    def _put(self, item: Any) -> None:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=1.0)
                self.woken()
                return
            except queue.Full:
                continue
        raise _Stopped

    def _read(self) -> None:
        batch: list[Any] = []
        held = 0
        window = logmerge.TailWindow(WINDOW)

        def hand_over() -> None:
            nonlocal held
            if window.open:  # the tail is read: hand it on merged
                batch.extend(read(self.home, lambda st: window.close(st, self.job_id)))
            if batch:
                self._put(batch.copy())
                batch.clear()
                held = 0
            elif self.stop.is_set():
                raise _Stopped

        try:
            for line in api.logs(self.job_id, self.task, rank=self.rank, follow=True,
                                 tail=self.tail, on_idle=hand_over, home=self.home):
                if window.open:
                    if window.add(line):
                        hand_over()
                    continue
                batch.append(line)
                held += len(line.text)
                if held >= BATCH or len(batch) >= 500:
                    hand_over()
            hand_over()
            self._put(self.end)
        except _Stopped:
            pass
        except Exception as e:  # the job vanished, the state directory went away
            log.warning("dashboard: log stream of job %s ended: %s", self.job_id, e)
            try:
                self._put(self.end)
            except _Stopped:
                pass
