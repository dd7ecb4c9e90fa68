"""Finding (and removing) what crashed runs left behind: network namespaces, bridges and veths
of groups that have ended, node processes of ended groups, and stale hosts/network files.

Only things of *this* state directory are considered: jobgroup's interface and namespace names
carry a tag derived from the state directory (see `backends.local.network`), and node processes
carry a marker naming their status file under it. Resources of groups that have not ended are
never touched (a stopped controller re-adopts them).
"""

from __future__ import annotations

import os
import signal

import msgspec

from jobgroup.backends.local import network
from jobgroup.backends.local.backend import PHASE_MARK
from jobgroup.state.store import Store


class Leftovers(msgspec.Struct, kw_only=True):
    netns: list[str]
    links: list[str]
    processes: list[int]
    files: list[str]
    cgroups: list[str] = []

    @property
    def empty(self) -> bool:
        return not (self.netns or self.links or self.processes or self.files or self.cgroups)


def _job_of_netid(netid: str) -> int | None:
    try:
        return int(netid[4:8], 36)
    except ValueError:
        return None


def find(store: Store) -> Leftovers:
    tag = network.home_tag(store.home)
    active = {j.id % 36**4 for j in store.jobs(active_only=True)}
    names = network.existing(tag)

    def stale(name: str, prefix: str) -> bool:
        job = _job_of_netid(name[len(prefix):len(prefix) + 8])
        return job is None or job not in active

    netns = [n for n in names["netns"] if stale(n, "jg-")]
    links = [n for n in names["bridges"] + names["veths"] if stale(n, "jg")]
    active_ids = {j.id for j in store.jobs(active_only=True)}
    jobs_dir = store.home / "jobs"
    marker = f"{PHASE_MARK}={jobs_dir}/".encode()
    procs = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        at = env.find(marker)
        if at < 0:
            continue
        rest = env[at + len(marker):].split(b"/", 1)[0]
        if not rest.isdigit() or int(rest) not in active_ids:
            procs.append(int(entry))
    files = []
    if jobs_dir.is_dir():
        for d in jobs_dir.iterdir():
            if d.name.isdigit() and int(d.name) not in active_ids:
                for name in ("hosts", "network.json"):
                    if (d / name).exists():
                        files.append(str(d / name))
    from jobgroup.resources import cgroups

    groups = []
    for cg in cgroups.leftovers(store.home):
        job = cg.name.split("-")[1] if cg.name.count("-") >= 3 else ""
        if not job.isdigit() or int(job) not in active_ids:
            groups.extend(cg.paths)
    return Leftovers(netns=sorted(netns), links=sorted(links), processes=sorted(procs),
                     files=sorted(files), cgroups=sorted(groups))


def fix(found: Leftovers) -> None:
    """Remove everything in `found` (processes first, then network, then files)."""
    for pid in found.processes:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    netids = {n[3:11] for n in found.netns} | {n[2:10] for n in found.links}
    for netid in sorted(netids):
        network.destroy(netid)
    if found.cgroups:
        from jobgroup.resources import cgroups

        for path in found.cgroups:
            cgroups.remove(cgroups.NodeCgroup(name=os.path.basename(path), paths=(path,)))
    for f in found.files:
        try:
            os.unlink(f)
        except FileNotFoundError:
            pass
