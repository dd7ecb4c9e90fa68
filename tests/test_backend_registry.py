"""The backend registry: names and aliases, one preflight per backend, and what a user sees
for an infra no backend runs (through the real CLI)."""

from __future__ import annotations

from jobgroup.backends import registry
from jobgroup.spec import load


def group(*infras: str | None):
    docs = ["name: g\nexecution: parallel\n"]
    for i, infra in enumerate(infras):
        res = f"resources: {{infra: {infra}}}\n" if infra else ""
        docs.append(f"name: t{i}\n{res}run: echo hi\n")
    return load("---\n".join(docs))


def test_kinds_and_aliases():
    assert registry.kind(None) == "local"
    assert registry.kind("kubernetes/my-context") == "kubernetes"
    assert registry.kind("K8s") == "kubernetes"
    assert registry.kind("slurm") == "slurm"
    assert registry.kind("slurmm") == "slurmm"
    assert set(registry.BACKENDS) == {"local", "slurm", "kubernetes"}
    assert registry.entry("k8s").on_this_machine is False
    assert registry.entry("local").on_this_machine and registry.entry("slurm").on_this_machine


def test_zones_and_targets_of_infra_values(tmp_path):
    """What follows the backend's name is its zone (SkyPilot's rule for Kubernetes: the whole
    rest, '/' included, is a context; `*` is none); a Kubernetes launch's target is the zone
    and the launching shell's KUBECONFIG files made absolute from its directory; one backend
    object per target (`key`), one for every launch of the others."""
    assert registry.zone("kubernetes/my-context") == "my-context"
    assert registry.zone("k8s/arn:aws:eks:us-east-1:1:cluster/gpu") == \
        "arn:aws:eks:us-east-1:1:cluster/gpu"
    assert registry.zone("k8s/*") is None and registry.zone("k8s") is None
    assert registry.zone(None) is None and registry.zone(" k8s/ a /") == "a"
    env = {"KUBECONFIG": "conf:~/b:/abs/c"}
    home = __import__("os").path.expanduser("~")
    t = registry.target("k8s", "ctx", env, str(tmp_path))
    assert t == registry.Target(zone="ctx", config=f"{tmp_path}/conf:{home}/b:/abs/c")
    assert registry.target("kubernetes", None, {}, "/").config == ""  # ~/.kube/config
    assert registry.target("slurm", "x", env) == registry.Target()
    assert registry.key("k8s", registry.Target()) == "kubernetes"
    assert registry.key("kubernetes", t) == f"kubernetes/ctx@{t.config}"
    assert registry.key("local", t) == "local"


def test_unknown_override_is_one_problem_with_a_suggestion():
    said = registry.preflight(group(None, None), "slurmm")
    assert said.problems == ["--infra slurmm: no such backend (backends: local, slurm, "
                             "kubernetes); did you mean 'slurm'?"]


def test_unknown_task_infra_names_the_task():
    said = registry.preflight(group(None, "aws"))
    assert len(said.problems) == 1
    assert "task 't1' asks for infra 'aws'" in said.problems[0]
    assert "--infra local" in said.problems[0]


def test_local_preflight_warns_about_image_id():
    g = load("name: t\nresources: {image_id: 'docker:python:3.11'}\nrun: echo hi\n")
    said = registry.preflight(g)
    assert not said.problems
    assert said.warnings == ["task 't': image_id is ignored by the local backend (no containers)"]


def test_cli_unknown_infra_exit_2_with_suggestion(jenv):
    spec = jenv.spec("name: t\nrun: echo hi\n")
    p = jenv.jg("launch", str(spec), "--infra", "kubernets", "-d")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "did you mean 'kubernetes'?" in p.stderr
