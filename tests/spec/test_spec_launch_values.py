"""Values given at launch (SkyPilot's `--env`/`--secret` overrides), entries without a value,
`$VAR` in paths, secrets kept out of what is printed, and the limits `launch` would hit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobgroup.spec import SpecError, Unfilled, check, dump, load, load_file
from jobgroup.spec.dump import REDACTED, to_data
from jobgroup.spec.limits import MAX_ARG_STRLEN, MAX_GROUP_NODES

DATA = Path(__file__).with_name("data") / "skypilot"
GROUP = textwrap.dedent("""\
    name: g
    execution: parallel
    ---
    name: trainer
    envs:
      HF_TOKEN:
      LR: 0.1
    secrets:
      WANDB_API_KEY:
    file_mounts:
      /data/$RUN_NAME: ./data
    run: echo
    ---
    name: server
    envs:
      RUN_NAME: exp1
    run: echo
    """)


def _errors(text: str, **kw) -> list:
    with pytest.raises(SpecError) as info:
        load_file(text, **kw)
    return [p for p in info.value.problems if p.severity == "error"]


# -- entries without a value ------------------------------------------------------------------

def test_entries_without_value_are_listed_with_their_lines() -> None:
    loaded = load_file(GROUP.replace("/data/$RUN_NAME", "/data"))
    assert loaded.unfilled == [Unfilled("trainer", "envs", "HF_TOKEN", 6, 3),
                               Unfilled("trainer", "secrets", "WANDB_API_KEY", 9, 3)]
    assert [u.flag for u in loaded.unfilled] == ["--env HF_TOKEN=VALUE",
                                                 "--secret WANDB_API_KEY=VALUE"]
    trainer = loaded.group.task("trainer")
    assert trainer.envs == {"LR": "0.1"} and trainer.secrets == {}  # only strings
    assert trainer.unfilled_envs == ["HF_TOKEN"] and trainer.unfilled_secrets == ["WANDB_API_KEY"]
    assert loaded.group.unfilled() == [("trainer", "envs", "HF_TOKEN"),
                                       ("trainer", "secrets", "WANDB_API_KEY")]
    assert [(w.line, w.path, w.severity) for w in loaded.warnings] == [
        (6, "envs.HF_TOKEN", "warning"), (9, "secrets.WANDB_API_KEY", "warning")]
    assert "--env HF_TOKEN=VALUE" in loaded.warnings[0].message


def test_dump_writes_them_back_without_a_value() -> None:
    group = load(GROUP.replace("/data/$RUN_NAME", "/data"))
    text = dump(group)
    assert "HF_TOKEN: null" in text and "WANDB_API_KEY: null" in text
    assert "unfilled" not in text
    assert load(text) == group and check(group) == group


def test_launch_values_fill_them_in_every_task() -> None:
    loaded = load_file(GROUP, env={"HF_TOKEN": "hf", "RUN_NAME": "exp2"},
                       secrets={"WANDB_API_KEY": "wb"}, complete=True)
    trainer, server = loaded.group.tasks
    assert loaded.unfilled == [] and loaded.warnings == []
    assert trainer.envs == {"HF_TOKEN": "hf", "LR": "0.1", "RUN_NAME": "exp2"}
    assert trainer.secrets == {"WANDB_API_KEY": "wb"}
    assert server.envs == {"RUN_NAME": "exp2", "HF_TOKEN": "hf"}  # --env reaches every task
    assert list(trainer.file_mounts) == ["/data/exp2"]


def test_secret_fills_an_env_and_keeps_it_hidden() -> None:
    group = load("envs: {HF_TOKEN: , A: x}\nsecrets: {B: }\nrun: echo\n",
                 env={"B": "b"}, secrets={"HF_TOKEN": "hf", "A": "y"})
    task = group.tasks[0]
    assert task.envs == {} and task.secrets == {"B": "b", "HF_TOKEN": "hf", "A": "y"}
    assert task.unfilled_envs == [] and task.unfilled_secrets == []


def test_launch_refuses_what_is_still_unfilled_and_names_the_flag() -> None:
    errors = _errors(GROUP, env={"RUN_NAME": "x"}, complete=True)
    assert [(e.line, e.path) for e in errors] == [(6, "envs.HF_TOKEN"),
                                                  (9, "secrets.WANDB_API_KEY")]
    assert "--env HF_TOKEN=VALUE" in errors[0].message
    assert "--secret WANDB_API_KEY=VALUE" in errors[1].message


def test_managed_secret_references_are_given_at_launch() -> None:
    loaded = load_file("secrets: [secrets:HF_TOKEN, 'secrets:global.OPENAI']\n"
                       "managed_secrets: [DB_PASSWORD, {SSH_KEY: {mount_path: /key}}]\n"
                       "run: echo\n")
    assert [(u.field, u.name) for u in loaded.unfilled] == [
        ("secrets", "HF_TOKEN"), ("secrets", "OPENAI"), ("secrets", "DB_PASSWORD"),
        ("secrets", "SSH_KEY")]
    assert any("mount_path" in w.message or "file" in w.message for w in loaded.warnings)


def test_the_internal_fields_are_not_yaml_keys() -> None:
    errors = _errors("unfilled_envs: [A]\nrun: echo\n")
    assert errors[0].path == "unfilled_envs" and "unknown field" in errors[0].message


# -- $VAR in paths ----------------------------------------------------------------------------

def test_variables_are_filled_in_paths_as_skypilot_fills_them() -> None:
    task = load(DATA / "env-substitution-paths.yaml").tasks[0]
    assert task.workdir == "./exp1"
    assert task.file_mounts == {
        "/models/llama-8b": "s3://my-team-data/llama-8b",
        "/data/exp1": "./data",
        "/out": {"name": "private-results", "mode": "MOUNT"},
        "/cache": {"name": "my-team-data-cache", "source": "./data/cache", "store": "s3",
                   "persistent": False},
    }
    assert task.volumes == {"/ckpt/exp1": "shared-ckpts"}
    assert "$" in task.run  # run/setup are the shell's business


def test_an_unset_variable_in_a_path_is_an_error_naming_it() -> None:
    errors = _errors("envs: {A: x}\nworkdir: ./$A/$MISSING\nvolumes:\n  /v: ${NOPE}-vol\nrun: x\n")
    assert [(e.line, e.path) for e in errors] == [(2, "workdir"), (4, "volumes./v")]
    assert "$MISSING" in errors[0].message and "MISSING" in errors[0].message
    assert "$NOPE" in errors[1].message


def test_a_variable_given_at_launch_fills_its_path_then() -> None:
    text = "envs: {BUCKET: }\nfile_mounts:\n  /out: {name: $BUCKET}\nrun: x\n"
    loaded = load_file(text)
    assert loaded.group.tasks[0].file_mounts == {"/out": {"name": "$BUCKET"}}
    assert any(w.path == "file_mounts./out.name" for w in loaded.warnings)
    assert load(text, env={"BUCKET": "b1"}).tasks[0].file_mounts == {"/out": {"name": "b1"}}
    assert [e.path for e in _errors(text, complete=True)] == ["envs.BUCKET",
                                                              "file_mounts./out.name"]


def test_two_mount_paths_that_become_one_are_an_error() -> None:
    errors = _errors("envs: {A: x}\nfile_mounts:\n  /d/x: ./a\n  /d/$A: ./b\nrun: x\n")
    assert errors[0].line == 4 and "the same as another" in errors[0].message


# -- secrets are never printed ----------------------------------------------------------------

SECRET_TEXT = ("secrets: {TOKEN: s3cr3t-value, BUCKET: hidden-bucket}\n"
               "file_mounts:\n  /b: {name: $BUCKET}\nrun: echo\n")


def test_printed_forms_redact_secret_values_wherever_they_are() -> None:
    group = load(SECRET_TEXT)
    assert group.tasks[0].file_mounts == {"/b": {"name": "hidden-bucket"}}
    for printed in (json.dumps(to_data(group)), dump(group, redact=True)):
        assert "s3cr3t" not in printed and "hidden-bucket" not in printed, printed
        assert REDACTED in printed
    assert "s3cr3t-value" in dump(group)  # what a job's record keeps, to run it


def test_validate_json_never_prints_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SECRET_TEXT)
    proc = subprocess.run([sys.executable, "-m", "jobgroup", "validate", "--json", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "s3cr3t" not in proc.stdout + proc.stderr and "hidden-bucket" not in proc.stdout
    assert json.loads(proc.stdout)["spec"]["tasks"][0]["secrets"]["TOKEN"] == REDACTED


def test_a_bad_secret_value_is_reported_without_showing_it() -> None:
    errors = _errors("secrets: {TOKEN: [supersecret]}\nrun: x\n")
    assert errors[0].path == "secrets.TOKEN" and "supersecret" not in str(errors[0])


# -- what launch would refuse is refused by validate ------------------------------------------

def test_a_variable_larger_than_the_kernel_takes() -> None:
    big = "x" * MAX_ARG_STRLEN
    errors = _errors(f"envs:\n  BIG: {big}\nsecrets:\n  TOKEN: {big}\nrun: echo\n")
    assert [(e.line, e.path) for e in errors] == [(2, "envs.BIG"), (4, "secrets.TOKEN")]
    assert "128.0 KiB" in errors[0].message or "KiB" in errors[0].message
    assert big[:100] not in errors[1].message


def test_a_script_larger_than_the_kernel_takes() -> None:
    script = "echo " + "y" * MAX_ARG_STRLEN
    errors = _errors(f"setup: {script}\nrun: echo\n")
    assert errors[0].path == "setup" and "in a file" in errors[0].message


def test_everything_together_larger_than_a_command_line_holds() -> None:
    envs = "".join(f"  V{i}: {'z' * 100_000}\n" for i in range(12))
    errors = _errors(f"envs:\n{envs}run: echo\n")
    assert errors[0].path == "" and "add up to" in errors[0].message


def test_nul_in_a_variable() -> None:
    errors = _errors('envs:\n  A: "a\\0b"\nrun: echo\n')
    assert errors[0].path == "envs.A" and "NUL" in errors[0].message


@pytest.mark.parametrize("text, path, words", [
    (f"num_nodes: {MAX_GROUP_NODES + 1}\nrun: x\n", "num_nodes", "at most"),
    ("num_nodes: 100000000000000000000000000\nrun: x\n", "num_nodes", "at most"),
    (f"name: g\nexecution: parallel\n---\nname: a\nnum_nodes: {MAX_GROUP_NODES}\n---\n"
     "name: b\nnum_nodes: 1\n", "", "10001 nodes together"),
    ("resources:\n  job_recovery: {max_restarts_on_errors: 99999999999}\nrun: x\n",
     "resources.job_recovery.max_restarts_on_errors", "at most"),
    ("resources: {priority: 5000}\nrun: x\n", "resources.priority", "between -1000 and 1000"),
    (f"name: {'a' * 61}\nnum_nodes: 100\nrun: x\n", "name", "hostname"),
    (f"name: {'é' * 32}\nrun: x\n", "name", "bytes"),
])
def test_absurd_values_are_validate_errors(text: str, path: str, words: str) -> None:
    errors = _errors(text)
    assert any(e.path == path and words in e.message for e in errors), errors
    assert all(e.line is not None for e in errors)


def test_names_at_the_limit_are_fine() -> None:
    assert load(f"name: {'a' * 61}\nnum_nodes: 10\nrun: x\n").tasks[0].num_nodes == 10


# -- the command line -------------------------------------------------------------------------

def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobgroup", "validate", str(path)],
                          capture_output=True, text=True)


def test_validate_accepts_null_envs_and_says_how_to_fill_them() -> None:
    proc = _validate(DATA / "null-envs-single-task.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "--env HF_TOKEN=VALUE" in proc.stderr and "Traceback" not in proc.stderr


def test_validate_refuses_a_huge_variable_with_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(f"name: big\nenvs:\n  BLOB: {'b' * MAX_ARG_STRLEN}\nrun: echo\n")
    proc = _validate(path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{path}:3:" in proc.stderr and "envs.BLOB" in proc.stderr


def test_placement_other_than_same_infra_is_ignored_with_a_warning() -> None:
    loaded = load_file("name: g\nexecution: parallel\nplacement: ANYWHERE\n---\nname: t\n")
    assert loaded.group.placement == "SAME_INFRA"
    assert [w.path for w in loaded.warnings] == ["placement"]
