"""The Slurm backend's node agent (backends/slurm/agent.c) on its own, outside Slurm: it runs
the phases the controller asks for under the shim, stops them as the shim stops a node,
reports each end only once the phase's processes are all gone, gives phases the node's view
and only the variables they should see, and leaves on `end`."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import processes_named, wait_for
from jobgroup.backends.base import NodeRef
from jobgroup.backends.local import shim
from jobgroup.backends.slurm import agents

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="needs a C compiler")


def test_agent_compiles_cleanly(tmp_path: Path):
    p = subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-std=c11",
                        "-D_GNU_SOURCE", "-o", str(tmp_path / "agent"), str(agents.AGENT_SOURCE)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


def test_agent_runs_stops_and_reports_phases(tmp_path: Path):
    home = tmp_path / "home"
    job = 5
    d = agents.install(home, job, [(0, 0)], shim.shim_path(), agents.agent_path())
    (d.parent / "hosts").write_text("127.0.0.1\tlocalhost\n10.9.8.7\tpeer-0.g peer-0\n")
    logs = home / "jobs" / str(job) / "logs"
    logs.mkdir(parents=True)

    def ask(phase: str, script: str, attempt: int = 1, env: dict | None = None) -> NodeRef:
        ref = NodeRef(job, 0, 0, phase, attempt)
        status = agents.status_path(home, ref)
        status.parent.mkdir(parents=True, exist_ok=True)
        agents.write_request(home, ref, status=status, track_id=f"t-{phase}-{attempt}",
                             opts=["-s", str(status), "-o", str(logs / f"w-0.{phase}.log"),
                                   "-g", "1", "-T", "-m", "22"],
                             cmd=["/bin/bash", "-c", script],
                             env={"PATH": "/usr/bin:/bin", **(env or {})})
        return ref

    marker = f"jg-agent-left-{os.getpid()}"
    env = {**os.environ, "SLURM_PROCID": "0", "SLURM_JOB_ID": "77", "SLURMD_NODENAME": "nodeX",
           "CUDA_VISIBLE_DEVICES": "1", "NOT_FOR_NODES": "secret"}
    ask("setup", 'echo "host=$(hostname) peer=$(getent hosts peer-0.g | cut -f1 -d" ")"; '
                 'echo "job=$SLURM_JOB_ID procid=${SLURM_PROCID-unset} gpu=$CUDA_VISIBLE_DEVICES '
                 'mine=$FOO other=${NOT_FOR_NODES-unset}"; exit 3', env={"FOO": "bar"})
    agent = subprocess.Popen([str(d / "jobgroup-agent"), str(d), "0", "w"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        setup = NodeRef(job, 0, 0, "setup", 1)
        wait_for(lambda: agents.exited(home, setup), timeout=20)
        assert agents.read_exit(agents.exit_path(home, setup)) == 3
        assert shim.read_status(agents.status_path(home, setup)).exit_code == 3
        out = (logs / "w-0.setup.log").read_text()
        assert "job=77 procid=unset gpu=1 mine=bar other=unset" in out, out
        view = (d / "n" / "0-0" / "agent").read_text().split()[2]
        if view == "private":  # the node's hostname and the group's hosts file
            assert "host=w-0 peer=10.9.8.7" in out, out
        # A run that leaves a background child and ignores nothing: stopped with SIGTERM, its
        # handler's output in its log, its child gone before the end is reported.
        run = ask("run", f'trap "echo run: SIGTERM, flushed; exit 0" TERM; '
                         f'm={marker[:8]}; (exec -a "$m{marker[8:]}" sleep 300) & '
                         f'echo running; wait')
        log = logs / "w-0.run.log"
        wait_for(lambda: log.exists() and "running" in log.read_text(), timeout=20)
        assert processes_named(marker) and not agents.exited(home, run)
        agents.signal(home, run, kill=False)
        wait_for(lambda: agents.exited(home, run), timeout=20)
        assert processes_named(marker) == []  # gone before the end was reported
        assert "run: SIGTERM, flushed" in log.read_text()
        st = shim.read_status(agents.status_path(home, run))
        assert st.stopped and st.exit_code == 0
        # One that ignores SIGTERM is killed after the grace (1 s).
        stubborn = ask("run", "trap '' TERM; echo stubborn; while :; do sleep 0.1; done", 2)
        wait_for(lambda: "stubborn" in (logs / "w-0.run.log").read_text(), timeout=20)
        t0 = time.monotonic()
        agents.signal(home, stubborn, kill=False)
        wait_for(lambda: agents.exited(home, stubborn), timeout=20)
        assert 0.8 < time.monotonic() - t0 < 5
        assert shim.read_status(agents.status_path(home, stubborn)).signal == 9
        # The group ended: the agent leaves.
        assert agents.end(home, job, 0)
        assert agent.wait(timeout=10) == 0, agent.stderr.read()
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):  # its tracking cgroups' parent
            try:
                os.rmdir(f"{root}/jobgroup-slurm")
            except OSError:
                pass
    assert agents.requested(home, NodeRef(job, 0, 0, "run", 1))  # what `recover` reads
    agents.forget_requests(home, job)
    assert not agents.requested(home, NodeRef(job, 0, 0, "run", 1))
