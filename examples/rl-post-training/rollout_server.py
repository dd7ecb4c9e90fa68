"""rollout-server (2 nodes): samples responses from the current policy.

Every node serves POST /rollout. Rank 0 is also the group's entry point, POST /generate: it splits
the batch across all rollout nodes by hostname (rollout-server-{i}.{group}) and merges the
answers, so the trainer needs one address only.

Before each batch a node checks the shared volume for newer weights: the trainer publishes
policy-vNNNN.npz and then points latest.json at it (both in /checkpoints/run-JOB), so a node
never reads a half-written file.

    POST /generate {"prompts": [{"id", "prompt", "answer"}, ...]}   (rank 0 only)
    POST /rollout  {"prompts": [...]}
        -> {"rollouts": [{"id", "prompt", "answer", "response", "strategy", "logp",
                          "version", "served_by"}, ...]}
"""

import json
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import policy
from common import NUM_NODES, RANK, RUN_DIR, call, log, serve, url

rng = np.random.default_rng(int(os.environ.get("SEED", "0")) + RANK)
lock = threading.Lock()
weights = policy.zeros()
version = 0  # v0 = the zero (uniform) policy, until the trainer publishes v1
generated = 0
HOST = socket.gethostname()


def refresh() -> None:
    """Load the newest published weights, if the trainer has published newer ones."""
    global weights, version
    try:
        with open(os.path.join(RUN_DIR, "latest.json")) as f:
            latest = json.load(f)
    except (OSError, ValueError):
        return
    if latest["version"] > version:
        with np.load(os.path.join(RUN_DIR, latest["file"])) as z:
            weights = z["w"]
        version = latest["version"]


def rollout(query, body):
    global generated
    out = []
    with lock:
        refresh()
        for item in body["prompts"]:
            pi = policy.probs(weights, policy.features(item["prompt"]))
            s = int(rng.choice(len(pi), p=pi))
            out.append({**item, "response": policy.respond(item["prompt"], s), "strategy": s,
                        "logp": float(np.log(pi[s])), "version": version, "served_by": HOST})
        generated += len(out)
    return {"rollouts": out}


pool = ThreadPoolExecutor(max_workers=NUM_NODES)


def generate(query, body):
    """Rank 0: an even share of the prompts to each rollout node, by hostname, concurrently."""
    prompts = body["prompts"]
    shares = [prompts[i::NUM_NODES] for i in range(NUM_NODES)]
    futures = [pool.submit(call, url("rollout-server", "/rollout", rank=i),
                           {"prompts": share}, wait=30) for i, share in enumerate(shares)]
    return {"rollouts": [r for f in futures for r in f.result()["rollouts"]]}


routes = {("POST", "/rollout"): rollout,
          ("GET", "/health"): lambda q, b: {"rank": RANK, "version": version}}
if RANK == 0:
    routes[("POST", "/generate")] = generate
    log(f"rollout-server 0: load-balancing /generate across "
        f"{', '.join(f'rollout-server-{i}' for i in range(NUM_NODES))}")
serve("rollout-server", routes,
      on_stop=lambda: log(f"rollout-server {RANK}: generated {generated} responses, "
                          f"last weights v{version}"))
