"""The local backend: every node phase is a process tree on this machine under a C shim.

Why a shim: the controller may be SIGKILLed at any moment. The shim (`shim.c`) is the phase's
parent, owns its whole process tree (subreaper, so even setsid'ed grandchildren are found),
escalates SIGTERM to SIGKILL after the grace period by itself, and writes the exit status to a
file atomically. The controller only spawns shims, watches them through pidfds (the kernel tells
it the moment a shim exits, whether or not it is the shim's parent) and reads their status files.

Addresses: each node gets its own loopback address (127.N.N.N, all routed to `lo` by Linux), so a
server may bind its own address and peers reach it by that address. Full per-node network
namespaces and resolvable names are the isolation layer's job (issue 'Every node its own host').
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import msgspec

from jobgroup import faults
from jobgroup.backends.base import Backend, Handle, Outcome, PhaseLaunch
from jobgroup.backends.local import egress, isolation, mounts, network, rootfs, shim
from jobgroup.spec.models import JobGroup


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


PHASE_MARK = "JOBGROUP_PHASE"
# argv: join FILE... -- CMD...: write our pid into each cgroup.procs FILE, then exec CMD.
_JOIN = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift; exec "$@"'



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


def loopback_address(job_id: int, index: int) -> str:
    """A distinct 127/8 address per node of a job (index < 254)."""
    block = job_id % (64 * 256)
    return f"127.{64 + block // 256}.{block % 256}.{index % 254 + 1}"


@dataclass
class _JobPlan:
    """What the backend knows of a prepared group (rebuilt by `prepare` after a restart)."""

    group: JobGroup
    base_dir: Path
    index: dict[tuple[int, int], int]  # (task, rank) -> node number
    addresses: dict[tuple[int, int], str]
    hosts_file: Path
    net: network.GroupNet | None


class LocalBackend(Backend):
    name = "local"

    def __init__(self, home: Path) -> None:
        self.home = home
        self._shim = shim.shim_path()
        self.level = isolation.detect_level()
        self._jobs: dict[int, _JobPlan] = {}
        self._track_parent: str | None | bool = False  # tracking cgroups' parent; False: unknown
        self._made: dict[int, set[str]] = {}  # per job: directories known to exist (_mkdir)
        # Nodes get the file-creation mask of whoever started the controller (the controller
        # itself then runs with 077: its state files are its user's alone).
        self.node_umask = os.umask(0o077)
        os.umask(self.node_umask)

    def _job_dir(self, job_id: int) -> Path:
        return self.home / "jobs" / str(job_id)

    def prepare(self, job_id: int, group: JobGroup, base_dir: Path) -> dict[tuple[int, int], str]:
        plan = self._jobs.get(job_id)
        if plan is not None:
            return plan.addresses
        index: dict[tuple[int, int], int] = {}
        for i, t in enumerate(group.tasks):
            for r in range(t.num_nodes):
                index[(i, r)] = len(index)
        job_dir = self._job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        net = None
        faults.hit("prepare.begin")
        if self.level == isolation.NAMESPACES:
            # Idempotent: a restarted controller finds the network its predecessor recorded
            # (and repairs it if parts are gone), or removes what an interrupted create left.
            net, resolv = egress.group_network(self.home, job_id, len(index))  # + NAT, DNS
            faults.hit("prepare.saved")
            addresses = {key: net.addresses[n] for key, n in index.items()}
        else:
            addresses = {key: loopback_address(job_id, n) for key, n in index.items()}
        hosts_file = job_dir / "hosts"
        entries = [
            (addresses[(i, r)], [f"{t.name}-{r}.{group.name}", f"{t.name}-{r}"])
            for i, t in enumerate(group.tasks) for r in range(t.num_nodes)
        ]
        try:
            machine_hosts = Path("/etc/hosts").read_text()
        except OSError:
            machine_hosts = ""
        tmp = hosts_file.with_suffix(".tmp")
        tmp.write_text(isolation.hosts_text(entries, machine_hosts))
        os.chmod(tmp, 0o644)  # read by every user of the node (nothing secret in it)
        os.replace(tmp, hosts_file)
        if net is not None:
            egress.write_resolv(job_dir / "resolv.conf", resolv)
        self._jobs[job_id] = _JobPlan(group, base_dir, index, addresses, hosts_file, net)
        return addresses

    def _view(self, job_id: int, task_idx: int, rank: int, workdir: str | None,
              user_home: str, launch: PhaseLaunch | None = None) -> isolation.NodeView | None:
        plan = self._jobs.get(job_id)
        if plan is None or self.level == isolation.NONE:
            return None
        task = plan.group.tasks[task_idx]
        node = plan.index[(task_idx, rank)]
        binds = mounts.node_binds(task, plan.base_dir, self.home, user_home)
        return isolation.NodeView(
            hostname=f"{task.name}-{rank}",
            hosts_file=str(plan.hosts_file),
            binds=binds,
            netns=plan.net.netns(node) if plan.net else None,
            chdir=workdir,
            resolv_file=str(plan.hosts_file.with_name("resolv.conf")) if plan.net else None,
            **rootfs.view_fields(  # its own root, /tmp, /dev/shm (issue 15)
                self.home, job_id, task.name or "", rank, self.level,
                env=launch.env if launch else None,
                memory_gb=launch.memory_gb if launch else 0.0,
                shared=[b.src for b in binds if not b.readonly] + ([workdir] if workdir else [])),
        )

    def exec_argv(self, job_id: int, task_idx: int, rank: int, argv: list[str]) -> list[str]:
        pid = rootfs.running_pid(self.home, job_id, task_idx, rank) \
            if self.level == isolation.NAMESPACES else None
        if pid is not None:  # the node's own files, not a view made afresh
            return isolation.join_argv(pid, argv)
        return isolation.wrap(argv, self._view(job_id, task_idx, rank, None,
                                               os.path.expanduser("~")))

    def _mkdir(self, job_id: int, path: str | os.PathLike[str]) -> None:
        """mkdir -p, once per directory and job (a group's nodes share them; forgotten at the
        job's cleanup)."""
        key = os.fspath(path)
        made = self._made.setdefault(job_id, set())
        if key not in made:
            os.makedirs(key, exist_ok=True)
            made.add(key)

    def start(self, launch: PhaseLaunch) -> Handle:
        self._mkdir(launch.job_id, launch.log_path.parent)
        self._mkdir(launch.job_id, launch.status_path.parent)
        for stale in (launch.status_path, Path(f"{launch.status_path}.pid")):
            stale.unlink(missing_ok=True)
        argv = [self._shim, "-s", str(launch.status_path), "-o", str(launch.log_path),
                "-g", f"{launch.grace:g}"]
        if launch.log_max:
            argv += ["-L", str(launch.log_max)]  # the shim copies and rotates (see shim.c)
        if launch.workdir:
            self._mkdir(launch.job_id, launch.workdir)
            argv += ["-C", launch.workdir]
        inner = self.inner_argv(launch)
        track = self._tracking_cgroup(launch)
        if track:
            argv += ["-G", track]
        argv += ["-m", f"{self.node_umask:o}", "--", *inner]
        # A marker every process of this phase inherits: if the shim itself is SIGKILLed, its
        # setsid'ed descendants are re-parented to init and only this finds them.
        env = {**self.launch_env(launch.env), PHASE_MARK: str(launch.status_path)}
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            pid = os.posix_spawn(
                self._shim,
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
        start = proc_start_time(pid)
        faults.hit("start.spawned")
        return Handle(pid=pid, pid_start=start or 0)

    def _tracking_cgroup(self, launch: PhaseLaunch) -> str | None:
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
        cg_file = Path(f"{launch.status_path}.cgroup")
        try:
            cg = msgspec.json.decode(cg_file.read_bytes(), type=cgroups.NodeCgroup)
        except FileNotFoundError:
            cg = None
        v2_root = os.path.dirname(parent)
        if cg is not None:
            for path in cg.paths:
                if os.path.dirname(os.path.dirname(path)) == v2_root:
                    return path
        name = launch.status_path.name.removesuffix(".status")
        path = os.path.join(parent, f"{cgroups.scope_of(self.home)}-{launch.job_id}-{name}")
        cg = (cgroups.NodeCgroup(name=os.path.basename(path), paths=(path,)) if cg is None
              else msgspec.structs.replace(cg, paths=(*cg.paths, path)))
        cg_file.write_bytes(msgspec.json.encode(cg))
        return path

    def launch_env(self, env: dict[str, str]) -> dict[str, str]:
        """The environment the shim starts with (the node's)."""
        return env

    def inner_argv(self, launch: PhaseLaunch) -> list[str]:
        """What the shim runs: the phase's script inside the node's view (and cgroup)."""
        view = self._view(launch.job_id, launch.task_idx, launch.rank, launch.workdir,
                          launch.env.get("HOME", os.path.expanduser("~")), launch)
        inner = isolation.wrap(["/bin/bash", "-c", launch.script], view)
        marker = Path(f"{launch.status_path}.bwrap")
        if isolation.uses_bwrap(inner):
            marker.touch()  # durable: outcome() must know how to read the exit code
        else:
            marker.unlink(missing_ok=True)
        cg_file = Path(f"{launch.status_path}.cgroup")
        cg_file.unlink(missing_ok=True)
        if launch.cpus or launch.memory_gb:
            from jobgroup.resources import cgroups

            cg = cgroups.create(
                cgroups.node_name(self.home, launch.job_id, launch.task, launch.rank),
                cpus=launch.cpus or None,
                memory_bytes=int(launch.memory_gb * 2**30) or None,
            )
            if cg.paths:
                cg_file.write_bytes(msgspec.json.encode(cg))
                # The node's first process joins the cgroup itself before exec'ing the node, so
                # every process of the node is inside from its first instruction (the shim stays
                # outside: the OOM killer must never take the supervisor).
                inner = ["/bin/sh", "-c", _JOIN, "join", *cgroups.procs_files(cg), "--", *inner]
        return inner

    def alive(self, handle: Handle) -> bool:
        start = proc_start_time(handle.pid)
        if start is None or start != handle.pid_start:
            return False
        try:  # a zombie (our own unreaped child) has ended
            with open(f"/proc/{handle.pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            return state != b"Z"
        except OSError:
            return False

    def watch(
        self, loop: asyncio.AbstractEventLoop, handle: Handle, on_end: Callable[[], None]
    ) -> None:
        try:
            fd = os.pidfd_open(handle.pid)
        except ProcessLookupError:
            loop.call_soon(on_end)
            return
        if not self.alive(handle):  # pid reused or ended between start and here
            os.close(fd)
            self._reap(handle.pid)
            loop.call_soon(on_end)
            return

        def ready() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            self._reap(handle.pid)
            on_end()

        loop.add_reader(fd, ready)

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

    def outcome(self, handle: Handle | None, status_path: Path) -> Outcome | None:
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
        if handle is not None and self.alive(handle):
            return None
        own = shim.reaped_status(handle.pid) if handle is not None else None
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

    def find(self, status_path: Path) -> Handle | None:
        if shim.read_status(status_path) is not None:
            return Handle(pid=0, pid_start=0)  # ended: `outcome` reads the record
        info = shim.read_pid_file(status_path)
        if info is None:
            # Spawned just before the previous controller died, and the shim has not written
            # its pid file yet (or cannot): adopt it rather than start the phase twice.
            return self._unrecorded_shim(status_path)
        try:  # the shim is the parent of the child it wrote down
            with open(f"/proc/{info.child_pid}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return Handle(pid=0, pid_start=0)
        if proc_start_time(ppid) != info.shim_start_time:
            return Handle(pid=0, pid_start=0)
        return Handle(pid=ppid, pid_start=info.shim_start_time)

    def _unrecorded_shim(self, status_path: Path) -> Handle | None:
        """A live shim of this phase found by its marker (its environment), or None."""
        exe = os.path.realpath(self._shim)
        for pid in marked_processes(status_path):
            try:
                if os.readlink(f"/proc/{pid}/exe") != exe:
                    continue
            except OSError:
                continue
            start = proc_start_time(pid)
            handle = Handle(pid=pid, pid_start=start or 0)
            if start is not None and self.alive(handle):
                return handle
        return None

    def stop(self, handle: Handle, status_path: Path, *, kill: bool = False) -> None:
        if not self.alive(handle):
            self._kill_session(status_path)
            return
        try:
            os.kill(handle.pid, signal.SIGUSR1 if kill else signal.SIGTERM)
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

    def cleanup(self, job_id: int) -> list[tuple[int | None, int | None, str]]:
        """Remove the group's network (whatever part of it exists, even one whose creation was
        interrupted before it was recorded) and its files. Idempotent; quiet when done twice.
        Returns what each node wrote in its own root (task_idx, rank, message), for the job's
        events; the node roots themselves stay with the job's files (rootfs.py)."""
        self._made.pop(job_id, None)
        plan = self._jobs.pop(job_id, None)
        names = {f"{t.name}-{r}": (i, r) for i, t in enumerate(plan.group.tasks)
                 for r in range(t.num_nodes)} if plan else {}
        if self.level == isolation.NAMESPACES or network.record_path(self.home, job_id).exists():
            network.teardown(self.home, job_id)  # (no network at the other levels)
        faults.hit("network.destroyed")
        job_dir = self._job_dir(job_id)
        for name in ("hosts", "hosts.tmp", "resolv.conf"):
            (job_dir / name).unlink(missing_ok=True)
        return rootfs.usage_notes(self.home, job_id, names)
