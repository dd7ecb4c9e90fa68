"""SkyPilot's `kubernetes.pod_config`: a partial Pod (metadata and spec) merged into every pod
jobgroup makes (pure).

Where it comes from, lowest first: `pod_config:` of `$JOBGROUP_HOME/kubernetes.yaml` (SkyPilot's
`~/.sky/config.yaml` `kubernetes.pod_config`), then a task's own `config:` block
(`config: {kubernetes: {pod_config: ...}}`, as in a SkyPilot task YAML). How it merges, as
SkyPilot merges it (`sky/utils/config_utils.merge_k8s_configs`; written here from its
documented behaviour):
- mappings merge key by key, recursively; a scalar replaces a scalar;
- lists that Kubernetes patch-merges by a key (`containers`, `initContainers`, `volumes`, `env`
  by `name`; `volumeMounts` by `mountPath`; `ports` by `containerPort`; ...) merge item by item
  on that key, new items appended; a container given without a `name` merges into the first
  container (jobgroup's `node`);
- `command`, `args` and `imagePullSecrets` are replaced whole (credentials are not unioned);
- any other list is appended to;
- a value of another kind than the one it meets (a list over a mapping, ...) is an error.
"""

from __future__ import annotations

import copy
from typing import Any

from jobgroup.spec.models import Task

MERGE_KEYS: dict[str, str | None] = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "volumes": "name", "volumeMounts": "mountPath", "resourceClaims": "name", "env": "name",
    "hostAliases": "ip", "topologySpreadConstraints": "topologyKey", "ports": "containerPort",
    "volumeDevices": "devicePath", "claims": "name",
    # replaced whole
    "command": None, "args": None, "imagePullSecrets": None,
}


class PodConfigError(ValueError):
    """A pod_config that cannot be merged (the message names the key path)."""


def merge(base: dict[str, Any], override: dict[str, Any], path: str = "") -> None:
    """Merge `override` into `base` in place (see the module docstring)."""
    for key, value in override.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in base:
            base[key] = copy.deepcopy(value)
            continue
        have = base[key]
        if isinstance(value, dict):
            if not isinstance(have, dict):
                raise PodConfigError(f"pod_config {where}: a mapping cannot replace a "
                                     f"{type(have).__name__}")
            merge(have, value, where)
        elif isinstance(value, list):
            if key in MERGE_KEYS and MERGE_KEYS[key] is None:
                base[key] = copy.deepcopy(value)
                continue
            if not isinstance(have, list):
                raise PodConfigError(f"pod_config {where}: a list cannot replace a "
                                     f"{type(have).__name__}")
            _merge_list(key, have, value, where)
        elif isinstance(have, (dict, list)):
            raise PodConfigError(f"pod_config {where}: {value!r} cannot replace a "
                                 f"{type(have).__name__}")
        else:
            base[key] = value


def _merge_list(key: str, have: list[Any], items: list[Any], where: str) -> None:
    merge_key = MERGE_KEYS.get(key)
    for item in items:
        if merge_key is None or not isinstance(item, dict):
            have.append(copy.deepcopy(item))
            continue
        name = item.get(merge_key)
        if name is None:
            if key == "containers" and have and isinstance(have[0], dict):
                merge(have[0], item, f"{where}[0]")
            else:
                have.append(copy.deepcopy(item))
            continue
        same = next((h for h in have if isinstance(h, dict) and h.get(merge_key) == name), None)
        if same is None:
            have.append(copy.deepcopy(item))
        else:
            merge(same, item, f"{where}[{merge_key}={name}]")


def task_pod_config(task: Task) -> dict[str, Any] | None:
    """The task's own `config: {kubernetes: {pod_config: ...}}`, None when it has none."""
    cfg = task.config or {}
    k8s = cfg.get("kubernetes") if isinstance(cfg, dict) else None
    if not isinstance(k8s, dict):
        return None
    pc = k8s.get("pod_config")
    return pc if pc is not None else None


def effective(global_config: dict[str, Any], task: Task) -> dict[str, Any]:
    """kubernetes.yaml's pod_config with the task's merged over it (a new mapping)."""
    out = copy.deepcopy(global_config or {})
    own = task_pod_config(task)
    if own is not None:
        if not isinstance(own, dict):
            raise PodConfigError("config.kubernetes.pod_config must be a mapping (a partial "
                                 "Pod: metadata, spec)")
        merge(out, own)
    return out


def problems(global_config: dict[str, Any], task: Task) -> list[str]:
    """Why the pod_config of `task` cannot apply (empty: it can)."""
    out = []
    for name, pc in (("kubernetes.yaml pod_config", global_config),
                     ("config.kubernetes.pod_config", task_pod_config(task))):
        if pc is None:
            continue
        if not isinstance(pc, dict):
            out.append(f"task '{task.name}': {name} must be a mapping (a partial Pod)")
            continue
        unknown = sorted(set(pc) - {"metadata", "spec", "apiVersion", "kind"})
        if unknown:
            out.append(f"task '{task.name}': {name} has {', '.join(map(repr, unknown))}: "
                       "a Pod has metadata and spec")
    if not out:
        try:
            effective(global_config, task)
        except PodConfigError as e:
            out.append(f"task '{task.name}': {e}")
    return out
