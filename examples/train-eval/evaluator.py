"""evaluator: scores each new checkpoint on a held-out test set as soon as the trainer writes it,
while training goes on; exits once the trainer is DONE and every checkpoint it listed is scored.

Prints the test accuracy of every checkpoint, then writes accuracy.json and a plot,
accuracy.png, next to the checkpoints in the shared volume (so both outlive the job).
"""

import json
import os
import sys
import time

import numpy as np

import model

POLL_SECONDS = float(os.environ.get("POLL_SECONDS", "0.2"))
TIMEOUT_SECONDS = float(os.environ.get("TIMEOUT_SECONDS", "600"))
VOLUME = os.environ.get("CHECKPOINT_VOLUME", "")
JOB_ID = os.environ.get("SKYPILOT_MANAGED_JOB_ID", "0")
RUN_DIR = os.path.join(os.environ.get("CHECKPOINT_DIR", "/checkpoints"), f"run-{JOB_ID}")


def checkpoints() -> list[str]:
    return sorted(f for f in os.listdir(RUN_DIR) if f.startswith("ckpt-") and f.endswith(".npz"))


def finished() -> list[str] | None:
    """The trainer's final list of checkpoints, once it has written DONE."""
    try:
        with open(os.path.join(RUN_DIR, "DONE")) as f:
            return json.load(f)["checkpoints"]
    except FileNotFoundError:
        return None


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in results]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, [r["accuracy"] for r in results], marker="o", lw=2, c="tab:blue",
            label="test accuracy (held-out points)")
    ax.axhline(1 / model.CLASSES, ls="--", c="grey", lw=1, label="chance (1 in 3)")
    ax.set(xlabel="training step of the checkpoint", ylabel="test accuracy", ylim=(0, 1.05),
           title=f"train-eval (job {JOB_ID}): accuracy per checkpoint")
    ax.grid(alpha=0.3)
    loss_ax = ax.twinx()
    loss_ax.plot(steps, [r["loss"] for r in results], marker="s", ms=4, lw=1, c="tab:orange",
                 label="training loss (mean since previous checkpoint)")
    loss_ax.set_ylabel("training loss")
    loss_ax.set_ylim(bottom=0)
    lines = ax.get_lines() + loss_ax.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right")
    fig.tight_layout()
    fig.savefig(f"{path}.tmp", format="png")
    plt.close(fig)
    os.replace(f"{path}.tmp", path)


def main() -> None:
    os.makedirs(RUN_DIR, exist_ok=True)
    x, y = model.spirals(2000, seed=1000 + int(os.environ.get("SEED", "0")))
    print(f"evaluator: watching {RUN_DIR} for checkpoints; test set of {len(y)} held-out points",
          flush=True)
    results: list[dict] = []
    done_list = None
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while True:
        done_list = done_list or finished()  # read before listing: no checkpoint is missed
        seen = {r["checkpoint"] for r in results}
        new = [c for c in checkpoints() if c not in seen]
        for name in new:
            with np.load(os.path.join(RUN_DIR, name)) as z:
                params = {k: z[k] for k in z.files if k not in ("step", "loss")}
                step, loss = int(z["step"]), float(z["loss"])
            acc = model.accuracy(params, x, y)
            training = "training finished" if done_list else "training still running"
            results.append({"checkpoint": name, "step": step, "loss": loss, "accuracy": acc,
                            "while_training": done_list is None})
            print(f"evaluator: {name} (step {step:5d})  test accuracy {acc:.3f}  ({training})",
                  flush=True)
        if done_list is not None and set(done_list) <= {r["checkpoint"] for r in results}:
            break
        if time.monotonic() > deadline:
            sys.exit(f"evaluator: training not done after {TIMEOUT_SECONDS:.0f}s")
        time.sleep(POLL_SECONDS)
    during = sum(r["while_training"] for r in results)
    print(f"evaluator: {len(results)} checkpoints evaluated ({during} while training ran); "
          f"accuracy {results[0]['accuracy']:.3f} -> {results[-1]['accuracy']:.3f}", flush=True)
    with open(os.path.join(RUN_DIR, "accuracy.json"), "w") as f:
        json.dump({"job_id": JOB_ID, "results": results}, f, indent=1)
    png = os.path.join(RUN_DIR, "accuracy.png")
    plot(results, png)
    where = f" (volume '{VOLUME}'; `jobgroup volume ls` shows its folder)" if VOLUME else ""
    print(f"evaluator: plot written to {png}{where}", flush=True)


if __name__ == "__main__":
    main()
