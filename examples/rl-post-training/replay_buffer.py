"""replay-buffer: keeps the latest CAPACITY experiences (prompt, strategy, log-prob, reward) and
hands out random samples of them to the trainer.

    POST /add    {"items": [...]} -> {"size"}
    POST /sample {"n": 64}        -> {"items": [...]}   (uniform, without replacement, seeded)
    GET  /stats                   -> {"size", "capacity", "added", "sampled", "mean_reward"}
"""

import collections
import os
import random
import threading

from common import log, serve

CAPACITY = int(os.environ.get("CAPACITY", "256"))
buffer: collections.deque = collections.deque(maxlen=CAPACITY)
rng = random.Random(int(os.environ.get("SEED", "0")))
lock = threading.Lock()
counts = {"added": 0, "sampled": 0}


def add(query, body):
    with lock:
        buffer.extend(body["items"])
        counts["added"] += len(body["items"])
        return {"size": len(buffer)}


def sample(query, body):
    with lock:
        items = rng.sample(list(buffer), min(int(body["n"]), len(buffer)))
        counts["sampled"] += len(items)
        return {"items": items}


def stats(query=None, body=None):
    with lock:
        mean = sum(e["reward"] for e in buffer) / len(buffer) if buffer else 0.0
        return {"size": len(buffer), "capacity": CAPACITY, **counts, "mean_reward": mean}


serve("replay-buffer", {
    ("POST", "/add"): add,
    ("POST", "/sample"): sample,
    ("GET", "/stats"): stats,
}, on_stop=lambda: log(f"replay-buffer: final stats {stats()}"))
