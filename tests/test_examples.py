"""The two example groups under examples/, run end to end as a user runs them: the real YAML files,
`jobgroup launch FILE` with no extra flags, nodes running this venv's python (numpy, matplotlib).

They check the learning signal (the RL reward rises; every checkpoint gets an accuracy), the
group's ending (primaries SUCCEEDED, auxiliaries CANCELLED after their termination_delay), and
that the plots exist in the volumes as valid PNG files. Seeds are fixed in the YAMLs and code.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import sys
import time
import zlib
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (volumes in node namespaces)"),
    pytest.mark.slow,
]

RL = REPO / "examples/rl-post-training/rl-post-training.yaml"
TRAIN_EVAL = REPO / "examples/train-eval/train-eval.yaml"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG file whose every chunk is intact (CRC checked) up to IEND."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, chunks, size = 8, [], (0, 0)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"{path}: bad CRC in {kind!r}"
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        chunks.append(kind)
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks, chunks
    return size


def launch_example(jenv, path: Path, timeout: float = 90) -> tuple[int, dict, float]:
    """Launch the example file as a user would; (job id, final job record, seconds taken)."""
    for module in ("numpy", "matplotlib"):
        assert importlib.util.find_spec(module), \
            f"{module} missing: scripts/bootstrap installs the examples extra"
    # Nodes inherit the launching environment: put this venv's python first, as scripts/demo does.
    jenv.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{jenv.env.get('PATH', '')}"
    t0 = time.monotonic()
    # Their workdirs are relative to the repository's root, as SkyPilot's examples are: launch
    # from there, as scripts/demo does.
    p = jenv.jg("launch", str(path), "-d", check=True, cwd=REPO)
    job_id = int(p.stdout.split()[1])
    job = jenv.wait(job_id, timeout=timeout)
    return job_id, job, time.monotonic() - t0


def tasks_of(job: dict) -> dict[str, dict]:
    return {t["name"]: t for t in job["tasks"]}


def test_rl_post_training_learns_and_succeeds(jenv) -> None:
    job_id, job, took = launch_example(jenv, RL)
    trainer_log = jenv.log(job_id, "ppo-trainer", 0)
    assert job["status"] == "SUCCEEDED", (job, trainer_log, jenv.log(job_id, "ppo-trainer", 1))
    assert took < 60, f"the RL example took {took:.1f}s"
    tasks = tasks_of(job)
    assert tasks["ppo-trainer"]["status"] == "SUCCEEDED"
    trainer_end = tasks["ppo-trainer"]["ended_at"]
    for name, delay in [("data-server", 5), ("rollout-server", 5), ("reward-server", 5),
                        ("replay-buffer", 15)]:
        assert tasks[name]["status"] == "CANCELLED", tasks[name]
        # Stopped after its termination_delay, not before (and not much later).
        assert delay - 0.5 <= tasks[name]["ended_at"] - trainer_end <= delay + 10, (name, tasks)

    # The learning signal: mean reward per step, recorded by the trainer in the shared volume.
    run = jenv.home / "volumes" / "rl-post-training" / f"run-{job_id}"
    result = json.loads((run / "rewards.json").read_text())
    rewards = result["rewards"]
    assert len(rewards) == 30
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert first < 0.5 and last > 0.75 and last - first > 0.3, rewards
    for step, reward in enumerate(rewards, 1):
        assert f"step {step:3d}/30  mean reward {reward:.3f}" in trainer_log

    # Rollouts were spread over both rollout nodes by hostname, with the weights of the previous
    # step: published by the trainer on the volume, loaded by both rollout servers.
    assert "rollouts: rollout-server-0 16, rollout-server-1 16" in trainer_log
    assert "(weights v29;" in trainer_log
    for rank in (0, 1):
        assert "last weights v29" in jenv.log(job_id, "rollout-server", rank)
    assert (run / "policy-v0030.npz").exists() and json.loads(
        (run / "latest.json").read_text())["version"] == 30
    assert "rank 0 finished training; exiting" in jenv.log(job_id, "ppo-trainer", 1)
    assert "all 2 ranks joined" in trainer_log
    assert "replay-buffer: final stats" in jenv.log(job_id, "replay-buffer")

    width, height = png_size(run / "reward.png")
    assert width >= 400 and height >= 200
    assert f"plot written to /checkpoints/run-{job_id}/reward.png" in trainer_log


def test_train_eval_scores_every_checkpoint_while_training(jenv) -> None:
    job_id, job, took = launch_example(jenv, TRAIN_EVAL)
    eval_log = jenv.log(job_id, "evaluator")
    assert job["status"] == "SUCCEEDED", (job, jenv.log(job_id, "trainer"), eval_log)
    assert took < 60, f"the train-eval example took {took:.1f}s"
    assert {t["status"] for t in job["tasks"]} == {"SUCCEEDED"}

    run = jenv.home / "volumes" / "train-eval-ckpt" / f"run-{job_id}"
    saved = json.loads((run / "DONE").read_text())["checkpoints"]
    assert saved == [f"ckpt-{s:06d}.npz" for s in range(250, 3001, 250)]
    results = json.loads((run / "accuracy.json").read_text())["results"]
    # An accuracy for every checkpoint, in order, each printed as it was evaluated.
    assert [r["checkpoint"] for r in results] == saved
    for r in results:
        assert f"{r['checkpoint']} (step {r['step']:5d})  test accuracy {r['accuracy']:.3f}" \
            in eval_log
    accs = [r["accuracy"] for r in results]
    assert accs[0] < 0.8 and accs[-1] > 0.9 and accs[-1] - accs[0] > 0.2, accs
    # Evaluation ran alongside training, not only after it.
    assert sum(r["while_training"] for r in results) >= 1, results

    width, height = png_size(run / "accuracy.png")
    assert width >= 400 and height >= 200
    assert f"plot written to /checkpoints/run-{job_id}/accuracy.png" in eval_log
