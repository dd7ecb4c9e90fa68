"""Specs built in code are checked like files; every spec round-trips through YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobgroup.spec import SpecError, check, dump, load
from jobgroup.spec.models import JobGroup, JobRecovery, Resources, Task

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*/*.yaml")), ids=lambda p: p.stem)
def test_examples_round_trip(path: Path) -> None:
    group = load(path)
    assert load(dump(group)) == group
    assert dump(load(dump(group))) == dump(group)


def test_code_built_group_like_a_parallel_dag() -> None:
    group = JobGroup(
        name="rl", primary_tasks=["trainer"], termination_delay={"default": "30s"},
        tasks=[
            Task(name="trainer", num_nodes=2, run="python train.py\necho done\n",
                 resources=Resources(accelerators={"H100": 8}, cpus="8+",
                                     job_recovery=JobRecovery(max_restarts_on_errors=2)),
                 envs={"LR": "0.1", "FLAG": "true"}),
            Task(name="buffer", resources=Resources(memory="64+", ports=["8000-8002"])),
        ])
    assert check(group) == group
    text = dump(group)
    assert text.startswith("---\nname: rl\nexecution: parallel\n")
    assert "run: |" in text and "FLAG: 'true'" in text
    assert load(text) == group


def test_pipeline_and_single_task_round_trip() -> None:
    for group in (load("run: echo a\n---\nrun: echo b\n"), load("name: one\nrun: echo\n")):
        assert load(dump(group)) == group


def test_check_fills_in_default_names_of_pipelines() -> None:
    group = JobGroup(name="p", execution="serial", tasks=[Task(run="a"), Task(run="b")])
    assert [t.name for t in check(group).tasks] == ["task-0", "task-1"]


def test_check_reports_problems_without_line_numbers() -> None:
    group = JobGroup(name="g", primary_tasks=["nope"], tasks=[
        Task(name="a", num_nodes=0, resources=Resources(cpus="lots")), Task(run="x")])
    with pytest.raises(SpecError) as info:
        check(group)
    assert str(info.value).splitlines() == [
        "<JobGroup>: header primary_tasks[0]: unknown task 'nope'; tasks in this group: a",
        "<JobGroup>: task 'a' num_nodes: must be at least 1 (got 0)",
        "<JobGroup>: task 'a' resources.cpus: invalid cpus 'lots': expected a positive number, "
        "optionally with '+' for 'at least' (e.g. 4, 4+, 0.5)",
        "<JobGroup>: task #2: a task in a job group needs a name (tasks find each other by "
        "name): add 'name: ...'",
    ]


def test_check_reports_wrong_types_and_unwritable_values() -> None:
    with pytest.raises(SpecError, match="num_nodes: expected an integer, got a string"):
        check(JobGroup(name="g", tasks=[Task(name="a", num_nodes="2")]))  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="cannot write a object"):
        check(JobGroup(name="g", tasks=[Task(name="a", config={"x": object()})]))
    with pytest.raises(SpecError, match="header but no task"):
        check(JobGroup(name="g", tasks=[]))
    with pytest.raises(TypeError):
        check({"name": "g"})  # type: ignore[arg-type]


def test_check_accepts_path_objects_as_text() -> None:
    group = check(JobGroup(name="g", tasks=[Task(name="a", workdir=Path("code"))]))  # type: ignore[arg-type]
    assert group.tasks[0].workdir == "code"


def test_dump_quotes_strings_that_look_like_other_types() -> None:
    group = JobGroup(name="g", tasks=[Task(name="a", envs={"A": "1", "B": "yes", "C": "null",
                                                           "D": "1:30", "E": " spaced "})])
    assert load(dump(group)) == group
