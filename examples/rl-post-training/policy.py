"""The policy: a linear softmax over answer strategies, given bag-of-words features of the prompt.

A "response" is built by one of a few strategies applied to the two numbers of the prompt (in
the order they appear): x + y, x - y, y - x, x * y, or writing the digits side by side. A fresh
policy picks among them at random (about 1 in 5 correct); learning which words call for which
strategy ("times" -> x * y, "Subtract ... from" -> y - x) raises the reward towards 1.

    logits = W @ features(prompt)        W: (strategies, DIM), starts at zero (uniform)
    pi     = softmax(logits)

The rollout servers sample from pi; the trainer recomputes pi to update W.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

STRATEGIES = ["x + y", "x - y", "y - x", "x * y", "digits of x then y"]
# Hashed bag-of-words buckets (bucket 0 is a bias). With 64 buckets "plus" and "minus" share one
# and the policy could not tell them apart; with 256 only "sum" and "add" do, which is harmless.
DIM = 256

_TOKEN = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")


def numbers(prompt: str) -> tuple[int, int]:
    x, y = (int(n) for n in re.findall(r"\d+", prompt)[:2])
    return x, y


def features(prompt: str) -> np.ndarray:
    """Bias plus one bucket per distinct token (numbers all map to one token), L2-normalised."""
    v = np.zeros(DIM)
    v[0] = 1.0
    for tok in set(_TOKEN.findall(prompt.lower())):
        tok = "<num>" if tok.isdigit() else tok
        v[1 + zlib.crc32(tok.encode()) % (DIM - 1)] = 1.0
    return v / np.linalg.norm(v)


def probs(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """pi(. | x) for one feature vector (shape (DIM,)) or a batch (shape (N, DIM))."""
    z = x @ w.T
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def respond(prompt: str, strategy: int) -> str:
    x, y = numbers(prompt)
    value = [x + y, x - y, y - x, x * y, int(f"{x}{y}")][strategy]
    return f"The answer is {value}."


def zeros() -> np.ndarray:
    return np.zeros((len(STRATEGIES), DIM))
