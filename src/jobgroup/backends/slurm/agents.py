"""The controller's side of the node agents (`agent.c`, see its header): their folder, the
requests written to them, their wake-ups, and the watch on what they report.

A job's agents live in `$JOBGROUP_HOME/jobs/ID/slurm/` (on the filesystem the nodes share):
`jobgroup-agent` and `jobgroup-shim` (compiled here, copied there at submission, so the nodes
need nothing installed), `n/TASK-RANK/` per node (requests, the `wake` FIFO, `agent` once it
runs, its `agent.log`), `wake` (the controller's FIFO), `end` (the group's result, once it
ended). Each phase's shim writes the status file the local backend's shims write
(`state.layout.status_path`); the agent adds `STATUS.exit` once the shim has exited.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Callable

from jobgroup.backends.base import NodeRef
from jobgroup.state import layout

AGENT_SOURCE = Path(__file__).with_name("agent.c")
POLL = 0.5  # seconds between looks at the exit files (wake-ups make it sooner)
ALIVE_EVERY = 3.0  # seconds between asking Slurm whether a job with watched phases still runs


def root(home: Path, job_id: int) -> Path:
    return layout.job_dir(home, job_id) / "slurm"


def node_dir(home: Path, ref: NodeRef) -> Path:
    return root(home, ref.job_id) / "n" / f"{ref.task_idx}-{ref.rank}"


def request_name(ref: NodeRef) -> str:
    return f"{ref.phase}.{ref.attempt}"


def exit_path(home: Path, ref: NodeRef) -> Path:
    return Path(f"{status_path(home, ref)}.exit")


def status_path(home: Path, ref: NodeRef) -> Path:
    return layout.status_path(home, ref.job_id, ref.task_idx, ref.rank, ref.phase, ref.attempt)


_built: dict[bytes, str] = {}


def agent_path() -> str:
    """The compiled agent for the current agent.c and the header it shares with the shim
    (built on first use, beside the shim in jobgroup's cache, with the same compiler and
    flags)."""
    from jobgroup.backends.local import shim

    source = AGENT_SOURCE.read_bytes()
    headers = shim.c_headers()
    key = b"\0".join([source, *headers.values()])
    known = _built.get(key)
    if known and os.access(known, os.X_OK):
        return known
    compiler = shim._compiler()
    name = shim._binary_name(source, compiler, headers)
    target = shim.cache_dir() / name.replace("jobgroup-shim-", "jobgroup-slurm-agent-")
    if not os.access(target, os.X_OK):
        try:
            shim._build(source, compiler, target, headers)
        except OSError as e:
            raise shim.ShimBuildError(f"Could not build jobgroup's Slurm node agent in "
                                      f"{target.parent}: {e}. Set $JOBGROUP_CACHE to a "
                                      "writable directory.") from e
    _built[key] = str(target)
    return str(target)


def install(home: Path, job_id: int, nodes: list[tuple[int, int]], shim_binary: str,
            agent_binary: str) -> Path:
    """Make the job's agent folder before submission: the agent and the shim (copied: the
    nodes run them from the shared filesystem), each node's folder and FIFO, the controller's
    FIFO. Idempotent."""
    d = root(home, job_id)
    (d / "n").mkdir(parents=True, exist_ok=True)
    for src, name in ((Path(agent_binary), "jobgroup-agent"),
                      (Path(shim_binary), "jobgroup-shim")):
        dst = d / name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            tmp = d / f".{name}.tmp"
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o755)
            tmp.replace(dst)
    _fifo(d / "wake")
    for task_idx, rank in nodes:
        nd = d / "n" / f"{task_idx}-{rank}"
        nd.mkdir(exist_ok=True)
        _fifo(nd / "wake")
    return d


def _fifo(path: Path) -> None:
    try:
        os.mkfifo(path, 0o600)
    except FileExistsError:
        if not stat.S_ISFIFO(path.lstat().st_mode):
            path.unlink()
            os.mkfifo(path, 0o600)


def wake(path: Path) -> None:
    """Wake whoever reads FIFO `path` (an agent, or the controller), if it runs on this machine;
    quiet otherwise (no reader here: it looks by itself soon)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, b"w\n")
    except OSError:
        pass
    finally:
        os.close(fd)


def write_request(home: Path, ref: NodeRef, *, status: Path, track_id: str, opts: list[str],
                  cmd: list[str], env: dict[str, str]) -> Path:
    """Ask the node's agent to run one phase: NUL-separated (tag, value) pairs (see agent.c),
    written atomically, then a wake-up."""
    nd = node_dir(home, ref)  # made by `install` (the agent makes it too)
    name = request_name(ref)
    pairs = [("status", str(status)), ("id", track_id), *(("opt", x) for x in opts),
             *(("cmd", x) for x in cmd),
             *(("env", f"{k}={v}") for k, v in env.items() if k and "=" not in k)]
    data = b"".join(f"{tag}\0{value}\0".encode(errors="surrogateescape")
                    for tag, value in pairs if "\0" not in value)
    tmp = nd / f".{name}.tmp"
    try:
        tmp.write_bytes(data)
    except FileNotFoundError:  # a folder removed under us: make it again
        nd.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
    tmp.replace(nd / f"{name}.start")
    wake(nd / "wake")
    return nd / f"{name}.start"


def requested(home: Path, ref: NodeRef) -> bool:
    """The phase was asked for (its request stays once the agent started it)."""
    return (node_dir(home, ref) / f"{request_name(ref)}.start").exists()


def signal(home: Path, ref: NodeRef, *, kill: bool) -> None:
    """Ask the node's agent to stop the phase (`.stop`: SIGTERM to its shim) or kill it now
    (`.kill`: SIGUSR1)."""
    nd = node_dir(home, ref)
    path = nd / f"{request_name(ref)}.{'kill' if kill else 'stop'}"
    if not path.exists():
        try:
            path.write_text("")
        except FileNotFoundError:
            return
    wake(nd / "wake")


def forget_requests(home: Path, job_id: int) -> None:
    """Remove the job's requests once it ended (they hold the nodes' variables; the status
    and exit files stay)."""
    try:
        nodes = list((root(home, job_id) / "n").iterdir())
    except OSError:
        return
    for nd in nodes:
        for path in nd.glob("*.start"):
            path.unlink(missing_ok=True)


def exited(home: Path, ref: NodeRef) -> bool:
    """The phase's shim has exited (its agent wrote STATUS.exit)."""
    return _written(exit_path(home, ref))


def _written(path: Path) -> bool:
    """The agent has written the exit file (created and filled in one short write)."""
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def stop_asked(home: Path, ref: NodeRef) -> bool:
    """The controller asked the phase to stop (or be killed)."""
    nd, name = node_dir(home, ref), request_name(ref)
    return (nd / f"{name}.stop").exists() or (nd / f"{name}.kill").exists()


def read_exit(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def end(home: Path, job_id: int, code: int) -> bool:
    """Tell every agent of the job that the group ended with `code` (the batch script exits
    with it); False when the job has no agent folder (it never ran)."""
    d = root(home, job_id)
    if not d.exists():
        return False
    tmp = d / ".end.tmp"
    tmp.write_text(f"{code}\n")
    tmp.replace(d / "end")
    try:
        nodes = list((d / "n").iterdir())
    except OSError:
        nodes = []
    for nd in nodes:
        wake(nd / "wake")
    return True


class Watcher:
    """Calls each watched phase's `on_end` once its agent wrote `STATUS.exit`, or once Slurm
    says the job no longer runs (`gone`: the phase may have died with its node). Woken by the
    job's FIFO where the agents run on this machine; looks every `POLL` seconds anyway; asks
    Slurm every `ALIVE_EVERY` seconds, off the loop, through `alive(slurm_id)` -> (running,
    Slurm's state and reason in words)."""

    def __init__(self, home: Path, alive: Callable[[str], tuple[bool, str]]) -> None:
        self.home = home
        self.alive = alive
        self.gone: dict[int, str] = {}  # job id -> why Slurm no longer runs it
        self._waiting: dict[int, dict[Path, list[Callable[[], None]]]] = {}
        self._slurm: dict[int, str] = {}
        self._fifos: dict[int, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._asked = 0.0
        self._asking = False

    def add(self, loop: asyncio.AbstractEventLoop, ref: NodeRef, slurm_id: str | None,
            on_end: Callable[[], None]) -> None:
        self._loop = loop
        path = exit_path(self.home, ref)
        if _written(path) or ref.job_id in self.gone:
            loop.call_soon(on_end)
            return
        self._waiting.setdefault(ref.job_id, {}).setdefault(path, []).append(on_end)
        if slurm_id:
            self._slurm[ref.job_id] = str(slurm_id)
        if ref.job_id not in self._fifos:
            fifo = root(self.home, ref.job_id) / "wake"
            try:  # read-write: no EOF while no agent writes (a reader would spin)
                fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
            except OSError:
                fd = -1
            if fd >= 0:
                self._fifos[ref.job_id] = fd
                loop.add_reader(fd, self._woken, ref.job_id)
        if self._timer is None:
            self._timer = loop.call_later(POLL, self._tick)

    def forget(self, job_id: int) -> None:
        self._waiting.pop(job_id, None)
        self._slurm.pop(job_id, None)
        self.gone.pop(job_id, None)
        self._close(job_id)

    def _close(self, job_id: int) -> None:
        fd = self._fifos.pop(job_id, None)
        if fd is not None:
            if self._loop is not None:
                self._loop.remove_reader(fd)
            os.close(fd)

    def _woken(self, job_id: int) -> None:
        fd = self._fifos.get(job_id)
        if fd is not None:
            try:
                while os.read(fd, 4096):
                    pass
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    self._close(job_id)
        self._check(job_id)

    def _check(self, job_id: int) -> None:
        waiting = self._waiting.get(job_id)
        if not waiting:
            return
        for path in [p for p in waiting if _written(p)]:
            for cb in waiting.pop(path):
                cb()
        if not waiting:
            self._waiting.pop(job_id, None)
            self._close(job_id)

    def _tick(self) -> None:
        self._timer = None
        for job_id in list(self._waiting):
            self._check(job_id)
        if not self._waiting or self._loop is None:
            return
        now = time.monotonic()
        if not self._asking and now - self._asked >= ALIVE_EVERY:
            self._asked, self._asking = now, True
            jobs = {j: self._slurm[j] for j in self._waiting if j in self._slurm}
            fut = self._loop.run_in_executor(None, self._ask, jobs)
            fut.add_done_callback(self._answered)
        self._timer = self._loop.call_later(POLL, self._tick)

    def _ask(self, jobs: dict[int, str]) -> dict[int, str]:
        out = {}
        for job_id, slurm_id in jobs.items():
            try:
                running, why = self.alive(slurm_id)
            except Exception:  # Slurm does not answer: ask again later
                continue
            if not running:
                out[job_id] = why
        return out

    def _answered(self, fut: asyncio.Future) -> None:
        self._asking = False
        try:
            gone = fut.result()
        except Exception:
            return
        for job_id, why in gone.items():
            self.gone[job_id] = why
            for cbs in self._waiting.pop(job_id, {}).values():
                for cb in cbs:
                    cb()
            self._close(job_id)
