"""What `jobgroup launch --dryrun` prints on a backend whose nodes are processes (local, Slurm):
the plan of a checked launch, as one plain document (pure). Backends whose dry run is a set of
objects of their own (Kubernetes) print those instead.

Contract: built from a `submit.Prepared` — the group exactly as it would run (launch-time values
and overrides applied, relative paths made absolute against the launcher's folder) — so what
the plan shows is what `launch` would start. It lists the group's execution and primaries, per
task its nodes (rank, hostname, FQDN), resources per node, workdir, mounts, setup/run (first
line), readiness probe and dependencies, and the *names* of its variables: `envs` and `--env`
values are shown, secret values never (`<secret>`), nor the launcher's inherited environment
(only which variable names nodes inherit). Each backend adds what is its own (the isolation
level and whether the group fits this machine; the sbatch script) under `backend`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobgroup import discovery

if TYPE_CHECKING:
    from jobgroup.spec.models import JobGroup, Task
    from jobgroup.submit import Prepared

SECRET = "<secret>"


def plan(p: Prepared, backend: dict[str, Any]) -> dict[str, Any]:
    """The plan document of `p` with the backend's own part `backend` (`registry.DryRun`)."""
    g = p.group
    overrides = dict(p.launch.env)
    secrets = {k for t in g.tasks for k in t.secrets}
    doc: dict[str, Any] = {
        "dryrun": True,
        "group": g.name,
        "infra": p.kind,
        "execution": g.execution,
        "folder": str(p.base_dir),
    }
    if g.primary_tasks:
        doc["primary_tasks"] = list(g.primary_tasks)
    if g.termination_delay is not None:
        doc["termination_delay"] = g.termination_delay
    if g.max_group_restarts:
        doc["max_group_restarts"] = g.max_group_restarts
    doc["nodes"] = sum(t.num_nodes for t in g.tasks)
    doc["tasks"] = [_task(g, t, overrides, secrets) for t in g.tasks]
    inherited = sorted(p.launch.base_env or {})
    doc["inherited_variables"] = inherited
    options = {k: v for k, v in (("grace", p.launch.grace), ("cpu_only", p.launch.cpu_only),
                                 ("gpus_any", p.launch.gpus_any),
                                 ("best_effort", p.launch.best_effort),
                                 ("no_egress", p.launch.no_egress)) if v}
    if options:
        doc["options"] = options
    doc["backend"] = backend
    return doc


def _task(g: JobGroup, t: Task, overrides: dict[str, str], secrets: set[str]) -> dict[str, Any]:
    name = t.name or ""
    out: dict[str, Any] = {"name": name, "num_nodes": t.num_nodes}
    if g.primary_tasks:
        out["primary"] = name in g.primaries
    res = {k: v for k, v in (("cpus", t.resources.cpus), ("memory", t.resources.memory),
                             ("accelerators", t.resources.accelerators),
                             ("ports", t.resources.ports)) if v is not None}
    if t.resources.any_of or t.resources.ordered:
        res["alternatives"] = len(t.resources.any_of or t.resources.ordered or [])
    if res:
        out["resources_per_node"] = res
    out["nodes"] = [{"rank": r, "hostname": discovery.hostname(name, r),
                     "fqdn": discovery.fqdn(name, r, g.name)} for r in range(t.num_nodes)]
    if t.workdir is not None:
        out["workdir"] = t.workdir
    if t.file_mounts:
        out["file_mounts"] = dict(t.file_mounts)
    if t.volumes:
        out["volumes"] = dict(t.volumes)
    env = {**t.envs, **overrides}
    shown = {k: (SECRET if k in secrets else v) for k, v in sorted(env.items())}
    shown.update({k: SECRET for k in sorted(t.secrets)})
    if shown:
        out["envs"] = shown
    for phase in ("setup", "run"):
        script = getattr(t, phase)
        if script:
            lines = script.strip().splitlines()
            out[phase] = lines[0] + (f"  # ... {len(lines)} lines" if len(lines) > 1 else "")
    probe = t.readiness_probe
    if probe is not None:
        if probe.http is not None:
            out["readiness_probe"] = f"HTTP GET :{probe.http.port}{probe.http.path}"
        elif probe.tcp is not None:
            out["readiness_probe"] = f"TCP :{probe.tcp.port}"
        else:
            out["readiness_probe"] = f"command {probe.command!r}"
    deps = t.dependencies()
    if deps:
        out["depends_on"] = deps
    return out


def to_text(doc: object, fmt: str) -> str:
    """`doc` as YAML (block style, keys in plan order) or JSON, ending with a newline."""
    if fmt == "json":
        import json

        return json.dumps(doc, indent=2) + "\n"
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        # Scripts (the sbatch script) read as blocks, not one quoted line with \n's.
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100,
                     allow_unicode=True)
