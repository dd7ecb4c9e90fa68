"""What the Kubernetes backend cannot honour in a group, and whether it can be reached from
here at all (see `backends.registry`). Light: the client library is only looked for."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from jobgroup.backends.registry import DryRun, Preflight, Target
from jobgroup.errors import UsageError

if TYPE_CHECKING:
    from jobgroup.spec.models import JobGroup, Task


def target(zone: str | None, environ: Mapping[str, str], cwd: str) -> Target:
    """The cluster a launch from a shell with `environ` in directory `cwd` goes to, as kubectl
    there reads it: its KUBECONFIG's files made absolute from `cwd` ("": ~/.kube/config), and
    context `zone` (`infra: kubernetes/CONTEXT`; None: kubernetes.yaml's, else the current)."""
    files = [os.path.normpath(os.path.join(cwd, os.path.expanduser(p)))
             for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return Target(zone=zone, config=os.pathsep.join(files))


def preflight(group: JobGroup, tasks: list[Task], target: Target | None = None) -> Preflight:
    """Problems: no client library, no kubeconfig (or the context asked for, by the launch's
    `infra: kubernetes/CONTEXT` or kubernetes.yaml, is not in it), what rendering cannot honour
    (names that are not DNS labels, ...). Warnings: fields pods ignore, and a missing kubectl
    (logs stay in the cluster). `target`: the launch's kubeconfig and context (None: this
    process's KUBECONFIG, kubernetes.yaml's context)."""
    from jobgroup.backends.kubernetes import load_config, problems as render_problems
    from jobgroup.backends.kubernetes import warnings as render_warnings

    out = Preflight(warnings=list(render_warnings(group)))
    if shutil.which("kubectl") is None:
        out.warnings.append("kubectl is not installed here: the nodes' output stays in the "
                            "cluster (`kubectl logs` elsewhere) and command readiness probes "
                            "cannot run")
    target = target or Target()
    try:
        config = load_config(kubeconfig=target.config, context=target.zone)
    except UsageError as e:
        out.problems.append(str(e))
        return out
    out.problems.extend(render_problems(group, config))
    if importlib.util.find_spec("kubernetes") is None:
        out.problems.append("the kubernetes backend needs the Kubernetes client library, which "
                            "is not installed here: pip install 'jobgroup[kubernetes]'")
        return out
    from jobgroup.backends.kubernetes.config import (
        KubeconfigError, kubeconfig_contexts, kubeconfig_path,
    )

    try:
        contexts, current = kubeconfig_contexts(config.kubeconfig)
    except KubeconfigError as e:
        if config.context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return out  # inside a cluster: the pod's service account is used
        where = kubeconfig_path(config.kubeconfig)
        out.problems.append(
            f"no usable kubeconfig ({where}): {e}; point KUBECONFIG at your cluster's kubeconfig "
            "(as for kubectl), or add --infra local to run the group on this machine")
        return out
    names = [c["name"] for c in contexts]
    if config.context is not None and config.context not in names:
        who = f"infra kubernetes/{target.zone}" if target.zone else "kubernetes.yaml"
        out.problems.append(f"{who} names context {config.context!r}, which the kubeconfig "
                            f"does not have (it has: {', '.join(names) or 'none'}; read from "
                            f"{kubeconfig_path(config.kubeconfig)})")
    elif config.context is None and not current:
        out.problems.append("the kubeconfig has no current context: run `kubectl config "
                            "use-context NAME` or set `context:` in $JOBGROUP_HOME/kubernetes.yaml")
    return out


def dryrun(group: JobGroup, options: dict, home: Path, base_dir: Path, level: str) -> DryRun:
    """The Kubernetes backend's dry run: the objects launch would create (job id 0; a JobSet
    unless kubernetes.yaml says `workload: pods`: a dry run asks no cluster what it serves),
    secret values `<redacted>`, ready for `kubectl apply -f -`; printed instead of the plan."""
    import msgspec

    from jobgroup.backends.kubernetes import load_config
    from jobgroup.backends.kubernetes.config import home_uid
    from jobgroup.backends.kubernetes.render import render_objects, render_yaml
    from jobgroup.state.options import launch_of

    # the labels a launch gives (the state directory's uid too); the job id is 0
    launch = launch_of(options)
    config = msgspec.structs.replace(load_config(home, kubeconfig=launch.kubeconfig,
                                                 context=launch.zone), home_uid=home_uid(home))
    env = dict(options.get("env") or {})
    objects = render_objects(group, 0, config, base_dir=base_dir, env=env, reveal_secrets=False)
    text = render_yaml(group, 0, config, base_dir=base_dir, env=env)
    return DryRun(documents=objects, yaml=text)

