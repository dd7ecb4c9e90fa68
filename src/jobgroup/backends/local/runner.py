"""Node phases as process trees on this machine, each under a C shim: the supervision part that
the local backend and the Slurm backend share (Slurm's phases are `srun` job steps started and
supervised here the same way).

Why a shim: the controller may be SIGKILLed at any moment. The shim (`shim.c`) is the phase's
parent, owns its whole process tree (subreaper, so even setsid'ed grandchildren are found),
escalates SIGTERM to SIGKILL after the grace period by itself, and writes the exit status to a
file atomically. The runner only spawns shims, watches them through pidfds (the kernel tells it
the moment a shim exits, whether or not it is the shim's parent) and reads their status files.

A phase's files are named by its `NodeRef` (`state.layout.status_path`): the status file S the
shim writes at the end, S.pid (the shim's child and start time), S.cgroup (the cgroups the
phase's processes were kept in), S.bwrap (exit codes come through bubblewrap). Its handle is
`{"pid": SHIM_PID, "start": SHIM_START_TIME}`, identity-checked against /proc before use.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Callable

import msgspec

from jobgroup.backends.base import ENDED, Handle, NodeRef, Outcome, PhaseLaunch, Ended
from jobgroup.backends.local import isolation, shim
from jobgroup.state import layout

PHASE_MARK = "JOBGROUP_PHASE"
# argv: join FILE... -- CMD...: write our pid into each cgroup.procs FILE, then exec CMD.
_JOIN = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift; exec "$@"'


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot), None if no such pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(b")") + 2 :].split()
    return int(rest[19])


def marked_processes(status_path: Path) -> list[int]:
    """Pids whose environment carries the marker of the phase recorded at `status_path`."""
    needle = f"{PHASE_MARK}={status_path}".encode() + b"\0"
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read() + b"\0"
        except OSError:
            continue
        if b"\0" + needle in b"\0" + env:
            out.append(int(entry))
    return out


def _ended_shims() -> list[int]:
    """This process's children that are shims (`jobgroup-shim-*`) and have exited."""
    out: list[int] = []
    try:
        threads = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in threads:
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as f:
                children = f.read().split()
        except OSError:
            continue
        for child in children:
            try:
                with open(b"/proc/" + child + b"/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            close = stat.rfind(b")")
            comm = stat[stat.find(b"(") + 1:close]
            if stat[close + 2:close + 3] == b"Z" and comm.startswith(b"jobgroup-shim"):
                out.append(int(child))
    return out


def _handle(pid: int, start: int) -> Handle:
    return {"pid": pid, "start": start}


def _pid(handle: Handle) -> tuple[int, int]:
    """(pid, start time) of a runner handle; (0, 0) for a handle it did not make."""
    pid, start = handle.get("pid"), handle.get("start")
    return (pid if isinstance(pid, int) else 0, start if isinstance(start, int) else 0)


class ShimRunner:
    """Starts, watches, reads, finds and stops node phases supervised by shims.

    `limits`: a phase's CPU/memory limits (`PhaseLaunch.cpus`/`memory_gb`) become a cgroup on
    this machine that its first process joins before anything else runs (the local backend);
    False where someone else enforces them (Slurm). Either way the shim keeps a phase's
    processes in a tracking cgroup where cgroup v2 is writable, so stopping and `doctor` read
    one small file instead of walking /proc."""

    def __init__(self, home: Path, *, limits: bool = True) -> None:
        self.home = home
        self.limits = limits
        self.shim = shim.shim_path()
        self._track_parent: str | None | bool = False  # tracking cgroups' parent; False: unknown
        self._made: dict[int, set[str]] = {}  # per job: directories known to exist (`mkdir`)
        # Nodes get the file-creation mask of whoever started the controller (the controller
        # itself then runs with 077: its state files are its user's alone).
        self.node_umask = os.umask(0o077)
        os.umask(self.node_umask)

    # ---- naming -----------------------------------------------------------------------------

    def status_path(self, ref: NodeRef) -> Path:
        """Where the shim of phase `ref` records its end (the other files are beside it)."""
        return layout.status_path(self.home, ref.job_id, ref.task_idx, ref.rank, ref.phase,
                                  ref.attempt)

    @staticmethod
    def describe(handle: Handle) -> str:
        return f"pid {_pid(handle)[0]}"

    def mkdir(self, job_id: int, path: str | os.PathLike[str]) -> None:
        """mkdir -p, once per directory and job (a group's nodes share them; forgotten by
        `forget`)."""
        key = os.fspath(path)
        made = self._made.setdefault(job_id, set())
        if key not in made:
            os.makedirs(key, exist_ok=True)
            made.add(key)

    def forget(self, job_id: int) -> None:
        """The group is cleaned up: forget what was remembered of it."""
        self._made.pop(job_id, None)

    # ---- start ------------------------------------------------------------------------------

    def start(self, launch: PhaseLaunch, inner: list[str], env: dict[str, str]) -> Handle:
        """Spawn the shim of `launch`, running `inner` (the phase's command, already wrapped
        in the node's view) with environment `env`; output to `launch.log_path`."""
        ref = launch.ref
        status_path = self.status_path(ref)
        self.mkdir(ref.job_id, launch.log_path.parent)
        self.mkdir(ref.job_id, status_path.parent)
        for stale in (status_path, Path(f"{status_path}.pid"), Path(f"{status_path}.cgroup")):
            stale.unlink(missing_ok=True)
        marker = Path(f"{status_path}.bwrap")
        if isolation.uses_bwrap(inner):
            marker.touch()  # durable: `outcome` must know how to read the exit code
        else:
            marker.unlink(missing_ok=True)
        if self.limits and (launch.cpus or launch.memory_gb):
            inner = self._limited(launch, status_path, inner)
        argv = [self.shim, "-s", str(status_path), "-o", str(launch.log_path),
                "-g", f"{launch.grace:g}"]
        if launch.log_max:
            argv += ["-L", str(launch.log_max)]  # the shim copies and rotates (see shim.c)
        # When each piece of output came, in LOG.times beside the log (`logs --timestamps`,
        # `--since`, tails merged in time order): the shim's copier records it (see shim.c).
        argv.append("-T")
        if launch.workdir:
            self.mkdir(ref.job_id, launch.workdir)
            argv += ["-C", launch.workdir]
        track = self._tracking_cgroup(ref, status_path)
        if track:
            argv += ["-G", track]
        argv += ["-m", f"{self.node_umask:o}", "--", *inner]
        # A marker every process of this phase inherits: if the shim itself is SIGKILLed, its
        # setsid'ed descendants are re-parented to init and only this finds them.
        env = {**env, PHASE_MARK: str(status_path)}
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            pid = os.posix_spawn(
                self.shim,
                argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, devnull, 0),
                    (os.POSIX_SPAWN_DUP2, devnull, 1),
                    (os.POSIX_SPAWN_DUP2, devnull, 2),
                ],
                setsid=True,
            )
        finally:
            os.close(devnull)
        return _handle(pid, proc_start_time(pid) or 0)

    def _limited(self, launch: PhaseLaunch, status_path: Path, inner: list[str]) -> list[str]:
        """`inner` run inside a new cgroup with the launch's CPU/memory limits (recorded in
        STATUS.cgroup, removed by `outcome`); `inner` as it is where no cgroup can be made."""
        from jobgroup.resources import cgroups

        ref = launch.ref
        cg = cgroups.create(
            cgroups.node_name(self.home, ref.job_id, launch.task, ref.rank),
            cpus=launch.cpus or None,
            memory_bytes=int(launch.memory_gb * 2**30) or None,
        )
        if not cg.paths:
            return inner
        Path(f"{status_path}.cgroup").write_bytes(msgspec.json.encode(cg))
        # The node's first process joins the cgroup itself before exec'ing the node, so every
        # process of the node is inside from its first instruction (the shim stays outside:
        # the OOM killer must never take the supervisor).
        return ["/bin/sh", "-c", _JOIN, "join", *cgroups.procs_files(cg), "--", *inner]

    def _tracking_cgroup(self, ref: NodeRef, status_path: Path) -> str | None:
        """The cgroup v2 directory in which the shim keeps the phase's processes (so stopping
        reads one small file instead of walking /proc), recorded in `STATUS.cgroup` so that
        `_release_cgroup` removes it; None where no cgroup2 hierarchy is writable. A phase
        with a memory/CPU limit on cgroup v2 is tracked in that very cgroup (a process is in
        one v2 cgroup only)."""
        from jobgroup.resources import cgroups

        if self._track_parent is False:
            self._track_parent = cgroups.tracking_parent()
        parent = self._track_parent
        if not parent:
            return None
        cg_file = Path(f"{status_path}.cgroup")
        try:
            cg = msgspec.json.decode(cg_file.read_bytes(), type=cgroups.NodeCgroup)
        except FileNotFoundError:
            cg = None
        v2_root = os.path.dirname(parent)
        if cg is not None:
            for path in cg.paths:
                if os.path.dirname(os.path.dirname(path)) == v2_root:
                    return path
        name = status_path.name.removesuffix(".status")
        path = os.path.join(parent, f"{cgroups.scope_of(self.home)}-{ref.job_id}-{name}")
        cg = (cgroups.NodeCgroup(name=os.path.basename(path), paths=(path,)) if cg is None
              else msgspec.structs.replace(cg, paths=(*cg.paths, path)))
        cg_file.write_bytes(msgspec.json.encode(cg))
        return path

    # ---- observe ----------------------------------------------------------------------------

    def running(self, handle: Handle) -> bool:
        """The shim of `handle` still runs (same pid and start time; not a zombie)."""
        return self._alive(handle)

    @staticmethod
    def _alive(handle: Handle) -> bool:
        """The shim of `handle` still runs (same pid and start time; not a zombie)."""
        pid, start = _pid(handle)
        if not pid:
            return False
        now = proc_start_time(pid)
        if now is None or now != start:
            return False
        try:  # a zombie (our own unreaped child) has ended
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            return state != b"Z"
        except OSError:
            return False

    def watch(self, loop: asyncio.AbstractEventLoop, handle: Handle,
              on_end: Callable[[], None]) -> None:
        """`on_end` once the shim has exited (a pidfd readable in `loop`)."""
        pid, _ = _pid(handle)
        try:
            fd = os.pidfd_open(pid) if pid else -1
        except ProcessLookupError:
            fd = -1
        if fd < 0:
            loop.call_soon(on_end)
            return
        if not self._alive(handle):  # pid reused or ended between start and here
            os.close(fd)
            self._reap(pid)
            loop.call_soon(on_end)
            return

        def ready() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            self._reap(pid)
            on_end()

        loop.add_reader(fd, ready)

    @staticmethod
    def reap() -> None:
        """Collect every shim this process spawned that has exited (a zombie), keeping each
        one's exit code (`shim.note_reaped`: the record of a shim that could not write its
        file). Only shims: other children of the process are left to whoever started them."""
        for pid in _ended_shims():
            ShimRunner._reap(pid)

    @staticmethod
    def _reap(pid: int) -> None:
        """Collect the exit of a shim we spawned ourselves (others are reaped by init), and
        keep its status (`shim.note_reaped`)."""
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if got == pid:
            shim.note_reaped(pid, status)

    def outcome(self, ref: NodeRef, handle: Handle | None) -> Outcome | None:
        status_path = self.status_path(ref)
        st = shim.read_status(status_path)
        if st is not None:
            note = self._release_cgroup(status_path)
            code, sig = st.exit_code, st.signal
            marker = Path(f"{status_path}.bwrap")
            if marker.exists() and code is not None and 128 < code < 128 + 65:
                # bubblewrap stands between the shim and the node's shell and reports a child
                # killed by signal N as exit code 128+N (as shells do): give the signal back.
                code, sig = None, code - 128
            return Outcome(exit_code=code, signal=sig, stopped=st.stopped, note=note)
        if handle is not None and self._alive(handle):
            return None
        own = shim.reaped_status(_pid(handle)[0]) if handle is not None else None
        if own in (shim.EXIT_USAGE, shim.EXIT_STARTUP):
            # The shim could not start the node (it cannot open the log or the status
            # directory, or reserve the status file): nothing ran. A failure, not a kill.
            from jobgroup.home import state_problem

            state = state_problem(status_path.parent)
            why = (f"its supervisor could not start it: the state directory: {state}"
                   if state else
                   f"its supervisor could not start it (exit {own}: cannot write its log or "
                   "status file)")
            self._release_cgroup(status_path)
            return Outcome(exit_code=own, note=why)
        if own is not None and own != 128 + signal.SIGKILL:
            # The shim ended by itself but could not write its record (the state directory
            # turned read-only or failed under it): its exit code is the node's.
            note = self._release_cgroup(status_path)
            why = "the shim could not write its status file; exit status from its own exit code"
            return Outcome(exit_code=own, note=f"{note}; {why}" if note else why)
        # The shim is gone without a record (killed by SIGKILL or the OOM killer): its direct
        # child died with it (PDEATHSIG); kill what may be left of the node's session.
        self._kill_session(status_path)
        note = self._release_cgroup(status_path)
        return Outcome(signal=signal.SIGKILL, lost=True, note=note)

    @staticmethod
    def _release_cgroup(status_path: Path) -> str:
        """Remove the phase's cgroup (if it had one); say whether the OOM killer struck."""
        cg_file = Path(f"{status_path}.cgroup")
        try:
            data = cg_file.read_bytes()
        except FileNotFoundError:
            return ""
        from jobgroup.resources import cgroups

        cg = msgspec.json.decode(data, type=cgroups.NodeCgroup)
        kills = cgroups.oom_kills(cg)
        cgroups.remove(cg)
        try:
            cg_file.unlink(missing_ok=True)
        except OSError:  # a read-only state directory: the record outlives its cgroup, harmless
            pass
        if kills:
            return "out of memory: killed by the OOM killer at its memory limit"
        return ""

    def recover(self, ref: NodeRef) -> Handle | Ended | None:
        status_path = self.status_path(ref)
        if shim.read_status(status_path) is not None:
            return ENDED  # `outcome` reads the record
        info = shim.read_pid_file(status_path)
        if info is None:
            # Spawned just before the previous controller died, and the shim has not written
            # its pid file yet (or cannot): adopt it rather than start the phase twice.
            return self._unrecorded_shim(status_path)
        try:  # the shim is the parent of the child it wrote down
            with open(f"/proc/{info.child_pid}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return ENDED
        if proc_start_time(ppid) != info.shim_start_time:
            return ENDED
        return _handle(ppid, info.shim_start_time)

    def _unrecorded_shim(self, status_path: Path) -> Handle | None:
        """A live shim of this phase found by its marker (its environment), or None."""
        exe = os.path.realpath(self.shim)
        for pid in marked_processes(status_path):
            try:
                if os.readlink(f"/proc/{pid}/exe") != exe:
                    continue
            except OSError:
                continue
            start = proc_start_time(pid)
            handle = _handle(pid, start or 0)
            if start is not None and self._alive(handle):
                return handle
        return None

    # ---- stop -------------------------------------------------------------------------------

    def stop(self, ref: NodeRef, handle: Handle, *, kill: bool = False) -> None:
        """SIGTERM the shim (it escalates to SIGKILL after the grace), SIGUSR1 (kill now) with
        `kill`; a shim that is gone: kill what may be left of the phase's session."""
        if not self._alive(handle):
            self._kill_session(self.status_path(ref))
            return
        try:
            os.kill(_pid(handle)[0], signal.SIGUSR1 if kill else signal.SIGTERM)
        except ProcessLookupError:
            pass

    @staticmethod
    def _kill_session(status_path: Path) -> None:
        """Kill what is left of a phase whose shim vanished: its session, then any process
        still carrying the phase's marker (setsid'ed descendants)."""
        info = shim.read_pid_file(status_path)
        if info is not None:
            try:
                os.killpg(info.child_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in marked_processes(status_path):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
