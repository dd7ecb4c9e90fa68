"""The model and data both train-eval tasks share: a small numpy MLP classifying three
interleaved spirals (a classic toy problem a linear model cannot solve).

The trainer draws its training set with seed TRAIN_SEED, the evaluator a held-out test set with
another seed: same distribution, different points.
"""

from __future__ import annotations

import numpy as np

CLASSES = 3


def spirals(n: int, seed: int, noise: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """n points (x, y) on CLASSES spiral arms; labels are the arm index."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    r = rng.uniform(0.05, 1.0, n)
    theta = 10.0 * r + y * 2 * np.pi / CLASSES + rng.normal(0, noise, n)
    x = np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)
    return x, y


def init(hidden: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w1": rng.normal(0, 1.0, (2, hidden)), "b1": np.zeros(hidden),
            "w2": rng.normal(0, 1 / np.sqrt(hidden), (hidden, hidden)), "b2": np.zeros(hidden),
            "w3": rng.normal(0, 1 / np.sqrt(hidden), (hidden, CLASSES)), "b3": np.zeros(CLASSES)}


def forward(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits, and the hidden activations backprop needs."""
    h1 = np.tanh(x @ p["w1"] + p["b1"])
    h2 = np.tanh(h1 @ p["w2"] + p["b2"])
    return h2 @ p["w3"] + p["b3"], [h1, h2]


def accuracy(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    return float((forward(p, x)[0].argmax(axis=1) == y).mean())


def loss_and_grads(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray
                   ) -> tuple[float, dict[str, np.ndarray]]:
    """Mean cross-entropy and its gradient with respect to every parameter."""
    logits, (h1, h2) = forward(p, x)
    z = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(-np.log(prob[np.arange(n), y] + 1e-12).mean())
    d3 = prob
    d3[np.arange(n), y] -= 1
    d3 /= n
    d2 = (d3 @ p["w3"].T) * (1 - h2 ** 2)
    d1 = (d2 @ p["w2"].T) * (1 - h1 ** 2)
    return loss, {"w3": h2.T @ d3, "b3": d3.sum(0), "w2": h1.T @ d2, "b2": d2.sum(0),
                  "w1": x.T @ d1, "b1": d1.sum(0)}
