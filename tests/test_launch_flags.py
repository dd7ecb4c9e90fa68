"""`sky jobs launch`'s flags on `jobgroup launch` (issue 14 items 3, 8, 9): `--env-file`,
`--secret-file`, `--workdir`, the resource overrides `--gpus T:N`, `--cpus`, `--memory`,
`--num-nodes` (a single task's; ignored with a warning for a job group, as SkyPilot does), and
`--dryrun` on the local and Slurm backends: every launch check, then the plan; exit 0 or 2;
nothing recorded or started; secrets never printed. Real CLI processes and real groups."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

SINGLE = """\
    name: solo
    resources: {cpus: 1}
    envs: {GREETING: hi, HF_TOKEN: }
    secrets: {API_KEY: }
    run: |
      echo "GREETING=$GREETING HF=$HF_TOKEN KEY=${#API_KEY} RANK=$SKYPILOT_NODE_RANK/$SKYPILOT_NUM_NODES"
      echo "PWD=$PWD"
    """

GROUP = """\
    name: pair
    execution: parallel
    ---
    name: a
    resources: {cpus: 1}
    run: echo "A $PWD"
    ---
    name: b
    run: echo "B $PWD"
    """


def _queue_job(jenv, job: int) -> dict:
    return jenv.job(job)


# --- --env-file / --secret-file --------------------------------------------------------------

def test_env_file_fills_envs_and_secrets_and_env_wins(jenv):
    spec = jenv.spec(SINGLE)
    (jenv.tmp / "vars.env").write_text(
        "# comment\nGREETING=from-file\nHF_TOKEN='tok en'\nexport API_KEY=s3cr3t\n")
    p = jenv.jg("launch", str(spec), "-d", "--env-file", "vars.env", "--env", "GREETING=flag",
                check=True)
    job = int(p.stdout.split()[1])
    assert jenv.wait(job)["status"] == "SUCCEEDED"
    log = jenv.log(job, "solo")
    assert "GREETING=flag HF=tok en KEY=6 RANK=0/1" in log
    # the file's values became secrets too (SkyPilot's --env-file): never in the job's record
    record = jenv.jg("queue", "--all", "--json", check=True).stdout
    assert "s3cr3t" not in record and "tok en" not in record


def test_secret_file_wins_over_env_file_and_a_bare_name_takes_the_callers_value(jenv):
    spec = jenv.spec(SINGLE)
    (jenv.tmp / "a.env").write_text("HF_TOKEN=x\nAPI_KEY=from-env-file\n")
    (jenv.tmp / "s.env").write_text("API_KEY\n")  # no value: the caller's own
    jenv.env["API_KEY"] = "callers-key-123"
    p = jenv.jg("launch", str(spec), "-d", "--env-file", "a.env", "--secret-file", "s.env",
                check=True)
    job = int(p.stdout.split()[1])
    assert jenv.wait(job)["status"] == "SUCCEEDED"
    assert "KEY=15 " in jenv.log(job, "solo")  # len("callers-key-123")


@pytest.mark.parametrize("content, words", [
    ("1BAD=x\n", "'1BAD' is not a variable name"),
    ("UNSET_IN_CALLER_9\n", "UNSET_IN_CALLER_9 has no value there"),
])
def test_a_bad_env_file_is_a_usage_error(jenv, content, words):
    spec = jenv.spec(SINGLE)
    (jenv.tmp / "bad.env").write_text(content)
    p = jenv.jg("launch", str(spec), "-d", "--env-file", "bad.env")
    assert p.returncode == 2, p.stderr
    assert words in p.stderr and "--env-file bad.env" in p.stderr
    assert "Traceback" not in p.stderr


def test_a_missing_env_file_is_a_usage_error(jenv):
    p = jenv.jg("launch", str(jenv.spec(SINGLE)), "--env-file", "nope.env")
    assert p.returncode == 2 and "nope.env" in p.stderr and "does not exist" in p.stderr


# --- resource and workdir overrides ------------------------------------------------------------

def test_num_nodes_and_workdir_override_a_single_task(jenv):
    spec = jenv.spec(SINGLE)
    (jenv.tmp / "code").mkdir()
    p = jenv.jg("launch", str(spec), "-d", "--num-nodes", "2", "--workdir", "code",
                "--env", "HF_TOKEN=t", "--secret", "API_KEY=k", "--cpus", "0.5", check=True)
    job = int(p.stdout.split()[1])
    assert "2 node(s)" in p.stdout
    assert jenv.wait(job)["status"] == "SUCCEEDED"
    for rank in (0, 1):
        log = jenv.log(job, "solo", rank)
        assert f"RANK={rank}/2" in log and f"PWD={jenv.tmp / 'code'}" in log, log


def test_resource_overrides_are_ignored_for_a_job_group_with_a_warning_but_workdir_is_not(jenv):
    spec = jenv.spec(GROUP)
    (jenv.tmp / "w").mkdir()
    p = jenv.jg("launch", str(spec), "-d", "--cpus", "64", "--num-nodes", "3",
                "--workdir", "w", check=True)
    assert "--cpus, --num-nodes ignored: the file is a job group of 2 task(s)" in p.stderr
    job = int(p.stdout.split()[1])
    assert "2 task(s), 2 node(s)" in p.stdout
    assert jenv.wait(job)["status"] == "SUCCEEDED"  # 64 CPUs were not asked for
    assert f"A {jenv.tmp / 'w'}" in jenv.log(job, "a")
    assert f"B {jenv.tmp / 'w'}" in jenv.log(job, "b")


@pytest.mark.parametrize("flag, value, words", [
    ("--cpus", "many", "--cpus 'many'"),
    ("--memory", "-3", "--memory '-3'"),
    ("--gpus", "A100:x", "--gpus 'A100:x'"),
    ("--gpus", "A100:1,V100:2", "give one type and count"),
    ("--num-nodes", "0", "--num-nodes"),
    ("--num-nodes", "100000", "--num-nodes 100000"),
])
def test_a_bad_override_is_a_usage_error_naming_the_flag(jenv, flag, value, words):
    p = jenv.jg("launch", str(jenv.spec(SINGLE)), "--env", "HF_TOKEN=x", "--secret",
                "API_KEY=y", flag, value)
    assert p.returncode == 2, p.stdout + p.stderr
    assert words in p.stderr and "Traceback" not in p.stderr
    assert json.loads(jenv.jg("queue", "--all", "--json").stdout or "[]") == []


def test_gpus_override_asks_for_gpus_and_cpu_only_runs_it_here(jenv):
    spec = jenv.spec(SINGLE)
    base = ["--env", "HF_TOKEN=x", "--secret", "API_KEY=y"]
    plan = yaml.safe_load(jenv.jg("launch", str(spec), "--dryrun", "--gpus", "H100:8", *base,
                                  check=True).stdout)
    assert plan["tasks"][0]["resources_per_node"]["accelerators"] == "H100:8"
    p = jenv.jg("launch", str(spec), "-d", "--gpus", "H100:8", "--cpu-only", *base, check=True)
    assert jenv.wait(int(p.stdout.split()[1]))["status"] == "SUCCEEDED"


# --- --dryrun ------------------------------------------------------------------------------------

def _no_job_and_no_controller(jenv) -> None:
    assert not (jenv.home / "controller.lock").exists() or jenv.controller_pid() is None
    db = jenv.home / "state.db"
    if db.exists():
        assert json.loads(jenv.jg("queue", "--all", "--json", check=True).stdout) == []


def test_dryrun_on_local_prints_the_plan_and_launches_nothing(jenv):
    spec = jenv.spec(SINGLE)
    p = jenv.jg("launch", str(spec), "--dryrun", "--env", "HF_TOKEN=visible-token",
                "--secret", "API_KEY=hidden-key-77", "--num-nodes", "2", check=True)
    plan = yaml.safe_load(p.stdout)
    assert plan["dryrun"] is True and plan["infra"] == "local" and plan["nodes"] == 2
    task = plan["tasks"][0]
    assert [n["hostname"] for n in task["nodes"]] == ["solo-0", "solo-1"]
    assert [n["fqdn"] for n in task["nodes"]] == ["solo-0.solo", "solo-1.solo"]
    assert task["envs"]["GREETING"] == "hi" and task["envs"]["HF_TOKEN"] == "visible-token"
    assert task["envs"]["API_KEY"] == "<secret>"
    assert "hidden-key-77" not in p.stdout + p.stderr
    assert task["resources_per_node"] == {"cpus": 1}
    assert plan["backend"]["isolation"] in ("namespaces", "user", "none")
    assert plan["backend"]["fits_this_machine"] is True
    assert "PATH" in plan["inherited_variables"]
    as_json = json.loads(jenv.jg("launch", str(spec), "--dryrun", "-o", "json", "--env",
                                 "HF_TOKEN=v", "--secret", "API_KEY=k", "--num-nodes", "2",
                                 check=True).stdout)
    assert as_json["tasks"][0]["nodes"] == task["nodes"]
    _no_job_and_no_controller(jenv)


def test_dryrun_refuses_what_launch_refuses_with_exit_2(jenv):
    spec = jenv.spec(SINGLE)
    p = jenv.jg("launch", str(spec), "--dryrun")
    assert p.returncode == 2
    assert "HF_TOKEN" in p.stderr and "--env HF_TOKEN=" in p.stderr
    bad = jenv.spec("name: x\nrun: echo\nresources: {cpuss: 2}\n", "bad.yaml")
    p = jenv.jg("launch", str(bad), "--dryrun")
    assert p.returncode == 2 and "bad.yaml:3" in p.stderr and "cpus" in p.stderr
    missing = jenv.spec("name: x\nworkdir: ./nowhere\nrun: echo\n", "m.yaml")
    p = jenv.jg("launch", str(missing), "--dryrun")
    assert p.returncode == 2 and "nowhere" in p.stderr and "does not exist" in p.stderr
    _no_job_and_no_controller(jenv)


def test_dryrun_warns_when_the_group_can_never_fit_this_machine(jenv):
    spec = jenv.spec("name: big\nresources: {cpus: 4096}\nrun: echo\n")
    p = jenv.jg("launch", str(spec), "--dryrun", check=True)
    plan = yaml.safe_load(p.stdout)
    assert plan["backend"]["fits_this_machine"] is False
    assert "4096" in plan["backend"]["why_not"]
    assert "FAILED_NO_RESOURCE" in p.stderr and "--best-effort" in p.stderr
    p = jenv.jg("launch", str(spec), "--dryrun", "--best-effort", check=True)
    assert yaml.safe_load(p.stdout)["backend"]["fits_this_machine"] is True


def test_a_file_that_passes_the_dryrun_launches(jenv):
    spec = jenv.spec(GROUP)
    assert jenv.jg("launch", str(spec), "--dryrun").returncode == 0
    job = jenv.launch_d(GROUP)
    assert jenv.wait(job)["status"] == "SUCCEEDED"


@pytest.mark.skipif(shutil.which("sbatch") is None, reason="no Slurm client installed here")
def test_dryrun_on_slurm_shows_the_batch_script(jenv):
    spec = jenv.spec(GROUP)
    p = jenv.jg("launch", str(spec), "--dryrun", "--infra", "slurm", check=True)
    plan = yaml.safe_load(p.stdout)
    assert plan["infra"] == "slurm"
    script = plan["backend"]["sbatch_script"]
    assert script.startswith("#!/bin/bash\n") and "#SBATCH hetjob" in script
    assert "#SBATCH --cpus-per-task=1" in script and "--job-name=jobgroup-0-pair" in script
    _no_job_and_no_controller(jenv)
