"""Names, addresses, environment variables and the topology file of every node (pure).

Contract: given a spec, the job id and each node's address, produce exactly what a node sees:
- hostname `{task}-{rank}` and FQDN `{task}-{rank}.{group}` (SkyPilot's scheme);
- SkyPilot's variables, so existing scripts run unchanged: SKYPILOT_JOBGROUP_NAME,
  SKYPILOT_JOBGROUP_HOST_<TASK> (upper-case, `-` -> `_`, the head node's address) for every task,
  SKYPILOT_NODE_RANK, SKYPILOT_NUM_NODES, SKYPILOT_NODE_IPS (newline-separated, rank order),
  SKYPILOT_NUM_GPUS_PER_NODE, SKYPILOT_TASK_ID (SkyPilot's managed-job format,
  `sky-managed-<submission time>_<group>[_<task>]_<job id>-<task index>`: the same across restarts
  of the task, see `task_id`), SKYPILOT_TASK_IDS (every task's, `\n`-joined, in task order),
  SKYPILOT_MANAGED_JOB_ID, SKYPILOT_CLUSTER_INFO (JSON: cluster_name, cloud, region, zone),
  SKYPILOT_USER / SKYPILOT_USER_ID (the submitting user), and during setup
  SKYPILOT_SETUP_NODE_RANK / SKYPILOT_SETUP_NODE_IPS / SKYPILOT_SETUP_NUM_GPUS_PER_NODE;
- JOBGROUP_TOPOLOGY: the path of a JSON file listing every task's nodes (rank, hostname, fqdn,
  address) and declared ports.
Precedence (lowest first): the task's `envs`, then `--env` overrides, then the variables above
(they describe the real placement, so a user cannot break discovery by accident).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any

from jobgroup.spec.models import JobGroup, Task
from jobgroup.spec.resources import parse_accelerators, ports as parse_ports


def env_key(task_name: str) -> str:
    """`rollout-server` -> `ROLLOUT_SERVER` (what SKYPILOT_JOBGROUP_HOST_<TASK> uses)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", task_name).upper()


def hostname(task_name: str, rank: int) -> str:
    return f"{task_name}-{rank}"


def fqdn(task_name: str, rank: int, group: str) -> str:
    return f"{task_name}-{rank}.{group}"


def gpus_per_node(task: Task) -> int:
    """GPUs one node of `task` asks for (the first alternative of `accelerators`), else 0."""
    alts = parse_accelerators(task.resources.accelerators)
    if not alts:
        return 0
    return int(sum(alts[0].values()))


# SKYPILOT_TASK_ID's time where the caller does not know when the job was submitted (a
# Kubernetes `--dryrun`, which has no job yet): the format, not a real time.
NO_TIME = "1970-01-01-00-00-00-000000"


def task_id(group: JobGroup, job_id: int, task_idx: int,
            submitted_at: float | None = None) -> str:
    """SKYPILOT_TASK_ID as a SkyPilot managed job's controller builds it (`sky/jobs/controller.py`
    with `common_utils.get_global_job_id`): `sky-managed-<time>_<dag>_<job id>-<task index>` for
    a single task, `sky-managed-<time>_<dag>_<task>_<job id>-<task index>` in a group or a
    pipeline of several tasks; `<time>` is `%Y-%m-%d-%H-%M-%S-%f` in local time, `<dag>` the
    group's name. SkyPilot stamps the time its controller started the job; jobgroup the job's
    submission (`submitted_at`, from the store): the same for every node and every restart of a
    task, group restarts and controller restarts included. None: `NO_TIME`."""
    stamp = NO_TIME if submitted_at is None else \
        datetime.fromtimestamp(submitted_at).strftime("%Y-%m-%d-%H-%M-%S-%f")
    name = group.name if len(group.tasks) <= 1 else \
        f"{group.name}_{group.tasks[task_idx].name or ''}"
    return f"sky-managed-{stamp}_{name}_{job_id}-{task_idx}"


def user_id(user: str) -> str:
    """A short stable id of a user name (SkyPilot's SKYPILOT_USER_ID is 8 hex digits too)."""
    return hashlib.md5(user.encode(), usedforsecurity=False).hexdigest()[:8]


def topology(group: JobGroup, job_id: int, addresses: dict[tuple[int, int], str]) -> dict[str, Any]:
    """The JSON document every node can read at $JOBGROUP_TOPOLOGY."""
    return {
        "group": group.name,
        "job_id": job_id,
        "tasks": [
            {
                "name": t.name,
                "num_nodes": t.num_nodes,
                "ports": parse_ports(t.resources.ports),
                "nodes": [
                    {
                        "rank": r,
                        "hostname": hostname(t.name or "", r),
                        "fqdn": fqdn(t.name or "", r, group.name),
                        "address": addresses[(i, r)],
                    }
                    for r in range(t.num_nodes)
                ],
            }
            for i, t in enumerate(group.tasks)
        ],
    }


def node_env(
    group: JobGroup,
    job_id: int,
    task_idx: int,
    rank: int,
    addresses: dict[tuple[int, int], str],
    *,
    topology_path: str,
    overrides: dict[str, str] | None = None,
    setup: bool = False,
    user: str = "",
    infra: str = "local",
    submitted_at: float | None = None,
) -> dict[str, str]:
    """Variables for one node (added to the inherited environment by the backend). `user`:
    who submitted the job; `infra`: the backend it runs on (SKYPILOT_CLUSTER_INFO's cloud);
    `submitted_at`: when the job was submitted (the time in SKYPILOT_TASK_ID, `task_id`)."""
    task = group.tasks[task_idx]
    env: dict[str, str] = dict(task.envs)
    env.update(task.secrets)
    env.update(overrides or {})
    ips = "\n".join(addresses[(task_idx, r)] for r in range(task.num_nodes))
    env.update(
        {
            "SKYPILOT_JOBGROUP_NAME": group.name,
            "SKYPILOT_NODE_RANK": str(rank),
            "SKYPILOT_NUM_NODES": str(task.num_nodes),
            "SKYPILOT_NODE_IPS": ips,
            "SKYPILOT_NUM_GPUS_PER_NODE": str(gpus_per_node(task)),
            "SKYPILOT_TASK_ID": task_id(group, job_id, task_idx, submitted_at),
            "SKYPILOT_TASK_IDS": "\n".join(task_id(group, job_id, i, submitted_at)
                                           for i in range(len(group.tasks))),
            "SKYPILOT_MANAGED_JOB_ID": str(job_id),
            "SKYPILOT_CLUSTER_INFO": json.dumps({
                "cluster_name": f"{group.name}-{job_id}", "cloud": infra, "region": None,
                "zone": None}),
            "JOBGROUP_JOB_ID": str(job_id),
            "JOBGROUP_TASK": task.name or "",
            "JOBGROUP_HOSTNAME": hostname(task.name or "", rank),
            "JOBGROUP_FQDN": fqdn(task.name or "", rank, group.name),
            "JOBGROUP_TOPOLOGY": topology_path,
        }
    )
    if user:  # who submitted the job (left out where the caller does not know it)
        env["SKYPILOT_USER"] = user
        env["SKYPILOT_USER_ID"] = user_id(user)
    for i, t in enumerate(group.tasks):
        env[f"SKYPILOT_JOBGROUP_HOST_{env_key(t.name or '')}"] = addresses[(i, 0)]
    if setup:
        env["SKYPILOT_SETUP_NODE_RANK"] = str(rank)
        env["SKYPILOT_SETUP_NODE_IPS"] = ips
        env["SKYPILOT_SETUP_NUM_GPUS_PER_NODE"] = str(gpus_per_node(task))
    return env
