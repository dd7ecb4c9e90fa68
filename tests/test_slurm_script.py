"""The heterogeneous batch script of a group (pure): components, resources, settings."""

from __future__ import annotations

from pathlib import Path

from jobgroup.backends.slurm.backend import SlurmSettings, batch_script
from jobgroup.spec import load

GROUP = """
name: g
execution: parallel
---
name: trainer
num_nodes: 2
resources: {cpus: 4+, memory: 16, accelerators: H100:2, labels: {slurm-partition: gpu}}
run: train
---
name: server
run: serve
"""


def test_one_component_per_task_with_resources_and_settings():
    script = batch_script(load(GROUP), 7, "abcd", Path("/state/jobs/7"),
                          settings=SlurmSettings(partition="cpu", account="ml", qos="high"))
    parts = script.split("#SBATCH hetjob\n")
    assert len(parts) == 2
    trainer, server = parts
    for line in ("--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=4", "--mem=16384M",
                 "--gres=gpu:h100:2", "--partition=gpu", "--account=ml", "--qos=high",
                 "--comment=jobgroup:abcd:7", "--job-name=jobgroup-7-g"):
        assert f"#SBATCH {line}\n" in trainer, line
    assert "#SBATCH --partition=cpu\n" in server and "--gres" not in server
    assert script.rstrip().endswith("exec sleep infinity")
