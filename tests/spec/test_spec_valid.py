"""Valid specs: job groups, pipelines and single tasks load into one normalized JobGroup."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from jobgroup.spec import Loaded, load, load_file
from jobgroup.spec.durations import delay_for
from jobgroup.spec.models import JobGroup, JobRecovery, Resources, Task

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*/*.yaml"))


def test_examples_exist_and_load() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"train-eval", "rl-post-training"} <= names
    for path in EXAMPLES:
        loaded = load_file(path)
        assert loaded.warnings == [], path
        assert loaded.base_dir == path.parent


def test_rl_example_is_the_seed_group() -> None:
    group = load(REPO / "examples/rl-post-training/rl-post-training.yaml")
    assert group.name == "rl-post-training" and group.execution == "parallel"
    assert {t.name: t.num_nodes for t in group.tasks} == {
        "data-server": 1, "rollout-server": 2, "reward-server": 1, "replay-buffer": 1,
        "ppo-trainer": 2}
    assert group.primaries == ["ppo-trainer"]
    assert delay_for(group, "replay-buffer") == 15 and delay_for(group, "data-server") == 5
    assert group.task("ppo-trainer").envs["NUM_STEPS"] == "30"


def test_train_eval_example_shares_a_volume() -> None:
    group = load(REPO / "examples/train-eval/train-eval.yaml")
    assert [t.name for t in group.tasks] == ["trainer", "evaluator"]
    vols = [t.volumes for t in group.tasks]
    assert vols[0] == vols[1] == {"/checkpoints": "train-eval-ckpt"}
    assert group.primaries == ["trainer", "evaluator"]


def test_job_group_with_every_header_field() -> None:
    group = load(textwrap.dedent("""\
        name: rl
        execution: parallel
        placement: SAME_INFRA
        primary_tasks: [trainer]
        termination_delay: {default: 30s, buffer: 2M}
        inter_connection: false
        ---
        name: trainer
        num_nodes: 2
        ---
        name: buffer
        """))
    assert group == JobGroup(
        name="rl", execution="parallel", primary_tasks=["trainer"],
        termination_delay={"default": "30s", "buffer": "2M"}, inter_connection=False,
        tasks=[Task(name="trainer", num_nodes=2), Task(name="buffer")])
    assert delay_for(group, "buffer") == 120


def test_single_task_is_a_group_of_one_named_after_it() -> None:
    group = load("name: hello\nrun: echo hi\n")
    assert group == JobGroup(name="hello", execution="parallel",
                             tasks=[Task(name="hello", run="echo hi")])


def test_single_unnamed_task_takes_the_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "My_Job.yaml"
    path.write_text("run: echo hi\n")
    group = load(path)
    assert group.name == "my-job" and group.tasks[0].name == "task-0"


def test_pipeline_without_header_is_serial_with_default_names(tmp_path: Path) -> None:
    path = tmp_path / "pipe.yml"
    path.write_text("run: echo 1\n---\nname: task-0\nrun: echo 2\n---\nrun: echo 3\n")
    group = load(path)
    assert group.execution == "serial" and group.name == "pipe"
    assert [t.name for t in group.tasks] == ["task-1", "task-0", "task-2"]


def test_pipeline_with_name_only_header() -> None:
    group = load("name: pipe\n---\nname: a\n---\nname: b\n")
    assert group.execution == "serial" and group.name == "pipe"
    assert [t.name for t in group.tasks] == ["a", "b"]


def test_serial_header_and_trailing_document_separator() -> None:
    group = load("name: p\nexecution: serial\n---\nname: a\n---\n")
    assert group.execution == "serial" and [t.name for t in group.tasks] == ["a"]


def test_name_argument_overrides_the_group_name() -> None:
    assert load("name: a\nrun: x\n", name="other").name == "other"


def test_envs_and_secrets_become_strings() -> None:
    task = load("envs: {A: 1, B: true, C: off, D: 0.5, E: text, F: ''}\n"
                "secrets: {TOKEN: 123}\n").tasks[0]
    assert task.envs == {"A": "1", "B": "true", "C": "false", "D": "0.5", "E": "text", "F": ""}
    assert task.secrets == {"TOKEN": "123"}


def test_every_task_field_is_parsed() -> None:
    task = load(textwrap.dedent("""\
        name: full
        workdir: ./code
        num_nodes: 3
        resources:
          infra: k8s
          cloud: aws
          region: us-east-1
          zone: us-east-1a
          accelerators: {A100: 2}
          accelerator_args: {runtime_version: x}
          cpus: 4+
          memory: 32GB+
          instance_type: p4d
          use_spot: true
          disk_size: 256
          disk_tier: medium
          network_tier: best
          ports: [8080, "9000-9002"]
          image_id: docker:python:3.11
          labels: {team: ml}
          any_of: [{accelerators: H100}, {accelerators: A100}]
          job_recovery: {strategy: FAILOVER, max_restarts_on_errors: 3, recover_on_exit_codes: [33]}
          autostop: {idle_minutes: 10}
          max_hourly_cost: 10.5
        envs: {A: b}
        secrets: {T: s}
        file_mounts: {/data: ./data, /bucket: {source: s3://b, mode: MOUNT}}
        volumes: {/ckpt: vol}
        setup: pip install x
        run: python train.py
        config: {kubernetes: {pod_config: {}}}
        event_callback: echo event
        """)).tasks[0]
    assert task.resources.job_recovery == JobRecovery(
        strategy="FAILOVER", max_restarts_on_errors=3, recover_on_exit_codes=[33])
    assert task.resources.any_of == [Resources(accelerators="H100"), Resources(accelerators="A100")]
    assert task.file_mounts["/bucket"] == {"source": "s3://b", "mode": "MOUNT"}
    assert (task.workdir, task.num_nodes, task.event_callback) == ("./code", 3, "echo event")


def test_gpus_is_an_alias_of_accelerators() -> None:
    task = load("resources: {gpus: 'H100:8', any_of: [{gpus: A100}]}\n").tasks[0]
    assert task.resources.accelerators == "H100:8"
    assert task.resources.any_of == [Resources(accelerators="A100")]


def test_yaml_anchors_and_merge_keys() -> None:
    task = load(textwrap.dedent("""\
        name: b
        resources:
          any_of:
            - &base {cpus: 2, memory: 8}
            - <<: *base
              cpus: 4
        """)).tasks[0]
    assert task.resources.any_of == [Resources(cpus=2, memory=8), Resources(cpus=4, memory=8)]


def test_name_warnings_say_where_names_will_not_resolve() -> None:
    loaded = load_file("name: My_Group\nexecution: parallel\n---\nname: Trainer\n---\n"
                       f"name: {'x' * 60}\n")
    assert [(p.line, p.where, p.path, p.severity) for p in loaded.warnings] == [
        (1, "header", "name", "warning"), (4, "task 'Trainer'", "name", "warning")]
    assert "upper-case" in loaded.warnings[0].message and "my-group" in loaded.warnings[0].message
    assert str(loaded.warnings[1]).startswith("<string>:4:7: task 'Trainer' name: warning: ")


def test_delay_without_primaries_is_a_warning() -> None:
    loaded = load_file("name: g\nexecution: parallel\ntermination_delay: 10s\n---\nname: a\n")
    assert [(p.path, p.severity) for p in loaded.warnings] == [("termination_delay", "warning")]


def test_unicode_letters_are_accepted_in_names() -> None:
    loaded = load_file("name: trainér\nrun: x\n")
    assert loaded.group.name == "trainér"
    assert "non-ASCII" in loaded.warnings[0].message


def test_load_file_of_text_has_no_path_and_cwd_base(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    loaded = load_file("run: x\n")
    assert isinstance(loaded, Loaded) and loaded.path is None and loaded.base_dir == tmp_path


@pytest.mark.parametrize("text", ["name: a\n", "{}\n", "name: a\nrun: ''\n"])
def test_minimal_tasks(text: str) -> None:
    assert len(load(text).tasks) == 1
