"""reward-server: verifies answers. The reward is 1.0 when the last integer in the response equals
the reference answer, else 0.0 (a rule-based verifier, as in RL with verifiable rewards).

    POST /score {"items": [{"response", "answer"}, ...]} -> {"rewards": [1.0, 0.0, ...]}
    GET  /stats -> {"scored", "correct"}
"""

import re
import threading

from common import log, serve

lock = threading.Lock()
scored = correct = 0


def verify(response: str, answer: int) -> float:
    found = re.findall(r"-?\d+", response)
    return 1.0 if found and int(found[-1]) == int(answer) else 0.0


def score(query, body):
    global scored, correct
    rewards = [verify(item["response"], item["answer"]) for item in body["items"]]
    with lock:
        scored += len(rewards)
        correct += int(sum(rewards))
    return {"rewards": rewards}


serve("reward-server", {
    ("POST", "/score"): score,
    ("GET", "/stats"): lambda q, b: {"scored": scored, "correct": correct},
}, on_stop=lambda: log(f"reward-server: scored {scored} responses, {correct} correct"))
