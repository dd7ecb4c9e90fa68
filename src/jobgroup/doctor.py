"""Finding (and removing) what crashed runs left behind: processes, network namespaces, bridges
and veths, mounts, cgroups and network files of this state directory that no live node uses.

Only things of *this* state directory are considered: jobgroup's interface and namespace names
carry a tag derived from the state directory (see `backends.local.network`), cgroups a scope
derived from it, and node processes a marker naming their status file under it.

Issue 15 adds: nftables tables of groups that ended (`ip jg<netid>`), IPv4 forwarding jobgroup
turned on while no group of the machine needs it any more, and node roots (overlays, /dev/shm)
still mounted because a process outlived its node in the node's mount namespace.

What counts as left behind:
- of a group that has ended: everything;
- of a group that has not ended: a process or tracking cgroup of a phase that is not the node's
  live one (an earlier attempt, a phase started twice), a node cgroup of a node that is not
  live, and network parts nobody recorded — an interrupted create whose group lock is free.
  What a live node uses is never touched (a stopped controller re-adopts it).
- any mount point inside the state directory (nodes mount in their own mount namespaces, so the
  machine's namespace never holds one legitimately) and each namespace's own mount.

The machine is scanned before the store is read: a process, interface or cgroup seen existed
before the store was read, and its phase (or group) was recorded before it was made, so nothing
a running controller is creating meanwhile is mistaken for a leftover.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path

import msgspec

from jobgroup.backends.local import egress, network, rootfs
from jobgroup.backends.local.runner import PHASE_MARK
from jobgroup.state.store import Store


class Leftovers(msgspec.Struct, kw_only=True):
    netns: list[str]
    links: list[str]
    processes: list[int]
    files: list[str]
    cgroups: list[str] = []
    mounts: list[str] = []
    # issue 15: nftables tables (`ip jg<netid>`), interfaces whose IPv4 forwarding jobgroup
    # turned on with no group left to need it, node roots still mounted in a mount namespace
    # of processes that outlived their node ("<root> pids 1,2")
    tables: list[str] = []
    forwarding: list[str] = []
    overlays: list[str] = []

    @property
    def empty(self) -> bool:
        return not (self.netns or self.links or self.processes or self.files or self.cgroups
                    or self.mounts or self.tables or self.forwarding or self.overlays)


NETWORK_FILES = ("network.json", "network.tmp", "hosts", "hosts.tmp", "resolv.conf", "resolv.tmp")


def _job_of_netid(netid: str) -> int | None:
    try:
        return int(netid[4:8], 36)
    except ValueError:
        return None


def _marked(jobs_dir: Path) -> dict[int, str]:
    """Pid -> the status file its marker names, for processes of this state directory."""
    marker = f"{PHASE_MARK}={jobs_dir}/".encode()
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        at = env.find(marker)
        if at < 0 or (at > 0 and env[at - 1] != 0):
            continue
        if _dead(int(entry)):
            continue  # a zombie: nothing left to remove (its parent reaps it)
        value = env[at + len(PHASE_MARK) + 1:].split(b"\0", 1)[0]
        out[int(entry)] = os.fsdecode(value)
    return out


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except OSError:
        return True


def _mounts(home: Path, tag: str) -> list[str]:
    inside = str(home) + "/"
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4].replace("\\040", " ")
                if point.startswith(f"/run/netns/jg-{tag}") or point.startswith(inside) \
                        or point == str(home):
                    out.append(point)
    except OSError:
        pass
    return out


def _network_in_use(home: Path, job_id: int, netid: str) -> bool:
    """Whether an active group's network parts are in use: recorded, or being made (its lock
    held). The record is read under the lock, which `ensure` holds while writing it."""
    lock = network.group_lock_path(home, job_id)
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        fd = None
    except OSError:
        return True  # cannot tell: leave it alone
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True  # a controller is making or removing it right now
        saved = network.read_record(home, job_id)
        return saved is not None and saved.netid == netid
    finally:
        if fd is not None:
            os.close(fd)


def find(store: Store) -> Leftovers:
    home = store.home.absolute()
    tag = network.home_tag(home)
    jobs_dir = home / "jobs"
    from jobgroup.resources import cgroups

    # The machine first, the store after (see the module's docstring).
    marked = _marked(jobs_dir)
    names = network.existing(tag)
    try:  # group locks of interrupted creates/teardowns: net-<netid>.lock
        locks = sorted(n for n in os.listdir(network.RUN_DIR)
                       if n.startswith(f"net-{tag}") and n.endswith(".lock"))
    except OSError:
        locks = []
    mounts_seen = _mounts(home, tag)
    cgroups_seen = cgroups.leftovers(home)
    tables_seen = egress.tables(tag)
    roots_seen = rootfs.node_namespaces(home)

    active = {j.id: j for j in store.jobs(active_only=True)}
    live_status: set[str] = set()  # status files of live phases
    live_nodes: set[str] = set()  # node cgroup names of live nodes
    from jobgroup.state import layout as paths

    for job_id in active:
        tasks = {t.idx: t.name for t in store.tasks(job_id)}
        for n in store.nodes(job_id):
            if n.live:
                live_status.add(str(paths.status_path(home, job_id, n.task_idx, n.rank,
                                                      n.phase.value, n.attempt)))
                live_nodes.add(cgroups.node_name(home, job_id, tasks.get(n.task_idx, ""),
                                                 n.rank))
    active_short = {j % 36**4: j for j in active}

    procs = sorted(pid for pid, status in marked.items() if status not in live_status)

    stale_nets: dict[str, bool] = {}

    def stale(netid: str) -> bool:
        if netid not in stale_nets:
            short = _job_of_netid(netid)
            job = active_short.get(short) if short is not None else None
            stale_nets[netid] = job is None or not _network_in_use(home, job, netid)
        return stale_nets[netid]

    netns = [n for n in names["netns"] if stale(n[3:11])]
    tables = [t for t in tables_seen if stale(t[2:10])]
    live_roots = set()
    for job_id in active:
        tasks = {t.idx: t.name for t in store.tasks(job_id)}
        live_roots |= {str(rootfs.node_root(home, job_id, tasks.get(n.task_idx, ""), n.rank))
                       for n in store.nodes(job_id) if n.live}
    overlays = [f"{root} pids {','.join(map(str, pids))}" for root, pids in roots_seen.items()
                if root not in live_roots]
    # Forwarding jobgroup turned on stays on while any group of any state directory has
    # egress (egress.py); with no jobgroup table left on the machine it is a leftover.
    turned_on = egress.forwarding_left()
    forwarding = sorted(turned_on) if turned_on and not egress.tables() else []
    links = [n for n in names["bridges"] + names["veths"] if stale(n[2:10])]
    mounts = [m for m in mounts_seen
              if not m.startswith("/run/netns/") or stale(os.path.basename(m)[3:11])]

    files = [str(network.RUN_DIR / n) for n in locks
             if _job_of_netid(n[4:12]) not in active_short]
    if jobs_dir.is_dir():
        for d in jobs_dir.iterdir():
            if d.name.isdigit() and int(d.name) not in active:
                files += [str(d / name) for name in NETWORK_FILES if (d / name).exists()]

    scope = cgroups.scope_of(home) + "-"
    groups = []
    for cg in cgroups_seen:
        job, _, rest = cg.name[len(scope):].partition("-")
        if not job.isdigit() or int(job) not in active:
            groups.extend(cg.paths)
        elif "." in rest:  # a phase's tracking cgroup: <task idx>-<rank>.<phase>.<attempt>
            if str(jobs_dir / job / "nodes" / f"{rest}.status") not in live_status:
                groups.extend(cg.paths)
        elif cg.name not in live_nodes:  # a node's limits: <task>-<rank>
            groups.extend(cg.paths)
    return Leftovers(netns=sorted(netns), links=sorted(links), processes=procs,
                     files=sorted(files), cgroups=sorted(groups), mounts=sorted(mounts),
                     tables=sorted(tables), forwarding=forwarding, overlays=sorted(overlays))


def fix(found: Leftovers, store: Store) -> None:
    """Remove everything in `found`: processes first (each still carrying this state
    directory's marker: a pid reused meanwhile is left alone), then mounts, network, cgroups,
    files."""
    marked = _marked(store.home.absolute() / "jobs")
    killed = []
    for pid in found.processes:
        if pid not in marked:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    # SIGKILL is delivered asynchronously: wait (briefly) until they are gone, so that the
    # check after the fix does not find them still exiting.
    deadline = time.monotonic() + 5
    while killed and time.monotonic() < deadline:
        killed = [p for p in killed if not _dead(p)]
        if killed:
            time.sleep(0.01)
    if found.overlays:  # processes that outlived their node, holding its mounts
        stale = {o.split(" pids ", 1)[0] for o in found.overlays}
        for root, pids in rootfs.node_namespaces(store.home.absolute()).items():
            if root in stale:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
                r in stale for r in rootfs.node_namespaces(store.home.absolute())):
            time.sleep(0.02)
    for point in found.mounts:
        if not point.startswith("/run/netns/"):  # those go with their namespace below
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
    netids = {n[3:11] for n in found.netns} | {n[2:10] for n in found.links}
    netids |= {os.path.basename(m)[3:11] for m in found.mounts if m.startswith("/run/netns/")}
    netids |= {t[2:10] for t in found.tables}
    for netid in sorted(netids):
        network.destroy(netid)  # its table and forwarding with it
    if found.forwarding:
        egress.restore_forwarding()
    if found.cgroups:
        from jobgroup.resources import cgroups

        for path in found.cgroups:
            cgroups.remove(cgroups.NodeCgroup(name=os.path.basename(path), paths=(path,)))
    for f in found.files:
        try:
            os.unlink(f)
        except FileNotFoundError:
            pass
