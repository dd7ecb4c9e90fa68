"""The Slurm backend: one heterogeneous Slurm job per group, one component per task, and the
nodes supervised on the nodes themselves.

How a group runs:
1. `admit` reads what the cluster has (`inventory`): each task gets the first of its
   alternatives the cluster can ever give it (GPU types spelled as the cluster's GRES), or the
   group fails FAILED_NO_RESOURCE with a reason naming the task and the limit. It then submits
   (once) the heterogeneous batch job (`script.batch_script`: each task's nodes, CPUs, memory,
   GRES, partition, account, QOS, time limit, constraint, exclusive, extra `#SBATCH` lines), so
   Slurm co-schedules the whole group all-or-nothing. The job carries a comment
   `jobgroup:<state-dir tag>:<job>` so a restarted controller finds it again. While Slurm keeps
   it pending, `admit` returns Slurm's reason; once it runs, the Slurm job id, each task's
   component id and node list (`slurm_job_id`, `slurm_components`, `slurm_nodes`,
   `slurm_nodelist`) are recorded in the job's options.
2. Supervision near the work: the batch script starts one step per task with one agent per node
   (`agent.c`); each node phase is a request file the controller writes to its node's agent,
   which runs it under jobgroup's shim on the node (the same shim as locally: the node's whole
   process tree, SIGTERM then SIGKILL after the grace, the status file). The submit host runs no
   process per node: the controller learns of an end from the agent's `STATUS.exit` file (woken
   through a FIFO where the nodes share this machine, else within `agents.POLL`), and of a node
   or job lost from Slurm (`squeue`/`scontrol`, every few seconds while phases run). Stopping is
   a `.stop` request: the shim's SIGTERM to the tree, its SIGKILL after the grace; no step is
   cancelled, so nothing of Slurm's (`slurmstepd: error: *** STEP ... CANCELLED`, `srun:
   error: ... Killed`) reaches a node's log. Slurm's own containment (proctrack/cgroup) ends
   whatever is left of a node with its step.
3. Each agent gives itself (so every phase it starts) a private mount and UTS namespace where
   the cluster allows it, with the node's hostname `{task}-{rank}` and the group's hosts file,
   so `{task}-{rank}.{group}` resolves; where it does not, a warning goes into each phase's log
   and only the variables work.
4. `cleanup` ends the job with the group's result: the agents leave and the batch script exits
   0 for a group that SUCCEEDED (Slurm records every component COMPLETED), the failing node's
   exit code for one that failed (FAILED); a cancelled group (or one that never ran) is
   `scancel`ed (CANCELLED).
`jobgroup exec` and command readiness probes run as steps of their own beside the node's
(`srun --overlap`); `top` reads the agent step's figures from `sstat`.
All Slurm commands run with timeouts (a client blocks for long while slurmctld is down).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import msgspec

from jobgroup.backends.base import (
    ENDED, Admission, Backend, Capabilities, Ended, Handle, JobContext, NodeNote, NodeRef,
    Outcome, PhaseLaunch, Refused, Usage,
)
from jobgroup.backends.local import isolation, shim
from jobgroup.backends.slurm import agents, inventory
from jobgroup.backends.slurm.commands import (
    SlurmError, components, job_state, node_addresses, run, step_id,
)
from jobgroup.backends.slurm.script import (
    Component, SettingsError, SlurmSettings, agent_step_name, batch_script, task_submit,
)
from jobgroup.spec.models import JobGroup

# Pending reasons after which the job can never start (Slurm keeps such jobs pending forever).
NEVER = ("PartitionConfig", "PartitionNodeLimit", "BadConstraints", "ReqNodeNotAvail",
         "PartitionTimeLimit", "InvalidAccount", "InvalidQOS", "QOSMaxGRESPerJob")
# Job states in which the job's agents run.
RUNNING = ("RUNNING", "SUSPENDED", "CONFIGURING", "STAGE_OUT")

__all__ = ["SlurmBackend", "SlurmSettings", "load_settings", "plan_components",
           "batch_script"]


def load_settings(home: Path) -> SlurmSettings:
    path = home / "slurm.yaml"
    if not path.exists():
        return SlurmSettings()
    import yaml

    from jobgroup.errors import UsageError

    try:
        return msgspec.convert(yaml.safe_load(path.read_text()) or {}, SlurmSettings)
    except (yaml.YAMLError, msgspec.ValidationError) as e:
        raise UsageError(f"{path}: {e}") from None


def plan_components(group: JobGroup, settings: SlurmSettings, options: dict,
                    inv: inventory.Inventory | None, default_partition: str | None = None
                    ) -> tuple[list[Component], str]:
    """Each task's component (its settings and the alternative the cluster can give it), or
    ([], why not) naming the task and the limit. Without an inventory (Slurm did not answer)
    the first alternative of each task, as the user spelled it."""
    from jobgroup.resources.requests import task_request

    out = []
    for i, t in enumerate(group.tasks):
        try:
            submit = task_submit(t, settings, default_partition)
        except SettingsError as e:
            return [], str(e)
        shapes = task_request(t, i, gpus_any=bool(options.get("gpus_any")),
                              cpu_only=bool(options.get("cpu_only"))).shapes
        if inv is None:
            s = shapes[0]
            gres = (f"gpu:{s.gpu_type}:{s.gpus}" if s.gpu_type else f"gpu:{s.gpus}") \
                if s.gpus else None
            out.append(Component(task=t, submit=submit,
                                 cpus=math.ceil(s.cpus) if s.cpus else None,
                                 memory_mb=math.ceil(s.memory_gb * 1024) if s.memory_gb
                                 else None, gres=gres))
            continue
        comp, why = inventory.choose(t, submit, shapes, inv)
        if comp is None:
            return [], why
        out.append(comp)
    if inv is not None:
        why = inventory.group_fits(out, inv)
        if why:
            return [], why
    return out, ""


# Run inside a step of its own on the node (`jobgroup exec`, readiness probes): give it the node's
# hostname and the group's hosts file when the cluster allows private namespaces (root, or
# unprivileged user namespaces), as the node's agent gives its phases (agent.c).
_NODE_WRAP = r'''
hosts="$1"; name="$2"; shift 2
if [ "$(id -u)" = 0 ] && unshare --mount --uts --propagation private true 2>/dev/null; then
  exec unshare --mount --uts --propagation private sh -c 'mount --bind "$0" /etc/hosts && hostname "$1" && shift && exec "$@"' "$hosts" "$name" "$@"
elif unshare -r --mount --uts true 2>/dev/null; then
  exec unshare -r --mount --uts sh -c 'mount --bind "$0" /etc/hosts && hostname "$1" && shift && exec "$@"' "$hosts" "$name" "$@"
fi
echo "jobgroup: this node allows no private namespaces: peer names do not resolve here; use the SKYPILOT_* variables" >&2
exec "$@"
'''


@dataclass
class _Allocation:
    """A prepared group: where each node runs in the Slurm job (rebuilt by `prepare` from the
    job's recorded facts after a controller restart)."""

    group: JobGroup
    base_dir: Path
    slurm_id: str | None
    hostnames: dict[tuple[int, int], str]  # (task, rank) -> the Slurm node it runs on
    addresses: dict[tuple[int, int], str]
    hosts_file: Path
    components: dict[int, str]  # task -> its component's own job id


class SlurmBackend(Backend):
    """Slurm through its commands; node phases run under shims started by agents on the nodes
    (see the module docstring)."""

    name = "slurm"
    level = "slurm"
    capabilities = Capabilities(self_scheduling=True, exec=True)

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = dict(os.environ)
        self.partition: str | None = None
        self._jobs: dict[int, _Allocation] = {}
        self._watcher = agents.Watcher(home, self._alive)
        self._addresses: dict[str, str] = {}  # Slurm node -> its address, from the inventory
        self._made: dict[int, set[Path]] = {}  # per job: folders known to exist
        # Nodes get the file-creation mask of whoever started the controller.
        self.node_umask = os.umask(0o077)
        os.umask(self.node_umask)
        cluster = home / "devcluster" / "slurm" / "cluster.json"
        if "SLURM_CONF" not in self.env and cluster.exists():
            # `jobgroup dev slurm up` is running: use it unless the user points elsewhere.
            info = json.loads(cluster.read_text())
            self.env["SLURM_CONF"] = info["slurm_conf"]
            self.partition = info.get("partition")

    def _tag(self) -> str:
        from jobgroup.backends.local.network import home_tag

        return home_tag(self.home)

    def _job_dir(self, job_id: int) -> Path:
        return self.home / "jobs" / str(job_id)

    def _find(self, job_id: int) -> str | None:
        """The Slurm job of group `job_id` (by its comment), if Slurm still knows it."""
        p = run(["squeue", "-h", "-o", "%A|%k"], env=self.env)
        want = f"jobgroup:{self._tag()}:{job_id}"
        for line in p.stdout.splitlines():
            jid, _, comment = line.partition("|")
            if comment.strip() == want:
                return jid.strip().split("+")[0]
        return None

    # ---- admission ------------------------------------------------------------------------

    def submission(self, group: JobGroup, options: dict, job_id: int | str,
                   job_dir: Path) -> tuple[str | None, str, list[Component]]:
        """(the batch script, "", components), or (None, why the cluster can never run the
        group, []). Reads the cluster's inventory (SlurmError when Slurm does not answer)."""
        from jobgroup.errors import UsageError

        try:
            settings = load_settings(self.home)
        except UsageError as e:  # a bad slurm.yaml: nothing can be submitted
            raise Refused(str(e)) from None
        inv = inventory.read(self.env)
        self._addresses = {n.name: n.address for n in inv.nodes}
        comps, why = plan_components(group, settings, options, inv, self.partition)
        if not comps:
            return None, why, []
        return batch_script(group, comps, job_id, self._tag(), job_dir), "", comps

    def admit(self, ctx: JobContext) -> Admission:
        job_id, group = ctx.job_id, ctx.group
        slurm_id = ctx.options.get("slurm_job_id")
        if slurm_id is None:
            slurm_id = self._find(job_id)
        if slurm_id is None:
            job_dir = self._job_dir(job_id)
            job_dir.mkdir(parents=True, exist_ok=True)
            script, why, _ = self.submission(group, dict(ctx.options), job_id, job_dir)
            if script is None:
                return Admission("failed", f"Slurm can never run the group: {why}")
            agents.install(self.home, job_id, [(i, r) for i, r, _ in group.nodes()],
                           shim.shim_path(), agents.agent_path())
            (job_dir / "slurm-batch.sh").write_text(script)
            p = run(["sbatch", "--parsable", str(job_dir / "slurm-batch.sh")], env=self.env,
                    cwd=job_dir)
            if p.returncode != 0:
                msg = p.stderr.strip().removeprefix("sbatch: error: ") or "sbatch failed"
                return Admission("failed", f"Slurm refused the group: {msg}")
            slurm_id = p.stdout.strip().split(";")[0].split("+")[0]
            return Admission("waiting", f"submitted as Slurm job {slurm_id}",
                             {"slurm_job_id": slurm_id})
        comps = components(slurm_id, self.env)
        if not comps:
            state, reason = job_state(str(slurm_id), self.env)
            return Admission("failed", f"Slurm job {slurm_id} is gone"
                             + (f" ({state}: {reason})" if state else "")
                             + " (cancelled outside jobgroup, or ended)")
        if all(c.state == "RUNNING" and c.nodes for c in comps) and len(comps) == len(group.tasks):
            nodes = {str(c.index): c.nodes for c in comps}
            return Admission("ready", f"Slurm job {slurm_id} runs on "
                             + ", ".join(",".join(c.nodes) for c in comps),
                             {"slurm_job_id": slurm_id, "slurm_nodes": nodes,
                              "slurm_components": {str(c.index): c.job_id for c in comps},
                              "slurm_nodelist": ",".join(c.nodelist for c in comps)})
        pending = [c for c in comps if c.state == "PENDING"]
        reason = pending[0].reason if pending else comps[0].state
        if any(reason.startswith(n) for n in NEVER):
            run(["scancel", slurm_id], env=self.env)
            return Admission("failed", f"Slurm can never start the group: {reason}")
        if reason in ("", "None"):
            reason = "not yet looked at by Slurm's scheduler"
        return Admission("waiting", f"Slurm job {slurm_id} pending: {reason}",
                         {"slurm_job_id": slurm_id})

    def prepare(self, ctx: JobContext) -> dict[tuple[int, int], str]:
        """Each node's address is that of the Slurm node it was allocated (`admit` recorded
        the node lists in the job's options); the group's hosts file names every node."""
        job_id, group = ctx.job_id, ctx.group
        alloc = self._jobs.get(job_id)
        if alloc is not None:
            return alloc.addresses
        nodes = ctx.options.get("slurm_nodes") or {}
        wanted = {h for names in nodes.values() for h in names}
        # Read at submission (one Slurm command less on the way to the nodes' start), else now.
        addr_of = self._addresses if wanted <= set(self._addresses) else node_addresses(self.env)
        addresses, hostnames = {}, {}
        for i, r, _ in group.nodes():
            names = nodes.get(str(i), [])
            host = names[r] if r < len(names) else ""
            hostnames[(i, r)] = host
            addresses[(i, r)] = addr_of.get(host, host)
        job_dir = self._job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        hosts_file = job_dir / "hosts"
        isolation.write_hosts(hosts_file, [
            (addresses[(i, r)], [f"{t.name}-{r}.{group.name}", f"{t.name}-{r}",
                                 hostnames[(i, r)]])
            for i, r, t in group.nodes()])
        slurm_id = ctx.options.get("slurm_job_id")
        comps = {int(k): str(v) for k, v in (ctx.options.get("slurm_components") or {}).items()}
        self._jobs[job_id] = _Allocation(group, ctx.base_dir, slurm_id, hostnames, addresses,
                                         hosts_file, comps)
        return addresses

    # ---- phases -----------------------------------------------------------------------------

    def _node_argv(self, ref: NodeRef, argv: list[str], workdir: str | None = None,
                   *, agent: bool = False) -> list[str]:
        """`argv` in the node's view, run on the node: its hostname and the group's hosts
        file (`agent`: the node's agent has given itself that view already: `argv` as it is);
        volumes and file mounts through bubblewrap (which must be installed there; mount
        points are made inside the view only, never on the node's disk)."""
        alloc = self._jobs[ref.job_id]
        task = alloc.group.tasks[ref.task_idx]
        if task.volumes or task.file_mounts:
            from jobgroup.backends.local import mounts

            view = isolation.NodeView(
                hostname=f"{task.name}-{ref.rank}", hosts_file=str(alloc.hosts_file),
                binds=mounts.node_binds(task, alloc.base_dir, self.home,
                                        os.path.expanduser("~"), job_id=ref.job_id,
                                        cwd=workdir))
            return ["bwrap", *isolation.bwrap_args(view), "--", *argv]
        if agent:
            return argv
        return ["/bin/sh", "-c", _NODE_WRAP, "jobgroup-node", str(alloc.hosts_file),
                f"{task.name}-{ref.rank}", *argv]

    def _step_argv(self, ref: NodeRef, argv: list[str]) -> list[str]:
        """A step of its own on the node's Slurm node, beside the node's phases (`--overlap`),
        running `argv` in the node's view."""
        alloc = self._jobs[ref.job_id]
        # A one-task group is an ordinary (not heterogeneous) job: no --het-group then.
        het = [f"--het-group={ref.task_idx}"] if len(alloc.group.tasks) > 1 else []
        return ["srun", f"--jobid={alloc.slurm_id}", *het, "-N1", "-n1",
                f"--nodelist={alloc.hostnames[(ref.task_idx, ref.rank)]}", "--overlap",
                "--export=ALL", "--quiet", "--kill-on-bad-exit=1",
                *self._node_argv(ref, argv)]

    def exec_argv(self, ref: NodeRef, argv: list[str]) -> list[str] | None:
        return self._step_argv(ref, argv)

    def attach_argv(self, ref: NodeRef, argv: list[str], *, tty: bool,
                    workdir: str | None = None) -> list[str] | None:
        """A step of its own beside the node's (`srun --overlap` on the node's Slurm node),
        with a pseudo-terminal when `tty` (`--pty`); srun passes the caller's stdio."""
        if ref.job_id not in self._jobs:
            return None
        step = self._step_argv(ref, argv)
        at = step.index("--overlap")
        extra = (["--pty"] if tty else []) + ([f"--chdir={workdir}"] if workdir else [])
        # The caller runs it with the node's environment, which need not name the cluster.
        pin = ["env", f"SLURM_CONF={self.env['SLURM_CONF']}"] if "SLURM_CONF" in self.env \
            else []
        return pin + step[:at] + extra + step[at:]

    def start(self, launch: PhaseLaunch) -> Handle:
        """Ask the node's agent to run the phase under the shim, on the node (a request file
        and a wake-up; no process here)."""
        # As few filesystem calls as can be: a 100-node group's starts are on the way to its
        # nodes, and where the nodes share this machine's cores they compete with them. (A
        # phase's attempt starts once: no stale status of it to remove; the shim removes its
        # own at start-up anyway.)
        ref, alloc = launch.ref, self._jobs[launch.ref.job_id]
        status = agents.status_path(self.home, ref)
        self._mkdir(ref.job_id, launch.log_path.parent, status.parent)
        Path(f"{status}.exit").unlink(missing_ok=True)
        inner = self._node_argv(ref, ["/bin/bash", "-c", launch.script], launch.workdir,
                                agent=True)
        if isolation.uses_bwrap(inner):
            Path(f"{status}.bwrap").touch()  # durable: `outcome` must know how to read codes
        opts = ["-s", str(status), "-o", str(launch.log_path), "-g", f"{launch.grace:g}"]
        if launch.log_max:
            opts += ["-L", str(launch.log_max)]
        opts.append("-T")  # when each piece of output came (LOG.times), as locally
        if launch.workdir:
            self._mkdir(ref.job_id, Path(launch.workdir))
            opts += ["-C", launch.workdir]
        opts += ["-m", f"{self.node_umask:o}"]
        env = dict(launch.env)
        if "SLURM_CONF" in self.env:
            env.setdefault("SLURM_CONF", self.env["SLURM_CONF"])
        track = f"{alloc.slurm_id}-{ref.task_idx}-{ref.rank}-{ref.phase}-{ref.attempt}"
        agents.write_request(self.home, ref, status=status, track_id=track, opts=opts,
                             cmd=inner, env=env)
        return self._handle(ref, alloc.slurm_id, alloc.components.get(ref.task_idx),
                            alloc.hostnames.get((ref.task_idx, ref.rank), ""))

    def _mkdir(self, job_id: int, *dirs: Path) -> None:
        """mkdir -p, once per folder and job (forgotten at cleanup)."""
        made = self._made.setdefault(job_id, set())
        for d in dirs:
            if d not in made:
                d.mkdir(parents=True, exist_ok=True)
                made.add(d)

    def _handle(self, ref: NodeRef, slurm_id: str | None, component: str | None,
                node: str) -> Handle:
        """What a phase is known by, enough for every call in a controller that never
        prepared the group: the Slurm job, the task's component (its own job id: steps and
        `sstat` are listed under it), the agents' step, the Slurm node."""
        if component is None and slurm_id and str(slurm_id).isdigit():
            component = str(int(slurm_id) + ref.task_idx)
        return {"slurm": component or slurm_id, "job": slurm_id,
                "step": agent_step_name(ref.task_idx), "node": node}

    def describe(self, handle: Handle) -> str:
        node = handle.get("node")
        return f"Slurm job {handle.get('job')}" + (f" on {node}" if node else "")

    def watch(self, loop: asyncio.AbstractEventLoop, ref: NodeRef, handle: Handle,
              on_end: Callable[[], None]) -> None:
        self._watcher.add(loop, ref, handle.get("job"), on_end)

    def _alive(self, slurm_id: str) -> tuple[bool, str]:
        state, reason = job_state(slurm_id, self.env)
        if state in RUNNING:
            return True, ""
        if not state:
            return False, f"Slurm no longer knows job {slurm_id}"
        return False, f"Slurm job {slurm_id} is {state}" + (
            f" ({reason})" if reason and reason != "None" else "")

    def outcome(self, ref: NodeRef, handle: Handle | None) -> Outcome | None:
        status = agents.status_path(self.home, ref)
        code = agents.read_exit(Path(f"{status}.exit"))
        gone = self._watcher.gone.get(ref.job_id)
        if code is None and gone is None:
            if handle is None and not agents.requested(self.home, ref):
                return Outcome(signal=signal.SIGKILL, lost=True,
                               note="its request to the node's agent is gone")
            return None
        st = shim.read_status(status)
        if st is not None:
            exit_code, sig = st.exit_code, st.signal
            if Path(f"{status}.bwrap").exists() and exit_code is not None \
                    and 128 < exit_code < 128 + 65:
                # bubblewrap reports a child killed by signal N as exit code 128+N.
                exit_code, sig = None, exit_code - 128
            note = "" if code is not None else f"{gone}: the node's agent ended with it"
            if st.stopped and not agents.stop_asked(self.home, ref):
                # Stopped, but not by us: Slurm ended the job (its time limit, a cancel from
                # outside jobgroup); the phase did not finish its work: killed, not stopped.
                if gone is None and (handle or {}).get("job"):
                    try:  # rare: say what Slurm says of the job (one short command)
                        gone = self._alive(str(handle["job"]))[1] or None
                    except SlurmError:
                        pass
                return Outcome(signal=sig or signal.SIGTERM, note=(
                    f"{gone or 'Slurm ended the job'}: Slurm stopped the node, not jobgroup"))
            return Outcome(exit_code=exit_code, signal=sig, stopped=st.stopped, note=note)
        if code is not None:  # the shim could not start the phase (no status file)
            log = agents.node_dir(self.home, ref) / "agent.log"
            return Outcome(exit_code=code, note=(
                f"its supervisor could not start it on the node (exit {code}); see {log}"))
        out = self._job_dir(ref.job_id) / "slurm-*.out"
        return Outcome(signal=signal.SIGKILL, lost=True,
                       note=f"{gone}: the node ended before the phase (the agents' own output: "
                            f"{out})")

    def recover(self, ref: NodeRef) -> Handle | Ended | None:
        if agents.exited(self.home, ref):
            return ENDED
        if not agents.requested(self.home, ref):
            return None
        alloc = self._jobs.get(ref.job_id)
        if alloc is not None:
            return self._handle(ref, alloc.slurm_id, alloc.components.get(ref.task_idx),
                                alloc.hostnames.get((ref.task_idx, ref.rank), ""))
        ctx = self.jobs.context(ref.job_id)
        options = ctx.options if ctx is not None else {}
        nodes = (options.get("slurm_nodes") or {}).get(str(ref.task_idx)) or []
        comps = options.get("slurm_components") or {}
        return self._handle(ref, options.get("slurm_job_id"), comps.get(str(ref.task_idx)),
                            nodes[ref.rank] if ref.rank < len(nodes) else "")

    def stop(self, ref: NodeRef, handle: Handle, *, kill: bool = False) -> None:
        """A stop request to the node's agent: its shim sends SIGTERM to the phase's whole
        process tree and SIGKILL after the launch's grace (`kill`: SIGKILL now). Quiet when
        the phase has ended."""
        if agents.exited(self.home, ref):
            return
        agents.signal(self.home, ref, kill=kill)

    def reap(self) -> None:
        """No child processes of our own to collect: the shims run on the nodes."""

    def usage(self, ref: NodeRef, handle: Handle | None) -> Usage | None:
        """The agents' step's figures from `sstat` (Slurm's job accounting gatherer): CPU time
        and memory of the task's processes on its nodes (the task's nodes together when it has
        several). A cluster whose JobAcctGatherType is none measures nothing: said in the
        note."""
        component, step = (handle or {}).get("slurm"), (handle or {}).get("step")
        if not component or not step:
            return None
        sid = step_id(str(component), str(step), self.env)
        if sid is None:
            return None
        p = run(["sstat", "-n", "-P", "-j", sid, "--format=TRESUsageInTot,MaxRSS"],
                env=self.env)
        tres = dict(kv.split("=", 1) for line in p.stdout.splitlines()[:1]
                    for kv in line.split("|")[0].split(",") if "=" in kv)
        if not tres:
            why = (p.stderr.strip() or "sstat gave no figures (is JobAcctGatherType set on the "
                   "cluster? `scontrol show config | grep JobAcctGather`)")
            return Usage(source="sstat", note=why[:300])
        alloc = self._jobs.get(ref.job_id)
        n = alloc.group.tasks[ref.task_idx].num_nodes if alloc else 1
        note = "processes are not listed on Slurm" + (
            f"; figures of the task's {n} nodes together" if n > 1 else "")
        return Usage(cpu_seconds=_slurm_seconds(tres.get("cpu", "")),
                     memory_bytes=_slurm_bytes(tres.get("mem", "")), source="sstat",
                     note=note)

    # ---- the end ----------------------------------------------------------------------------

    def cleanup(self, job_id: int) -> list[NodeNote]:
        """End the group's Slurm job with the group's result (see the module docstring), found
        by its comment when this controller never prepared it, and remove its hosts file.
        Idempotent; a Slurm that does not answer is not waited for (its job ends with its time
        limit)."""
        alloc = self._jobs.pop(job_id, None)
        self._watcher.forget(job_id)
        self._made.pop(job_id, None)
        slurm_id = alloc.slurm_id if alloc else None
        if slurm_id is None:
            ctx = self.jobs.context(job_id)
            slurm_id = ctx.options.get("slurm_job_id") if ctx is not None else None
        if slurm_id is None:
            try:
                slurm_id = self._find(job_id)
            except SlurmError:
                slurm_id = None
        code = self._result(job_id)
        ended = False
        if code is not None and slurm_id:
            ended = agents.end(self.home, job_id, code)
        if slurm_id:
            try:
                if ended:
                    self._wait_ended(str(slurm_id))
                else:
                    run(["scancel", str(slurm_id)], env=self.env)
            except SlurmError:
                pass
        for name in ("hosts", "hosts.tmp"):
            (self._job_dir(job_id) / name).unlink(missing_ok=True)
        agents.forget_requests(self.home, job_id)  # they hold the nodes' variables
        return []

    def _result(self, job_id: int) -> int | None:
        """The exit code the batch script ends with (0: the group SUCCEEDED; the first failing
        node's code for a failure), or None for a group that is cancelled (scancel: CANCELLED)
        or never ran."""
        fate = self.jobs.outcome(job_id)
        if fate == "SUCCEEDED":
            return 0
        if fate in ("CANCELLED", "FAILED_NO_RESOURCE", "FAILED_PRECHECKS") or (
                fate is None and self.jobs.state(job_id) == "ending"):
            return None
        return first_failure(self.home, job_id) or 1

    def _wait_ended(self, slurm_id: str, timeout: float = 2.0) -> None:
        """Wait (briefly) until the agents have left and Slurm has ended the job, so that a
        group seen ended has left nothing running; a job still there later ends by itself."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state, _ = job_state(slurm_id, self.env)
            if state not in RUNNING and state != "COMPLETING":
                return
            time.sleep(0.05)


def first_failure(home: Path, job_id: int) -> int | None:
    """The exit code (128 + N for signal N) of the node phase that failed first (by the time
    its status was written; stopped phases do not count), None when none failed."""
    found: list[tuple[float, int]] = []
    nodes = home / "jobs" / str(job_id) / "nodes"
    try:
        paths = [p for p in nodes.iterdir() if p.name.endswith(".status")]
    except OSError:
        return None
    for path in paths:
        st = shim.read_status(path)
        if st is None or st.stopped or st.returncode == 0:
            continue
        try:
            found.append((path.stat().st_mtime, st.returncode))
        except OSError:
            continue
    return min(found)[1] if found else None


def _slurm_seconds(text: str) -> float | None:
    """Slurm's CPU time ("[D-]HH:MM:SS[.mmm]" or "MM:SS.mmm") in seconds."""
    if not text:
        return None
    days, _, rest = text.rpartition("-")
    try:
        parts = [float(x) for x in rest.split(":")]
    except ValueError:
        return None
    seconds = 0.0
    for x in parts:
        seconds = seconds * 60 + x
    return seconds + (int(days) * 86400 if days.isdigit() else 0)


def _slurm_bytes(text: str) -> int | None:
    """Slurm's sizes ("123456", "1.5M", "2G") in bytes."""
    if not text:
        return None
    unit = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(text[-1:].upper(), 1)
    try:
        return int(float(text[:-1] if unit != 1 else text) * unit)
    except ValueError:
        return None
