"""Strict validation of the objects the kubernetes backend makes, for the tests.

- Built-in kinds (Pod, Service, ConfigMap, Secret, PVC, Job): kubernetes-validate, strict
  (unknown fields are errors), against the Kubernetes OpenAPI schemas of `version`.
- JobSet (jobset.x-k8s.io/v1alpha2): `schemas/jobset-v1alpha2.json`, a JSON schema of the fields
  jobgroup uses, written by us from JobSet's API reference; each replicatedJob's template as a
  batch/v1 Job (kubernetes-validate, strict); and the rules of JobSet's CRD (CEL) and admission
  webhook that a schema cannot say (`jobset_rules`).
- Kueue Workload (kueue.x-k8s.io/v1beta2), as the fake cluster makes them: `schemas/kueue-
  workload-v1beta2.json`, the fields jobgroup reads, written from Kueue's API reference.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS = Path(__file__).resolve().parent / "schemas"
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_cache: dict[str, Any] = {}


def schema(name: str) -> Any:
    if name not in _cache:
        _cache[name] = json.loads((SCHEMAS / name).read_text())
    return _cache[name]


def jobset_rules(obj: dict[str, Any]) -> list[str]:
    """What JobSet's CRD validations and its webhook refuse (jobset_webhook.go's
    ValidateCreate and the CRD's x-kubernetes-validations), for the fields jobgroup sets."""
    out: list[str] = []
    spec = obj["spec"]
    name = obj["metadata"]["name"]
    rjobs = spec["replicatedJobs"]
    names = [r["name"] for r in rjobs]
    if len(set(names)) != len(names):
        out.append(f"replicatedJobs names repeat: {names}")
    if (spec.get("startupPolicy") or {}).get("startupPolicyOrder") == "InOrder" and \
            any("dependsOn" in r for r in rjobs):
        out.append("StartupPolicy and DependsOn APIs are mutually exclusive")
    if rjobs and "dependsOn" in rjobs[0]:
        out.append("DependsOn can't be set for the first ReplicatedJob")
    seen: set[str] = set()
    for r in rjobs:
        seen.add(r["name"])
        for dep in r.get("dependsOn") or []:
            if dep["name"] not in seen or dep["name"] == r["name"]:
                out.append(f"replicatedJob: {r['name']} cannot depend on replicatedJob: "
                           f"{dep['name']}")
        replicas = r.get("replicas", 1)
        job = f"{name}-{r['name']}-{replicas - 1}"
        if len(job) > 63 or not _DNS1035.match(job):
            out.append(f"job name {job!r} is not a DNS-1035 label")
        tspec = r["template"]["spec"]
        if tspec.get("completionMode") == "Indexed" and "completions" in tspec:
            pod = f"{job}-{tspec['completions'] - 1}-abcde"
            if len(pod) > 63 or not _DNS1035.match(pod):
                out.append(f"pod name {pod!r} is not a DNS-1035 label")
    for target in (spec.get("successPolicy") or {}).get("targetReplicatedJobs") or []:
        if target not in names:
            out.append(f"invalid replicatedJob name '{target}' does not appear in "
                       ".spec.ReplicatedJobs")
    for rule in (spec.get("failurePolicy") or {}).get("rules") or []:
        for target in rule.get("targetReplicatedJobs") or []:
            if target not in names:
                out.append(f"failure policy rule {rule['name']}: no replicatedJob {target}")
    return out


def validate(obj: dict[str, Any], version: str) -> None:
    """Raise AssertionError naming the object and what is wrong with it."""
    import kubernetes_validate as kv

    kind, name = obj["kind"], obj["metadata"]["name"]
    try:
        if kind == "PodGroup":  # scheduler-plugins' CRD: no schema of ours
            assert obj["apiVersion"] == "scheduling.x-k8s.io/v1alpha1"
            assert obj["spec"]["minMember"] > 0
        elif kind == "JobSet":
            jsonschema.validate(obj, schema("jobset-v1alpha2.json"))
            errs = jobset_rules(obj)
            assert not errs, errs
            for r in obj["spec"]["replicatedJobs"]:
                tpl = r["template"]
                job = {"apiVersion": "batch/v1", "kind": "Job",
                       "metadata": {"name": f"{name}-{r['name']}-0",
                                    **(tpl.get("metadata") or {})},
                       "spec": tpl["spec"]}
                kv.validate(job, version, strict=True)
        elif kind == "Workload":
            jsonschema.validate(obj, schema("kueue-workload-v1beta2.json"))
        else:
            kv.validate(obj, version, strict=True)
    except (kv.ValidationError, jsonschema.ValidationError) as e:
        raise AssertionError(f"{kind} {name}: {e}") from None


def validate_all(objs: list[dict[str, Any]], version: str = "1.33") -> None:
    for obj in objs:
        validate(obj, version)
