"""ppo-trainer (2 nodes, the primary task): rank 0 runs the policy-gradient loop, rank 1 joins
the rendezvous and leaves when training is done.

One step of rank 0:
  1. GET  data-server    /batch      BATCH prompts with reference answers
  2. POST rollout-server /generate   one sampled response each (rank 0 spreads them over both nodes)
  3. POST reward-server  /score      reward 1 if the answer is right, else 0
  4. POST replay-buffer  /add, then /sample   TRAIN_BATCH experiences, recent and older ones
  5. PPO update of the policy on that sample (clipped importance ratio against the log-prob the
     rollout server sampled with, advantage = reward - mean reward of the sample)
  6. publish the new weights to the shared volume; the rollout servers load them for step 2 of
     the next step
The mean reward of step 3 (responses of the latest weights) is the learning curve: it is printed
every step and plotted, with the numbers, in /checkpoints/run-JOB/ (reward.png, rewards.json).
"""

import io
import json
import os
import sys
import time

import numpy as np

import policy
from common import GROUP, JOB_ID, NUM_NODES, RANK, RUN_DIR, call, log, url

NUM_STEPS = int(os.environ.get("NUM_STEPS", "30"))
BATCH = int(os.environ.get("BATCH", "32"))
TRAIN_BATCH = int(os.environ.get("TRAIN_BATCH", "64"))
PPO_EPOCHS = int(os.environ.get("PPO_EPOCHS", "8"))
LR = float(os.environ.get("LR", "8.0"))
CLIP = float(os.environ.get("CLIP", "0.2"))
VOLUME = os.environ.get("CHECKPOINT_VOLUME", "")


def atomic_write(path: str, data: bytes) -> None:
    """Write to a temporary name, then rename: readers see the old file or the new one."""
    with open(f"{path}.tmp", "wb") as f:
        f.write(data)
    os.replace(f"{path}.tmp", path)


def publish(w: np.ndarray, version: int) -> None:
    """Weights first, then the pointer: a rollout server never sees a version before its file."""
    name = f"policy-v{version:04d}.npz"
    buf = io.BytesIO()
    np.savez(buf, w=w)
    atomic_write(os.path.join(RUN_DIR, name), buf.getvalue())
    atomic_write(os.path.join(RUN_DIR, "latest.json"),
                 json.dumps({"version": version, "file": name}).encode())


def ppo_update(w: np.ndarray, items: list[dict]) -> tuple[np.ndarray, float]:
    """PPO-clip on one sample: maximise mean(min(r * A, clip(r, 1-e, 1+e) * A)), r = pi/pi_old.

    For a linear softmax policy d log pi(a|x) / dW = (onehot(a) - pi(.|x)) outer x, so the
    gradient is written out by hand. Returns the new weights and the fraction of clipped terms."""
    x = np.stack([policy.features(e["prompt"]) for e in items])
    a = np.array([e["strategy"] for e in items])
    old_logp = np.array([e["logp"] for e in items])
    rewards = np.array([e["reward"] for e in items])
    adv = (rewards - rewards.mean()) / (rewards.std() + 1e-6)
    onehot = np.eye(len(policy.STRATEGIES))[a]
    for _ in range(PPO_EPOCHS):
        pi = policy.probs(w, x)
        ratio = np.exp(np.log(pi[np.arange(len(a)), a]) - old_logp)
        # The clipped term has no gradient where it is the smaller one: the update stops pushing
        # a probability that has already moved more than CLIP away from the sampling policy's.
        clipped = ((adv > 0) & (ratio > 1 + CLIP)) | ((adv < 0) & (ratio < 1 - CLIP))
        coef = np.where(clipped, 0.0, ratio * adv)
        grad = (coef[:, None] * (onehot - pi)).T @ x / len(a)
        w = w + LR * grad
    return w, float(clipped.mean())


def plot(rewards: list[float], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(rewards) + 1)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, rewards, marker="o", ms=3, lw=1, label="mean reward of the step's rollouts")
    k = min(5, len(rewards))
    smooth = np.convolve(rewards, np.ones(k) / k, mode="valid")
    ax.plot(steps[k - 1:], smooth, lw=2.5, label=f"moving average ({k} steps)")
    ax.axhline(1 / len(policy.STRATEGIES), ls="--", c="grey", lw=1,
               label="random strategy (1 in 5)")
    ax.set(xlabel="PPO step", ylabel="mean reward (fraction correct)", ylim=(0, 1.05),
           title=f"RL post-training ({GROUP}, job {JOB_ID}): reward per step")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())
    plt.close(fig)


def wait_for(path: str, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.exit(f"ppo-trainer {RANK}: {what} did not happen within {timeout:.0f}s")
        time.sleep(0.2)


def join() -> None:
    """Rendezvous through the shared volume: each rank marks itself, rank 0 waits for all."""
    open(os.path.join(RUN_DIR, f"rank-{RANK}.joined"), "w").close()
    if RANK == 0:
        for r in range(1, NUM_NODES):
            wait_for(os.path.join(RUN_DIR, f"rank-{r}.joined"), f"rank {r} joining", 60)
        log(f"ppo-trainer 0: all {NUM_NODES} ranks joined")


def train() -> None:
    services = [url("data-server", "/stats"), url("rollout-server", "/health", 0),
                url("rollout-server", "/health", 1), url("reward-server", "/stats"),
                url("replay-buffer", "/stats")]
    for s in services:  # no readiness feature: wait (bounded) until each service answers
        call(s, wait=60)
    log(f"ppo-trainer 0: all services answer; {NUM_STEPS} steps of {BATCH} rollouts, "
        f"PPO on {TRAIN_BATCH} replayed experiences, lr {LR}, clip {CLIP}")
    w = policy.zeros()
    rewards: list[float] = []
    t0 = time.monotonic()
    for step in range(1, NUM_STEPS + 1):
        prompts = call(url("data-server", f"/batch?n={BATCH}"))["prompts"]
        rollouts = call(url("rollout-server", "/generate"), {"prompts": prompts})["rollouts"]
        scores = call(url("reward-server", "/score"), {"items": rollouts})["rewards"]
        for r, s in zip(rollouts, scores):
            r["reward"] = s
        call(url("replay-buffer", "/add"), {"items": rollouts})
        sample = call(url("replay-buffer", "/sample"), {"n": TRAIN_BATCH})["items"]
        w, clip_frac = ppo_update(w, sample)
        publish(w, step)
        rewards.append(float(np.mean(scores)))
        by_node: dict[str, int] = {}
        for r in rollouts:
            by_node[r["served_by"]] = by_node.get(r["served_by"], 0) + 1
        nodes = ", ".join(f"{n} {c}" for n, c in sorted(by_node.items()))
        log(f"step {step:3d}/{NUM_STEPS}  mean reward {rewards[-1]:.3f}  "
            f"(weights v{rollouts[0]['version']}; rollouts: {nodes}; clipped {clip_frac:.2f})")
    k = max(1, min(5, NUM_STEPS // 3))
    first, last = float(np.mean(rewards[:k])), float(np.mean(rewards[-k:]))
    log(f"ppo-trainer 0: {NUM_STEPS} steps in {time.monotonic() - t0:.1f}s; mean reward "
        f"{first:.3f} (first {k} steps) -> {last:.3f} (last {k} steps)")
    pi = policy.probs(w, np.stack([policy.features(p) for p in [
        "What is 3 times 4?", "Subtract 4 from 9.", "Compute the sum of 2 and 5."]]))
    for prompt, p in zip(["What is 3 times 4?", "Subtract 4 from 9.",
                          "Compute the sum of 2 and 5."], pi):
        log(f"  learned: {prompt!r:32} -> {policy.STRATEGIES[int(p.argmax())]!r} "
            f"(p={p.max():.2f})")
    stats = call(url("replay-buffer", "/stats"))
    log(f"  replay buffer: {stats['size']}/{stats['capacity']} experiences, "
        f"{stats['added']} added, {stats['sampled']} sampled")
    result = {"job_id": JOB_ID, "rewards": rewards, "first": first, "last": last, "window": k}
    atomic_write(os.path.join(RUN_DIR, "rewards.json"), json.dumps(result, indent=1).encode())
    png = os.path.join(RUN_DIR, "reward.png")
    plot(rewards, png)
    where = f" (volume '{VOLUME}'; `jobgroup volume ls` shows its folder)" if VOLUME else ""
    log(f"ppo-trainer 0: plot written to {png}{where}")
    open(os.path.join(RUN_DIR, "DONE"), "w").close()
    log("ppo-trainer 0: done; the auxiliary tasks are stopped after their termination_delay")


def main() -> None:
    os.makedirs(RUN_DIR, exist_ok=True)
    join()
    if RANK == 0:
        train()
        return
    # In a large trainer rank 1 would hold a data-parallel shard; this policy is tiny, so rank 1
    # only takes part in the rendezvous and exits cleanly once rank 0 is done.
    log(f"ppo-trainer {RANK}: joined as rank {RANK} of {NUM_NODES}; waiting for rank 0")
    wait_for(os.path.join(RUN_DIR, "DONE"), "rank 0 finishing", 600)
    log(f"ppo-trainer {RANK}: rank 0 finished training; exiting")


if __name__ == "__main__":
    main()
