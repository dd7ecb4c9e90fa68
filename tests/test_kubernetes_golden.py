"""Kubernetes backend: golden files of the objects generated for the seed's two shapes (RL
post-training; train + parallel eval on a shared volume), cluster versions with GPUs: as a JobSet
(the default workload) and, for the second, as bare pods.

Review changes to tests/golden/kubernetes/*.yaml like code. To regenerate after an intended
change: JOBGROUP_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_kubernetes_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobgroup.backends.kubernetes import KubernetesConfig, render_yaml
from jobgroup.spec import load

GOLDEN = Path(__file__).resolve().parent / "golden" / "kubernetes"
UPDATE = os.environ.get("JOBGROUP_UPDATE_GOLDEN") == "1"

RL = """\
name: rl-post-training
execution: parallel
primary_tasks: [ppo-trainer]
termination_delay: {default: 5s, replay-buffer: 15s}
---
name: data-server
workdir: .
resources: {cpus: 2+, memory: 4+, ports: 8000}
run: python3 data_server.py
---
name: rollout-server
num_nodes: 2
workdir: .
resources: {accelerators: L4:1, cpus: 4+, ports: 8001}
readiness_probe: {http: {port: 8001, path: /health}}
volumes: {/checkpoints: rl-post-training}
run: python3 rollout_server.py
---
name: reward-server
workdir: .
resources: {accelerators: L4:1, ports: 8002}
readiness_probe: {tcp: {port: 8002}}
run: python3 reward_server.py
---
name: replay-buffer
workdir: .
resources: {cpus: 4+, memory: 16+, ports: 8003}
envs: {CAPACITY: 256}
run: python3 replay_buffer.py
---
name: ppo-trainer
num_nodes: 2
workdir: .
resources: {accelerators: H100:1, cpus: 8+}
volumes: {/checkpoints: rl-post-training}
envs: {NUM_STEPS: 30}
secrets: {WANDB_API_KEY: not-in-the-golden}
depends_on: {reward-server: ready, data-server: started}
setup: pip install -r requirements.txt
run: python3 ppo_trainer.py
"""

TRAIN_EVAL = """\
name: train-eval
execution: parallel
---
name: trainer
workdir: .
resources: {accelerators: A100:1, cpus: 4+, memory: 16+}
volumes: {/checkpoints: train-eval-ckpt}
envs: {STEPS: 3000}
run: python3 trainer.py
---
name: evaluator
workdir: .
resources: {accelerators: A100:1, cpus: 2+}
volumes: {/checkpoints: train-eval-ckpt}
run: python3 evaluator.py
"""

POD_CONFIG = {"spec": {"securityContext": {"runAsNonRoot": False, "fsGroup": 1000},
                       "priorityClassName": "ml-high",
                       "imagePullSecrets": [{"name": "registry-creds"}]}}

CASES = {  # a JobSet (the default), and bare pods (`workload: pods`)
    "rl-post-training": (RL, KubernetesConfig(namespace="ml", pod_config=POD_CONFIG)),
    "train-eval": (TRAIN_EVAL, KubernetesConfig(namespace="ml", kueue_queue="team-a",
                                                storage_class="nfs-rwx")),
    "train-eval-pods": (TRAIN_EVAL, KubernetesConfig(namespace="ml", kueue_queue="team-a",
                                                     storage_class="nfs-rwx", workload="pods")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str, tmp_path: Path) -> None:
    text, config = CASES[case]
    (tmp_path / "main.py").write_text("print('the code of the job')\n")
    out = render_yaml(load(text), 1, config, base_dir=tmp_path)
    path = GOLDEN / f"{case}.yaml"
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(out)
        if not UPDATE:
            pytest.fail(f"{path} did not exist; written — review it and commit it")
    assert out == path.read_text(), (
        f"the objects for {case} changed; if intended, regenerate with "
        "JOBGROUP_UPDATE_GOLDEN=1 and review the diff")
    assert "not-in-the-golden" not in out
