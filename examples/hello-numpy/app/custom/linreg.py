"""Federated linear regression, the pieces a site needs: its own data and a local training step.

Every site draws its data from its own seed and its own feature distribution (non-identical
across sites), around one shared true model, so FedAvg has something real to agree on.
"""

from __future__ import annotations

import zlib

import numpy as np

from shoal.fl.fedprox import proximal_gradient

TRUE_WEIGHT = np.array([2.0, -3.0, 0.5])
TRUE_BIAS = 1.0


def site_data(site: str) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic per site: the seed, the row count and the feature means depend on its name."""
    seed = zlib.crc32(site.encode())
    rng = np.random.default_rng(seed)
    rows = 100 + seed % 200
    shift = rng.normal(0.0, 1.5, size=TRUE_WEIGHT.shape)
    x = rng.normal(shift, 1.0, size=(rows, TRUE_WEIGHT.size))
    y = x @ TRUE_WEIGHT + TRUE_BIAS + rng.normal(0.0, 0.1, size=rows)
    return x, y


def initial_params() -> dict[str, np.ndarray]:
    return {"weight": np.zeros_like(TRUE_WEIGHT), "bias": np.zeros(1)}


def mse(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    pred = x @ params["weight"] + params["bias"][0]
    return float(np.mean((pred - y) ** 2))


def step_limit(x: np.ndarray, mu: float = 0.0) -> float:
    """1/L for the mean squared error on ``x`` (with a bias column), plus FedProx's ``mu``:
    L is the largest eigenvalue of the loss's Hessian, 2/n·XᵀX (+ mu)."""
    design = np.hstack([x, np.ones((len(x), 1))])
    curvature = float(np.linalg.eigvalsh(2.0 / len(x) * design.T @ design).max()) + mu
    return 1.0 / curvature


def local_train(
    params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, lr: float, epochs: int, mu: float = 0.0
) -> dict[str, np.ndarray]:
    """Full-batch gradient descent on the mean squared error: deterministic, so tests can replay it.

    ``mu > 0`` adds FedProx's proximal term mu/2·||w - w_global||², which pulls the local
    weights toward the global model this round started from.

    The step never exceeds 1/L, L the largest curvature of this site's loss (``step_limit``):
    a site whose features sit far from zero has a steep loss, and a larger step overshoots
    further each epoch. Every site's update then moves toward its own optimum, so their
    average does too and FedAvg converges for any number of sites."""
    lr = min(lr, step_limit(x, mu))
    anchor = {"weight": params["weight"].astype(np.float64), "bias": params["bias"].astype(np.float64)}
    current = {"weight": anchor["weight"].copy(), "bias": anchor["bias"].copy()}
    n = len(y)
    for _ in range(epochs):
        err = x @ current["weight"] + current["bias"][0] - y
        grad = {"weight": (2.0 / n) * (x.T @ err), "bias": np.array([(2.0 / n) * float(err.sum())])}
        if mu:
            for name, extra in proximal_gradient(current, anchor, mu).items():
                grad[name] = grad[name] + extra
        for name in current:
            current[name] -= lr * grad[name]
    return current
