"""trainer: trains the spiral MLP with Adam and writes a checkpoint to the shared volume every
CKPT_EVERY steps, while the evaluator scores them. When done it writes DONE, listing them all.

Checkpoints are /checkpoints/run-JOB/ckpt-NNNNNN.npz (weights, step, training loss), each written
under a temporary name and then renamed, so the evaluator never reads half a file.
"""

import io
import json
import os
import time

import numpy as np

import model

STEPS = int(os.environ.get("STEPS", "3000"))
CKPT_EVERY = int(os.environ.get("CKPT_EVERY", "250"))
BATCH = int(os.environ.get("BATCH", "256"))
HIDDEN = int(os.environ.get("HIDDEN", "128"))
LR = float(os.environ.get("LR", "0.002"))
SEED = int(os.environ.get("SEED", "0"))
RUN_DIR = os.path.join(os.environ.get("CHECKPOINT_DIR", "/checkpoints"),
                       f"run-{os.environ.get('SKYPILOT_MANAGED_JOB_ID', '0')}")


def atomic_write(path: str, data: bytes) -> None:
    with open(f"{path}.tmp", "wb") as f:
        f.write(data)
    os.replace(f"{path}.tmp", path)


def main() -> None:
    os.makedirs(RUN_DIR, exist_ok=True)
    x, y = model.spirals(2000, seed=SEED)
    params = model.init(HIDDEN, seed=SEED)
    m = {k: np.zeros_like(v) for k, v in params.items()}  # Adam's moment estimates
    v = {k: np.zeros_like(v) for k, v in params.items()}
    rng = np.random.default_rng(SEED)
    print(f"trainer: {STEPS} steps of Adam (lr {LR}, batch {BATCH}) on {len(y)} spiral points, "
          f"a checkpoint every {CKPT_EVERY} steps in {RUN_DIR}", flush=True)
    t0, losses, saved = time.monotonic(), [], []
    for step in range(1, STEPS + 1):
        idx = rng.integers(0, len(y), BATCH)
        loss, grads = model.loss_and_grads(params, x[idx], y[idx])
        losses.append(loss)
        for k, g in grads.items():
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g * g
            params[k] -= LR * (m[k] / (1 - 0.9 ** step)) / (np.sqrt(v[k] / (1 - 0.999 ** step)) + 1e-8)
        if step % CKPT_EVERY == 0 or step == STEPS:
            name = f"ckpt-{step:06d}.npz"
            avg = float(np.mean(losses[-CKPT_EVERY:]))
            buf = io.BytesIO()
            np.savez(buf, step=step, loss=avg, **params)
            atomic_write(os.path.join(RUN_DIR, name), buf.getvalue())
            saved.append(name)
            print(f"trainer: step {step:5d}/{STEPS}  loss {avg:.3f}  "
                  f"train accuracy {model.accuracy(params, x, y):.3f}  -> {name}", flush=True)
    atomic_write(os.path.join(RUN_DIR, "DONE"),
                 json.dumps({"steps": STEPS, "checkpoints": saved}).encode())
    print(f"trainer: done, {len(saved)} checkpoints in {time.monotonic() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
