"""The local backend: every node phase is a process tree on this machine under a C shim.

Supervision (spawning shims, watching them through pidfds, reading their records, finding them
after a controller restart, stopping them) is `runner.ShimRunner`'s, shared with the Slurm
backend. This file adds what makes a node a host here: its address, names and view.

Addresses: each node gets its own loopback address (127.N.N.N, all routed to `lo` by Linux), so a
server may bind its own address and peers reach it by that address; at the `namespaces`
isolation level each node has its own network namespace on a per-group bridge instead
(`network.py`, with a way out: `egress.py`), and the node helper or bubblewrap gives it its
hostname, the group's hosts file, its mounts and its own root (`isolation.py`, `rootfs.py`).
"""

from __future__ import annotations

import asyncio
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from jobgroup import faults
from jobgroup.backends.base import (
    Backend, Capabilities, Ended, Handle, JobContext, NodeRef, NodeNote, Outcome, PhaseLaunch,
    Usage,
)
from jobgroup.backends.local import egress, isolation, mounts, network, rootfs
from jobgroup.backends.local.runner import ShimRunner
from jobgroup.spec.models import JobGroup


def loopback_address(job_id: int, index: int, home: Path | None = None) -> str:
    """A distinct 127/8 address per node of a job (index < 254), for levels without network
    namespaces. The block also depends on the state directory, so job 1 of two state
    directories (two users of one machine) do not share addresses and ports."""
    salt = zlib.crc32(os.fsencode(home.absolute())) if home is not None else 0
    block = (job_id + salt) % (64 * 256)
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
    capabilities = Capabilities(exec=True)  # command probes run in the node's view

    def __init__(self, home: Path) -> None:
        self.home = home
        self.runner = ShimRunner(home)
        self.level = isolation.detect_level()
        self._jobs: dict[int, _JobPlan] = {}

    def _job_dir(self, job_id: int) -> Path:
        return self.home / "jobs" / str(job_id)

    def prepare(self, ctx: JobContext) -> dict[tuple[int, int], str]:
        job_id, group = ctx.job_id, ctx.group
        plan = self._jobs.get(job_id)
        if plan is not None:
            return plan.addresses
        index = {(i, r): n for n, (i, r, _) in enumerate(group.nodes())}
        job_dir = self._job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        net = None
        faults.hit("prepare.begin")
        if self.level == isolation.NAMESPACES:
            # Idempotent: a restarted controller finds the network its predecessor recorded
            # (and repairs it if parts are gone), or removes what an interrupted create left.
            net, resolv = egress.group_network(  # + NAT and DNS, unless --no-egress
                self.home, job_id, len(index), egress=not ctx.options.get("no_egress"))
            faults.hit("prepare.saved")
            addresses = {key: net.addresses[n] for key, n in index.items()}
        else:
            addresses = {key: loopback_address(job_id, n, self.home)
                         for key, n in index.items()}
        hosts_file = job_dir / "hosts"
        isolation.write_hosts(hosts_file, [
            (addresses[(i, r)], [f"{t.name}-{r}.{group.name}", f"{t.name}-{r}"])
            for i, r, t in group.nodes()
        ])
        if net is not None:
            egress.write_resolv(job_dir / "resolv.conf", resolv)
        self._jobs[job_id] = _JobPlan(group, ctx.base_dir, index, addresses, hosts_file, net)
        return addresses

    def _view(self, job_id: int, task_idx: int, rank: int, workdir: str | None,
              user_home: str, launch: PhaseLaunch | None = None) -> isolation.NodeView | None:
        plan = self._jobs.get(job_id)
        if plan is None or self.level == isolation.NONE:
            return None
        task = plan.group.tasks[task_idx]
        node = plan.index[(task_idx, rank)]
        binds = mounts.node_binds(task, plan.base_dir, self.home, user_home, job_id=job_id,
                                  cwd=workdir)
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

    def exec_argv(self, ref: NodeRef, argv: list[str]) -> list[str] | None:
        if self.level == isolation.NAMESPACES:
            # Only ever the node's own namespaces: a view made afresh would mount a second
            # overlay on the node's upper layer, and overlayfs recreates its work directory
            # at each mount, so one racing the node's own start fails that start (ENOENT).
            pid = rootfs.running_pid(self.home, ref.job_id, ref.task_idx, ref.rank)
            return None if pid is None else isolation.join_argv(pid, argv)
        return isolation.wrap(argv, self._view(ref.job_id, ref.task_idx, ref.rank, None,
                                               os.path.expanduser("~")))

    def attach_argv(self, ref: NodeRef, argv: list[str], *, tty: bool,
                    workdir: str | None = None) -> list[str] | None:
        if self.level == isolation.NAMESPACES:
            # The node's own namespaces, as its probes (the terminal is the caller's own).
            pid = rootfs.running_pid(self.home, ref.job_id, ref.task_idx, ref.rank)
            return None if pid is None else isolation.join_argv(pid, argv, cwd=workdir)
        if self.level != isolation.NONE and ref.job_id not in self._jobs:
            return None  # (a group this process never prepared has no view to rebuild)
        return isolation.wrap(argv, self._view(ref.job_id, ref.task_idx, ref.rank, workdir,
                                               os.path.expanduser("~")))

    def usage(self, ref: NodeRef, handle: Handle | None) -> Usage | None:
        from jobgroup.backends.local.usage import node_usage

        return node_usage(self.runner.status_path(ref))

    def start(self, launch: PhaseLaunch) -> Handle:
        ref = launch.ref
        view = self._view(ref.job_id, ref.task_idx, ref.rank, launch.workdir,
                          launch.env.get("HOME", os.path.expanduser("~")), launch)
        inner = isolation.wrap(["/bin/bash", "-c", launch.script], view)
        return self.runner.start(launch, inner, launch.env)

    def describe(self, handle: Handle) -> str:
        return self.runner.describe(handle)

    def reap(self) -> None:
        self.runner.reap()

    def watch(self, loop: asyncio.AbstractEventLoop, ref: NodeRef, handle: Handle,
              on_end: Callable[[], None]) -> None:
        self.runner.watch(loop, handle, on_end)

    def outcome(self, ref: NodeRef, handle: Handle | None) -> Outcome | None:
        return self.runner.outcome(ref, handle)

    def recover(self, ref: NodeRef) -> Handle | Ended | None:
        return self.runner.recover(ref)

    def stop(self, ref: NodeRef, handle: Handle, *, kill: bool = False) -> None:
        self.runner.stop(ref, handle, kill=kill)

    def cleanup(self, job_id: int) -> list[NodeNote]:
        """Remove the group's network (whatever part of it exists, even one whose creation was
        interrupted before it was recorded) and its files. Idempotent; quiet when done twice.
        Returns what each node wrote in its own root, for the job's events; the node roots
        themselves stay with the job's files (rootfs.py)."""
        self.runner.forget(job_id)
        plan = self._jobs.pop(job_id, None)
        names = {f"{t.name}-{r}": (i, r) for i, r, t in plan.group.nodes()} if plan else {}
        if self.level == isolation.NAMESPACES or network.record_path(self.home, job_id).exists():
            network.teardown(self.home, job_id)  # (no network at the other levels)
        faults.hit("network.destroyed")
        mounts.release(self.home, job_id)  # volumes made for the job, mount points it made
        job_dir = self._job_dir(job_id)
        for name in ("hosts", "hosts.tmp", "resolv.conf"):
            (job_dir / name).unlink(missing_ok=True)
        return rootfs.usage_notes(self.home, job_id, names)
