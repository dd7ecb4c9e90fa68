"""Invalid specs, table-driven: every error is reported, at the right place, with its substance,
and nothing else is reported (no noise)."""

from __future__ import annotations

import textwrap

import pytest

from jobgroup.spec import SpecError, load

GROUP = "name: g\nexecution: parallel\n---\n"  # a valid header; task documents start at line 4

# (id, spec text, [(line, col or None, where, key path, words the message must contain)])
CASES = [
    ("yaml-syntax", "name: a\nrun: [unclosed\n", [(3, None, "", "", "invalid YAML")]),
    ("yaml-tab-indent", "name: a\nresources:\n\tcpus: 4\n", [(3, 1, "", "", "invalid YAML")]),
    ("duplicate-key", "name: a\nrun: echo 1\nrun: echo 2\n",
     [(3, 1, "task 'a'", "run", "duplicate key 'run' (first given at line 2)")]),
    ("duplicate-key-nested", GROUP + "name: t\nresources:\n  cpus: 1\n  cpus: 2\n",
     [(7, 3, "task 't'", "resources.cpus", "duplicate key")]),
    ("header-only", "name: g\nexecution: parallel\n",
     [(1, 1, "header", "", "header but no task")]),
    ("empty-header", "{}\n---\nname: t\nrun: echo\n", [(1, 1, "header", "", "header is empty")]),
    ("header-no-name", "execution: parallel\n---\nname: t\n",
     [(1, 1, "header", "", "needs a name")]),
    ("group-name-int", "name: 123\nexecution: parallel\n---\nname: t\n",
     [(1, 7, "header", "name", "expected a string, got an integer (123)")]),
    ("group-name-empty", "name: ''\nexecution: parallel\n---\nname: t\n",
     [(1, 7, "header", "name", "must not be empty")]),
    ("group-name-bad-chars", "name: my group\nexecution: parallel\n---\nname: t\n",
     [(1, 7, "header", "name", "only letters, digits")]),
    ("task-name-missing", GROUP + "run: echo\n---\nname: b\n",
     [(4, 1, "task #1", "", "needs a name")]),
    ("task-name-null", GROUP + "name:\nrun: echo\n", [(4, 1, "task #1", "", "needs a name")]),
    ("task-name-int", GROUP + "name: 123\n",
     [(4, 7, "task #1", "name", "expected a string")]),
    ("task-name-empty", GROUP + "name: ''\n", [(4, 7, "task #1", "name", "must not be empty")]),
    ("task-name-dot", GROUP + "name: a.b\n", [(4, 7, "task #1", "name", "'.'")]),
    ("task-name-duplicate", GROUP + "name: trainer\n---\nname: trainer\n",
     [(6, 7, "task 'trainer'", "name", "duplicate task name 'trainer' (also at line 4)")]),
    ("execution-typo", "name: g\nexecution: paralel\n---\nname: t\n",
     [(2, 12, "header", "execution", "did you mean 'parallel'")]),
    ("execution-wrong-type", "name: g\nexecution: 1\n---\nname: t\n",
     [(2, 12, "header", "execution", "'parallel'")]),
    ("primary-unknown", "name: g\nexecution: parallel\nprimary_tasks: [nope]\n---\nname: trainer\n",
     [(3, 17, "header", "primary_tasks[0]", "unknown task 'nope'; tasks in this group: trainer")]),
    ("primary-not-list", "name: g\nexecution: parallel\nprimary_tasks: trainer\n---\nname: trainer\n",
     [(3, 16, "header", "primary_tasks", "expected a list")]),
    ("primary-in-pipeline", "name: p\nprimary_tasks: [a]\n---\nname: a\n",
     [(2, 1, "header", "primary_tasks", "only to job groups")]),
    ("delay-bad", "name: g\nexecution: parallel\nprimary_tasks: [a]\ntermination_delay: 5 minutes\n"
                  "---\nname: a\n---\nname: b\n",
     [(4, 20, "header", "termination_delay", "invalid duration '5 minutes'")]),
    ("delay-negative", "name: g\nexecution: parallel\nprimary_tasks: [a]\ntermination_delay: -3\n"
                       "---\nname: a\n---\nname: b\n",
     [(4, 20, "header", "termination_delay", "non-negative")]),
    ("delay-unknown-key", "name: g\nexecution: parallel\nprimary_tasks: [a]\n"
                          "termination_delay: {default: 5s, nope: 1m, b: 1x}\n---\nname: a\n---\nname: b\n",
     [(4, 34, "header", "termination_delay.nope", "unknown task 'nope'"),
      (4, 47, "header", "termination_delay.b", "invalid duration '1x'")]),
    ("num-nodes-zero", GROUP + "name: t\nnum_nodes: 0\n",
     [(5, 12, "task 't'", "num_nodes", "at least 1 (got 0)")]),
    ("num-nodes-negative", GROUP + "name: t\nnum_nodes: -2\n",
     [(5, 12, "task 't'", "num_nodes", "at least 1")]),
    ("num-nodes-float", GROUP + "name: t\nnum_nodes: 1.5\n",
     [(5, 12, "task 't'", "num_nodes", "expected an integer, got a number (1.5)")]),
    ("num-nodes-string", GROUP + "name: t\nnum_nodes: two\n",
     [(5, 12, "task 't'", "num_nodes", "expected an integer, got a string ('two')")]),
    ("num-nodes-bool", GROUP + "name: t\nnum_nodes: true\n",
     [(5, 12, "task 't'", "num_nodes", "expected an integer")]),
    ("cpus", GROUP + "name: t\nresources:\n  cpus: four\n",
     [(6, 9, "task 't'", "resources.cpus", "invalid cpus 'four'")]),
    ("cpus-zero", GROUP + "name: t\nresources: {cpus: 0}\n",
     [(5, 19, "task 't'", "resources.cpus", "positive")]),
    ("memory-unit", GROUP + "name: t\nresources: {memory: 4QB}\n",
     [(5, 21, "task 't'", "resources.memory", "invalid memory '4QB'")]),
    ("memory-list", GROUP + "name: t\nresources: {memory: [4]}\n",
     [(5, 21, "task 't'", "resources.memory", "expected a number or a string, got a list")]),
    ("accelerators-count", GROUP + "name: t\nresources: {accelerators: 'A100:x'}\n",
     [(5, 27, "task 't'", "resources.accelerators", "invalid accelerator count 'x'")]),
    ("accelerators-zero", GROUP + "name: t\nresources: {accelerators: {A100: 0}}\n",
     [(5, 27, "task 't'", "resources.accelerators", "positive")]),
    ("accelerators-empty-list", GROUP + "name: t\nresources: {accelerators: []}\n",
     [(5, 27, "task 't'", "resources.accelerators", "empty")]),
    ("accelerators-dict-value", GROUP + "name: t\nresources:\n  accelerators: {A100: many}\n",
     [(6, 24, "task 't'", "resources.accelerators.A100", "expected a number, got a string")]),
    ("ports", GROUP + "name: t\nresources: {ports: '9000-8000'}\n",
     [(5, 20, "task 't'", "resources.ports", "above the last")]),
    ("ports-out-of-range", GROUP + "name: t\nresources: {ports: [80, 70000]}\n",
     [(5, 20, "task 't'", "resources.ports", "invalid port 70000")]),
    ("any-of-and-ordered", GROUP + "name: t\nresources:\n  any_of: [{cpus: 1}]\n  ordered: [{cpus: 2}]\n",
     [(7, 12, "task 't'", "resources.ordered", "not both")]),
    ("any-of-item", GROUP + "name: t\nresources:\n  any_of:\n    - cpus: 1\n    - cpus: x\n      bogus: 1\n",
     [(8, 13, "task 't'", "resources.any_of[1].cpus", "invalid cpus 'x'"),
      (9, 7, "task 't'", "resources.any_of[1].bogus", "unknown field 'bogus'")]),
    ("gpus-and-accelerators", GROUP + "name: t\nresources: {gpus: A100, accelerators: V100}\n",
     [(5, 13, "task 't'", "resources.gpus", "either gpus or accelerators")]),
    ("unknown-task-field", GROUP + "name: t\nrunn: echo\n",
     [(5, 1, "task 't'", "runn", "unknown field 'runn'; did you mean 'run'?")]),
    ("unknown-resources-field", GROUP + "name: t\nresources:\n  acelerators: A100\n",
     [(6, 3, "task 't'", "resources.acelerators", "did you mean 'accelerators'?")]),
    ("unknown-serial-header-field", "name: p\nexecution: serial\nprimary_task: [t]\n---\nname: t\n",
     [(3, 1, "header", "primary_task", "did you mean 'primary_tasks'?")]),
    ("task-field-in-serial-header", "name: p\nexecution: serial\nrun: echo\n---\nname: t\n",
     [(3, 1, "header", "run", "task field")]),
    ("header-field-in-task", GROUP + "name: t\nprimary_tasks: [t]\n",
     [(5, 1, "task 't'", "primary_tasks", "header field")]),
    ("not-a-mapping", GROUP + "- name: t\n", [(4, 1, "task #1", "", "not a list")]),
    ("scalar-document", "just a string\n", [(1, 1, "task #1", "", "not a string")]),
    ("empty-middle-document", GROUP + "name: a\n---\n---\nname: b\n",
     [(6, 1, "task #2", "", "document is empty")]),
    ("env-name", GROUP + "name: t\nenvs: {MY-VAR: 1}\n",
     [(5, 8, "task 't'", "envs.MY-VAR", "invalid environment variable name")]),
    ("env-list", GROUP + "name: t\nenvs: {A: [1]}\n",
     [(5, 11, "task 't'", "envs.A", "expected a string, got a list")]),
    ("env-and-secret", GROUP + "name: t\nenvs: {A: x}\nsecrets: {A: y}\n",
     [(6, 11, "task 't'", "secrets.A", "both envs and secrets")]),
    ("volume-relative", GROUP + "name: t\nvolumes: {ckpt: vol}\n",
     [(5, 11, "task 't'", "volumes.ckpt", "must be absolute")]),
    ("run-list", GROUP + "name: t\nrun: [echo]\n",
     [(5, 6, "task 't'", "run", "expected a string, got a list")]),
    ("job-recovery", GROUP + "name: t\nresources:\n  job_recovery: {max_restarts_on_errors: -1}\n",
     [(6, 42, "task 't'", "resources.job_recovery.max_restarts_on_errors", "0 or more")]),
    ("unknown-tag", GROUP + "name: t\nrun: !Ref x\n", [(5, 6, "task 't'", "run", "cannot read this value")]),
    ("complex-key", GROUP + "name: t\n? [a, b]\n: 1\n", [(5, 3, "task 't'", "", "plain value")]),
]


def _problems(text: str) -> list:
    with pytest.raises(SpecError) as info:
        load(text)
    return info.value.problems


@pytest.mark.parametrize("text, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_spec_reports_each_problem_where_it_is(text: str, expected: list) -> None:
    problems = [p for p in _problems(text) if p.severity == "error"]
    shown = "\n".join(map(str, problems))
    for line, col, where, path, words in expected:
        assert any(p.line == line and (col is None or p.col == col) and p.where == where
                   and p.path == path and words in p.message for p in problems), \
            f"expected {line}:{col} {where!r} {path!r} ~ {words!r} in:\n{shown}"
    assert len(problems) == len(expected), f"unexpected extra problems:\n{shown}"


def test_all_problems_are_reported_at_once() -> None:
    text = textwrap.dedent("""\
        name: rl
        execution: parallel
        primary_tasks: [trainer, nope]
        termination_delay: soon
        ---
        name: trainer
        num_nodes: 0
        resources: {cpus: x, memory: 4Q, accelerators: 'A100:0'}
        bogus_field: 1
        ---
        name: trainer
        ---
        name: 123
        """)
    problems = _problems(text)
    assert [(p.line, p.path) for p in problems] == [
        (3, "primary_tasks[1]"), (4, "termination_delay"), (7, "num_nodes"),
        (8, "resources.cpus"), (8, "resources.memory"), (8, "resources.accelerators"),
        (9, "bogus_field"), (11, "name"), (13, "name"),
    ]


def test_error_text_is_one_problem_per_line_with_file_line_col(tmp_path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(GROUP + "name: t\nnum_nodes: 0\nrunn: x\n")
    with pytest.raises(SpecError) as info:
        load(path)
    assert str(info.value).splitlines() == [
        f"{path}:5:12: task 't' num_nodes: must be at least 1 (got 0)",
        f"{path}:6:1: task 't' runn: unknown field 'runn'; did you mean 'run'?",
    ]
    assert info.value.exit_code == 2


def test_many_problems_are_capped_not_endless() -> None:
    fields = "".join(f"bogus{i}: 1\n" for i in range(200))
    problems = _problems(GROUP + "name: t\n" + fields)
    assert 10 <= len(problems) <= 60
