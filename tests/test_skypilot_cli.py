"""The command line a SkyPilot user types (issue 21): SkyPilot's flags, "did you mean" for
mistyped commands and options, --infra as a choice, and shell completion that really completes
`jobgroup` (bash, zsh, fish)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobgroup.backends import registry
from jobgroup.cli.fastlaunch import parse
from jobgroup.launchflags import INFRA_ALIASES, INFRAS, infra_problem

SPEC = "name: flags\nrun: echo hello from flags\n"
JOBGROUP = shutil.which("jobgroup", path=str(Path(sys.executable).parent))


def test_mistyped_commands_and_options_get_a_suggestion(jenv):
    p = jenv.jg("queu")
    assert p.returncode == 2 and "No such command 'queu'. Did you mean 'queue'?" in p.stderr
    p = jenv.jg("lgos", "3")
    assert p.returncode == 2 and "Did you mean 'logs'?" in p.stderr
    p = jenv.jg("frobnicate")
    assert p.returncode == 2 and "No such command 'frobnicate'." in p.stderr \
        and "Did you mean" not in p.stderr
    p = jenv.jg("logs", "--tial", "3")
    assert p.returncode == 2 and "Did you mean '--tail'?" in p.stderr
    p = jenv.jg("queue", "--skip-finshed")
    assert p.returncode == 2 and "--skip-finished" in p.stderr
    assert all("Traceback" not in x for x in (p.stderr, p.stdout))


def test_infra_is_a_choice_with_aliases_and_contexts(jenv):
    spec = jenv.spec(SPEC)
    for bad, hint in (("slurmm", "did you mean 'slurm'?"), ("k9s", "did you mean 'k8s'?"),
                      ("aws", "not one of local, slurm, kubernetes (k8s), kubernetes/CONTEXT"),
                      ("slurm/x", "only kubernetes takes a context")):
        for extra in ([], ["-d"]):  # the click road and the short road say the same
            p = jenv.jg("launch", str(spec), "--infra", bad, *extra)
            assert p.returncode == 2, p.stderr
            assert "Invalid value for '--infra'" in p.stderr and hint in p.stderr, p.stderr
            assert "task 'flags'" not in p.stderr  # the flag is blamed, not the task
    for good in ("local", "LOCAL", "slurm", "k8s", "kubernetes", "kubernetes/my-ctx",
                 "k8s/my-ctx"):
        assert infra_problem(good) is None and parse([str(spec), "--infra", good])
    # k8s is kubernetes: past the flag's check, the Kubernetes backend's own checks speak
    p = jenv.jg("launch", str(spec), "--infra", "k8s/my-ctx", "--dryrun",
                input="", timeout=120)
    assert "Invalid value for '--infra'" not in p.stderr and "kubeconfig" in p.stderr
    # the choices are the registry's backends and aliases, nothing else
    assert set(INFRAS) == set(registry.BACKENDS)
    assert INFRA_ALIASES == {a: e.name for e in registry.BACKENDS.values() for a in e.aliases}


def test_launch_yes_and_detach_run_and_logs_follow_flags(jenv):
    spec = jenv.spec(SPEC)
    p = jenv.jg("launch", str(spec), "-y", "--detach-run", check=True)
    job = int(p.stdout.split()[1])
    assert "Follow: jobgroup logs" in p.stdout  # returned at once: detached
    p = jenv.jg("launch", str(spec), "--yes", "-d", check=True)
    assert jenv.wait(job)["status"] == "SUCCEEDED"
    for flag in ("--follow", "--no-follow"):
        p = jenv.jg("logs", str(job), flag, check=True)
        assert "(flags, rank=0) hello from flags" in p.stdout
    p = jenv.jg("cancel", str(job), "-y", check=True)
    assert "already ended" in p.stdout
    for flag in ("-y", "--detach-run"):
        assert flag in jenv.jg("launch", "--help", check=True).stdout
    assert "--skip-finished" in jenv.jg("queue", "--help", check=True).stdout


def _complete(jenv, shell: str, words: str, cword: int | None = None) -> str:
    env = {**jenv.env, "_JOBGROUP_COMPLETE": f"{shell}_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - 1 if cword is None else cword)}
    p = subprocess.run([JOBGROUP], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.mark.skipif(JOBGROUP is None, reason="no jobgroup console script beside this python")
def test_shell_completion_really_completes(jenv):
    # the protocol click speaks with the scripts below (the completion env var)
    assert "plain,queue" in _complete(jenv, "bash", "jobgroup qu")
    assert "plain,--tail" in _complete(jenv, "bash", "jobgroup logs --ta")
    assert "plain,--skip-finished" in _complete(jenv, "bash", "jobgroup queue --sk")
    infra = _complete(jenv, "bash", "jobgroup launch f.yaml --infra ", cword=4)
    assert {"plain,local", "plain,slurm", "plain,k8s"} <= set(infra.splitlines())
    job = jenv.launch_d(SPEC)
    jenv.wait(job)
    assert f"plain,{job}" in _complete(jenv, "bash", "jobgroup logs ", cword=2)
    assert f"plain,{job}" in _complete(jenv, "bash", "jobgroup cancel ", cword=2)
    # each shell's script, as the README says to install it
    for shell, marker in (("bash", "complete -o nosort -F _jobgroup_completion jobgroup"),
                          ("zsh", "#compdef jobgroup"), ("fish", "complete --no-files "
                                                                "--command jobgroup")):
        p = subprocess.run([JOBGROUP], env={**jenv.env, "_JOBGROUP_COMPLETE": f"{shell}_source"},
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and marker in p.stdout, (shell, p.stdout[:300])


@pytest.mark.skipif(JOBGROUP is None or shutil.which("bash") is None,
                    reason="needs bash and the jobgroup console script")
def test_bash_completion_script_completes_in_bash(jenv):
    """The script README tells bash users to eval, run by bash itself: TAB after `jobgroup qu`
    gives `queue`."""
    script = ('eval "$(_JOBGROUP_COMPLETE=bash_source jobgroup)"\n'
              'COMP_WORDS=(jobgroup qu); COMP_CWORD=1; _jobgroup_completion jobgroup\n'
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    env = {**jenv.env, "PATH": f"{Path(JOBGROUP).parent}{os.pathsep}{jenv.env['PATH']}"}
    p = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and p.stdout.split() == ["queue"], (p.stdout, p.stderr)
