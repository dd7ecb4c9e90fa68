"""data-server: hands out batches of arithmetic prompts (with their reference answers) from the
small dataset shipped in data/arithmetic.jsonl.

    GET /batch?n=32   -> {"prompts": [{"id", "prompt", "answer"}, ...]}   (sampled, seeded)
    GET /stats        -> {"size", "served"}
"""

import json
import os
import random
import threading

from common import log, serve

DATASET = os.environ.get("DATASET", "data/arithmetic.jsonl")

with open(DATASET) as f:
    rows = [json.loads(line) for line in f if line.strip()]
rng = random.Random(int(os.environ.get("SEED", "0")))
lock = threading.Lock()
served = 0


def batch(query, body):
    global served
    n = int(query.get("n", ["32"])[0])
    with lock:
        served += n
        return {"prompts": rng.sample(rows, min(n, len(rows)))}


log(f"data-server: {len(rows)} prompts from {DATASET}, e.g. {rows[0]['prompt']!r}")
serve("data-server", {
    ("GET", "/batch"): batch,
    ("GET", "/stats"): lambda q, b: {"size": len(rows), "served": served},
}, on_stop=lambda: log(f"data-server: served {served} prompts"))
