"""Where a job runs, in a word, for listings (`queue`'s INFRA column, `api.Job.infra`): each
backend's short label, then `:` and the fact its admission records in the job's options once
there is one — `local`, `slurm:1234` (the Slurm job id), `k8s:ml-team` (the namespace); a launch
to a named zone shows it after the label (`k8s/gpu-cluster:ml-team`: `infra:
kubernetes/gpu-cluster`, a kubeconfig context).

Stdlib only and tiny: the API imports it for every listing (the registry's dataclasses cost
more to import than a `queue` of 1,000 jobs takes to read). A backend added to
`backends.registry` gets its row here (a test keeps the two in step).
"""

from __future__ import annotations

# backend name -> (label, the job option naming where it runs, or None)
LABELS: dict[str, tuple[str, str | None]] = {
    "local": ("local", None),
    "slurm": ("slurm", "slurm_job_id"),
    "kubernetes": ("k8s", "k8s_namespace"),
}
# The job options `where_label` reads (the store hands listings only these).
WHERE_KEYS = ("infra", "zone", *sorted({k for _, k in LABELS.values() if k}))


def where_label(options: dict) -> str:
    """`local`, `slurm:1234`, `k8s:ml-team`, `k8s/ctx:ml-team`; the bare label (`slurm`, `k8s`)
    until the backend has recorded where (the cluster has not taken the group yet)."""
    infra = str(options.get("infra") or "local")
    label, key = LABELS.get(infra, (infra, None))
    if options.get("zone"):
        label = f"{label}/{options['zone']}"
    fact = options.get(key) if key else None
    return f"{label}:{fact}" if fact not in (None, "") else label
