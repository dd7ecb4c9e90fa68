"""The Slurm backend: one heterogeneous Slurm job per group, one component per task.

How a group runs:
1. `admit` submits (once) a heterogeneous batch job whose components ask for each task's nodes,
   CPUs, memory and GPUs (GRES), so Slurm co-schedules the whole group all-or-nothing. Its batch
   script only holds the allocation. The job carries a comment `jobgroup:<state-dir tag>:<job>`
   so a restarted controller finds it again. While Slurm keeps it pending, `admit` returns
   Slurm's reason (Resources, Priority, ...); a request Slurm refuses outright fails the group
   FAILED_NO_RESOURCE with Slurm's message.
2. Each node phase runs as a job step: `srun --jobid J --het-group T -w NODE -N1 -n1 --overlap`,
   named after the phase (`--job-name jobgroup-J-TASK-RANK-PHASE-ATTEMPT`), started and
   supervised by the same local shim runner as on the local backend (the step's output lands
   in the node's log file). Stopping sends SIGTERM to the step's tasks through Slurm (`scancel --signal=TERM
   J.STEP`: srun itself answers SIGTERM by killing its tasks at once, so the shim is not
   signalled); a detached watcher cancels the step after the launch's grace if it still runs
   (Slurm then sends SIGTERM again and SIGKILL after its KillWait), so the kill comes even if
   the controller dies meanwhile. `kill=True` kills the shim's srun at once.
3. Inside the step, a private mount and UTS namespace (where the cluster allows it) give the node
   its hostname `{task}-{rank}` and the group's hosts file, so `{task}-{rank}.{group}` resolves;
   where it does not, a warning goes into the node's log and only the variables work.
4. `cleanup` cancels the Slurm job (`scancel`).
All Slurm commands run with timeouts (a client blocks for long while slurmctld is down).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import msgspec

from jobgroup.backends.base import (
    Admission, Backend, Capabilities, Ended, Handle, JobContext, NodeNote, NodeRef, Outcome,
    PhaseLaunch, Refused, Unreachable, Usage,
)
from jobgroup.backends.local import isolation
from jobgroup.backends.local.runner import ShimRunner
from jobgroup.spec.models import JobGroup
from jobgroup.spec.resources import parse_accelerators, parse_cpus, parse_memory

TIMEOUT = 15.0
# Pending reasons after which the job can never start (Slurm keeps such jobs pending forever).
NEVER = ("PartitionConfig", "PartitionNodeLimit", "BadConstraints", "ReqNodeNotAvail",
         "PartitionTimeLimit", "InvalidAccount", "InvalidQOS", "QOSMaxGRESPerJob")


class SlurmError(Unreachable):
    """A Slurm command failed to run or answer (not a refusal: those are Admission results)."""


def run(argv: list[str], *, timeout: float = TIMEOUT, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]} not found: is Slurm installed here (and on PATH)?") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{' '.join(argv[:2])} did not answer within {timeout:g}s "
                         "(is slurmctld up?)") from None


class SlurmSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`$JOBGROUP_HOME/slurm.yaml`: where groups go. A task's `resources.labels` may override
    any of these for its component (`slurm-partition`, `slurm-account`, `slurm-qos`)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None


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


def batch_script(group: JobGroup, job_id: int, tag: str, log_dir: Path,
                 partition: str | None = None, settings: SlurmSettings | None = None) -> str:
    """The heterogeneous batch script of a group (pure)."""
    settings = settings or SlurmSettings(partition=partition)
    lines = ["#!/bin/bash"]
    for i, t in enumerate(group.tasks):
        if i:
            lines.append("#SBATCH hetjob")
        opts = [f"--nodes={t.num_nodes}", "--ntasks-per-node=1"]
        cpus = parse_cpus(t.resources.cpus)
        if cpus is not None:
            opts.append(f"--cpus-per-task={max(1, int(-(-cpus.value // 1)))}")
        mem = parse_memory(t.resources.memory)
        if mem is not None:
            opts.append(f"--mem={max(1, int(mem.value * 1024))}M")
        alts = parse_accelerators(t.resources.accelerators)
        if alts:
            (gpu, count), = list(alts[0].items())[:1]
            opts.append(f"--gres=gpu:{gpu.lower()}:{max(1, int(count))}")
        labels = t.resources.labels or {}
        for key in ("partition", "account", "qos"):
            value = labels.get(f"slurm-{key}") or getattr(settings, key) or (
                partition if key == "partition" else None)
            if value:
                opts.append(f"--{key}={value}")
        if i == 0:
            opts += [f"--job-name=jobgroup-{job_id}-{group.name}",
                     f"--comment=jobgroup:{tag}:{job_id}",
                     f"--output={log_dir / 'slurm-%j.out'}"]
        lines += [f"#SBATCH {o}" for o in opts]
    lines += ["# Holds the allocation; jobgroup runs every node's setup and run as job steps.",
              "exec sleep infinity", ""]
    return "\n".join(lines)


def expand_nodes(nodelist: str, env: dict[str, str] | None = None) -> list[str]:
    if not nodelist or nodelist in ("(null)", "None"):
        return []
    p = run(["scontrol", "show", "hostnames", nodelist], env=env)
    return p.stdout.split()


@dataclass(frozen=True)
class Component:
    index: int
    state: str
    reason: str
    nodes: list[str]


def components(slurm_id: str, env: dict[str, str] | None = None) -> list[Component]:
    """State of each heterogeneous component of job `slurm_id` (squeue)."""
    p = run(["squeue", "-h", "-j", slurm_id, "-o", "%i|%T|%r|%N"], env=env)
    out = []
    for line in p.stdout.splitlines():
        jid, state, reason, nodelist = (line.split("|") + ["", "", "", ""])[:4]
        m = re.search(r"\+(\d+)$", jid.strip())
        out.append(Component(int(m.group(1)) if m else 0, state.strip(), reason.strip(),
                             expand_nodes(nodelist.strip(), env)))
    return sorted(out, key=lambda c: c.index)


def node_addresses(env: dict[str, str] | None = None) -> dict[str, str]:
    p = run(["sinfo", "-h", "-N", "-o", "%N %o"], env=env)
    out = {}
    for line in p.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


# Run inside the step: give the node its own hostname and the group's hosts file when the
# cluster allows private namespaces (root, or unprivileged user namespaces), then run the phase.
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


class SlurmBackend(Backend):
    """Slurm through its commands; node phases are job steps (`srun`) supervised by local
    shims (`ShimRunner`, as on the local backend; Slurm enforces the limits)."""

    name = "slurm"
    level = "slurm"
    capabilities = Capabilities(self_scheduling=True, exec=True)

    def __init__(self, home: Path) -> None:
        self.home = home
        self.runner = ShimRunner(home, limits=False)
        self.env = dict(os.environ)
        self.partition: str | None = None
        self._jobs: dict[int, _Allocation] = {}
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

    def admit(self, ctx: JobContext) -> Admission:
        job_id, group = ctx.job_id, ctx.group
        slurm_id = ctx.options.get("slurm_job_id")
        if slurm_id is None:
            slurm_id = self._find(job_id)
        if slurm_id is None:
            job_dir = self._job_dir(job_id)
            job_dir.mkdir(parents=True, exist_ok=True)
            from jobgroup.errors import UsageError

            try:
                settings = load_settings(self.home)
            except UsageError as e:  # a bad slurm.yaml: nothing can be submitted
                raise Refused(str(e)) from None
            if settings.partition is None and self.partition:
                settings = msgspec.structs.replace(settings, partition=self.partition)
            script = batch_script(group, job_id, self._tag(), job_dir, settings=settings)
            (job_dir / "slurm-batch.sh").write_text(script)
            p = run(["sbatch", "--parsable", str(job_dir / "slurm-batch.sh")], env=self.env)
            if p.returncode != 0:
                msg = p.stderr.strip().removeprefix("sbatch: error: ") or "sbatch failed"
                return Admission("failed", f"Slurm refused the group: {msg}")
            slurm_id = p.stdout.strip().split(";")[0].split("+")[0]
            return Admission("waiting", f"submitted as Slurm job {slurm_id}",
                             {"slurm_job_id": slurm_id})
        comps = components(slurm_id, self.env)
        if not comps:
            return Admission("failed", f"Slurm job {slurm_id} is gone (cancelled outside "
                             "jobgroup, or ended)")
        if all(c.state == "RUNNING" and c.nodes for c in comps) and len(comps) == len(group.tasks):
            nodes = {str(c.index): c.nodes for c in comps}
            return Admission("ready", f"Slurm job {slurm_id} runs on "
                             + ", ".join(",".join(c.nodes) for c in comps),
                             {"slurm_job_id": slurm_id, "slurm_nodes": nodes})
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
        addr_of = node_addresses(self.env)
        addresses, hostnames = {}, {}
        for i, t in enumerate(group.tasks):
            names = nodes.get(str(i), [])
            for r in range(t.num_nodes):
                host = names[r] if r < len(names) else ""
                hostnames[(i, r)] = host
                addresses[(i, r)] = addr_of.get(host, host)
        job_dir = self._job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        hosts_file = job_dir / "hosts"
        isolation.write_hosts(hosts_file, [
            (addresses[(i, r)], [f"{t.name}-{r}.{group.name}", f"{t.name}-{r}",
                                 hostnames[(i, r)]])
            for i, t in enumerate(group.tasks) for r in range(t.num_nodes)])
        self._jobs[job_id] = _Allocation(group, ctx.base_dir, ctx.options.get("slurm_job_id"),
                                         hostnames, addresses, hosts_file)
        return addresses

    @staticmethod
    def _step_name(slurm_id: str | None, ref: NodeRef) -> str:
        """The job step's name of phase `ref` (unique in the cluster: it names the job)."""
        return f"jobgroup-{slurm_id}-{ref.task_idx}-{ref.rank}-{ref.phase}-{ref.attempt}"

    def _step_argv(self, ref: NodeRef, argv: list[str], *, name: str | None = None
                   ) -> list[str]:
        alloc = self._jobs[ref.job_id]
        task_idx, rank = ref.task_idx, ref.rank
        task = alloc.group.tasks[task_idx]
        if task.volumes or task.file_mounts:
            # Volumes live on the shared filesystem ($JOBGROUP_HOME/volumes/NAME) and appear at
            # their mount path through bubblewrap on the node (mount points are created inside
            # the step's view only, never on the node's disk); bwrap must be installed there.
            from jobgroup.backends.local import mounts

            view = isolation.NodeView(
                hostname=f"{task.name}-{rank}", hosts_file=str(alloc.hosts_file),
                binds=mounts.node_binds(task, alloc.base_dir, self.home,
                                        os.path.expanduser("~")))
            inner = ["bwrap", *isolation.bwrap_args(view), "--", *argv]
        else:
            inner = ["/bin/sh", "-c", _NODE_WRAP, "jobgroup-node", str(alloc.hosts_file),
                     f"{task.name}-{rank}", *argv]
        # A one-task group is an ordinary (not heterogeneous) job: no --het-group then.
        het = [f"--het-group={task_idx}"] if len(alloc.group.tasks) > 1 else []
        named = [f"--job-name={name}"] if name else []
        return ["srun", f"--jobid={alloc.slurm_id}", *het, *named, "-N1", "-n1",
                f"--nodelist={alloc.hostnames[(task_idx, rank)]}", "--overlap", "--export=ALL",
                "--quiet", "--kill-on-bad-exit=1", *inner]

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

    def usage(self, ref: NodeRef, handle: Handle | None) -> Usage | None:
        """The step's figures from `sstat` (Slurm's job accounting gatherer): CPU time and
        memory of its tasks; the cluster lists no processes. A cluster whose
        JobAcctGatherType is none measures nothing: said in the note."""
        slurm_id, step = (handle or {}).get("slurm"), (handle or {}).get("step")
        if not slurm_id or not step:
            return None
        step_id = self._step_id(str(slurm_id), str(step))
        if step_id is None:
            return None
        p = run(["sstat", "-n", "-P", "-j", step_id, "--format=TRESUsageInTot,MaxRSS"],
                env=self.env)
        tres = dict(kv.split("=", 1) for line in p.stdout.splitlines()[:1]
                    for kv in line.split("|")[0].split(",") if "=" in kv)
        if not tres:
            why = (p.stderr.strip() or "sstat gave no figures (is JobAcctGatherType set on the "
                   "cluster? `scontrol show config | grep JobAcctGather`)")
            return Usage(source="sstat", note=why[:300])
        return Usage(cpu_seconds=_slurm_seconds(tres.get("cpu", "")),
                     memory_bytes=_slurm_bytes(tres.get("mem", "")), source="sstat",
                     note="processes are not listed on Slurm")

    def start(self, launch: PhaseLaunch) -> Handle:
        """The phase as a job step, started (and supervised) by a local shim: stopping the
        shim signals srun, which forwards the signal to the step."""
        env = dict(launch.env)
        if "SLURM_CONF" in self.env:
            env.setdefault("SLURM_CONF", self.env["SLURM_CONF"])
        ref, alloc = launch.ref, self._jobs[launch.ref.job_id]
        inner = self._step_argv(ref, ["/bin/bash", "-c", launch.script],
                                name=self._step_name(alloc.slurm_id, ref))
        return self._step_handle(ref, self.runner.start(launch, inner, env), alloc.slurm_id,
                                 launch.grace)

    def _step_handle(self, ref: NodeRef, handle: Handle, slurm_id: str | None,
                     grace: float) -> Handle:
        """The shim's handle plus what `stop` needs, even in a controller that never prepared
        the group: the step's name, the job it runs in (a heterogeneous job's component T
        has the job id J + T and lists its steps under it) and the launch's grace."""
        job = str(int(slurm_id) + ref.task_idx) if slurm_id and str(slurm_id).isdigit() \
            else slurm_id
        return {**handle, "slurm": job, "step": self._step_name(slurm_id, ref),
                "grace": grace}

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
        found = self.runner.recover(ref)
        if not isinstance(found, dict):
            return found
        alloc = self._jobs.get(ref.job_id)
        ctx = self.jobs.context(ref.job_id)
        options = ctx.options if ctx is not None else {}
        slurm_id = alloc.slurm_id if alloc else options.get("slurm_job_id")
        grace = options.get("grace", 10.0)
        return self._step_handle(ref, found, slurm_id,
                                 float(grace) if isinstance(grace, (int, float)) else 10.0)

    def stop(self, ref: NodeRef, handle: Handle, *, kill: bool = False) -> None:
        """SIGTERM to the step's tasks through Slurm, and the kill after the grace (see the
        module's docstring); the shim's way (srun killed, its tasks with it) with `kill`, for
        a step Slurm does not list (not registered yet, or ended), or a handle that names
        none (made before steps were named). Quiet when the phase is gone."""
        slurm_id, step = handle.get("slurm"), handle.get("step")
        step_id = None
        if not kill and slurm_id and step and self.runner.running(handle):
            step_id = self._step_id(str(slurm_id), str(step))
        if step_id is None:
            self.runner.stop(ref, handle, kill=kill)
            return
        run(["scancel", "--signal=TERM", step_id], env=self.env)
        grace = handle.get("grace")
        grace = float(grace) if isinstance(grace, (int, float)) else 10.0
        # Cancel the step once the grace is over, unless it ended (looked at every second).
        watcher = ('end=$(( $(date +%s) + $0 )); '
                   'while [ "$(date +%s)" -lt "$end" ]; do '
                   '[ -n "$(squeue -h --steps="$1" -o %i 2>/dev/null)" ] || exit 0; sleep 1; '
                   'done; exec scancel --quiet "$1"')
        subprocess.Popen(["/bin/sh", "-c", watcher, str(max(0, int(-(-grace // 1)))), step_id],
                         env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)

    def _step_id(self, slurm_id: str, step: str) -> str | None:
        """`JOB.STEP` of the running step named `step` of Slurm job `slurm_id`, or None."""
        p = run(["squeue", "-h", "-s", "-j", slurm_id, "-o", "%i|%j"], env=self.env)
        for line in p.stdout.splitlines():
            sid, _, name = line.partition("|")
            if name.strip() == step:
                return sid.strip()
        return None

    def cleanup(self, job_id: int) -> list[NodeNote]:
        """Cancel the group's Slurm job (found by its comment when this controller never
        prepared it) and remove its hosts file. Idempotent; a Slurm that does not answer is
        not waited for (its job ends with its time limit)."""
        alloc = self._jobs.pop(job_id, None)
        slurm_id = alloc.slurm_id if alloc else None
        if slurm_id is None:
            try:
                slurm_id = self._find(job_id)
            except SlurmError:
                slurm_id = None
        if slurm_id:
            try:
                run(["scancel", str(slurm_id)], env=self.env)
            except SlurmError:
                pass
        self.runner.forget(job_id)
        for name in ("hosts", "hosts.tmp"):
            (self._job_dir(job_id) / name).unlink(missing_ok=True)
        return []


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

