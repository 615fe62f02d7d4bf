"""FedProx's proximal term and its gradient, checked against the formula written out here
(``mu/2 * sum_i (w_i - g_i)^2`` and ``mu * (w - g)``), against a finite-difference gradient of
the term, and, where torch is installed, against autograd on torch tensors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from shoal.fl.fedprox import proximal_gradient, proximal_term


def random_params(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=4), "scale": rng.normal(size=())}


@pytest.mark.parametrize("mu", [0.0, 0.01, 0.5, 3.0])
def test_the_term_is_half_mu_times_the_squared_distance(mu: float) -> None:
    params, anchor = random_params(1), random_params(2)
    squared = 0.0
    for name in params:
        for w, g in zip(np.ravel(params[name]), np.ravel(anchor[name]), strict=True):
            squared += (float(w) - float(g)) * (float(w) - float(g))
    assert float(proximal_term(params, anchor, mu)) == pytest.approx(mu / 2 * squared, rel=1e-12, abs=0.0)


def test_the_term_counts_only_tensors_the_global_model_has() -> None:
    params = {"w": np.array([3.0, 4.0]), "local_only": np.array([100.0])}
    anchor = {"w": np.array([0.0, 0.0]), "global_only": np.array([7.0])}
    assert float(proximal_term(params, anchor, 2.0)) == pytest.approx(25.0)  # 2/2 * (9 + 16)
    assert set(proximal_gradient(params, anchor, 2.0)) == {"w"}


def test_the_term_is_zero_at_the_global_model_and_grows_with_distance() -> None:
    anchor = random_params(3)
    assert float(proximal_term(anchor, anchor, 1.0)) == 0.0
    near = {k: v + 0.1 for k, v in anchor.items()}
    far = {k: v + 0.2 for k, v in anchor.items()}
    assert 0.0 < float(proximal_term(near, anchor, 1.0)) < float(proximal_term(far, anchor, 1.0))


@pytest.mark.parametrize("mu", [0.01, 0.5, 3.0])
def test_the_gradient_is_mu_times_the_difference(mu: float) -> None:
    params, anchor = random_params(4), random_params(5)
    grad = proximal_gradient(params, anchor, mu)
    assert set(grad) == set(params)
    for name in params:
        want = np.array(
            [
                mu * (float(w) - float(g))
                for w, g in zip(np.ravel(params[name]), np.ravel(anchor[name]), strict=True)
            ]
        )
        np.testing.assert_allclose(np.ravel(grad[name]), want, rtol=1e-12, atol=0.0)
        assert np.shape(grad[name]) == np.shape(params[name])


def test_the_gradient_is_the_derivative_of_the_term() -> None:
    """Central differences of proximal_term, element by element: the two functions agree with
    each other, not only each with its formula (a sign or a factor of 2 would show)."""
    params, anchor, mu, h = random_params(6), random_params(7), 0.7, 1e-6
    grad = proximal_gradient(params, anchor, mu)
    for name, value in params.items():
        flat = np.ravel(value)
        for i in range(flat.size):
            up = {k: v.copy() for k, v in params.items()}
            down = {k: v.copy() for k, v in params.items()}
            np.ravel(up[name])[i] += h  # ravel of a contiguous copy is a view: this edits up[name]
            np.ravel(down[name])[i] -= h
            numeric = (float(proximal_term(up, anchor, mu)) - float(proximal_term(down, anchor, mu))) / (
                2 * h
            )
            assert numeric == pytest.approx(float(np.ravel(grad[name])[i]), rel=1e-6, abs=1e-8)


def test_one_gradient_step_moves_toward_the_global_model() -> None:
    params, anchor = random_params(8), random_params(9)
    step = {
        k: v - 0.1 * g
        for (k, v), g in zip(params.items(), proximal_gradient(params, anchor, 1.0).values(), strict=True)
    }
    for name in params:
        np.testing.assert_allclose(step[name] - anchor[name], 0.9 * (params[name] - anchor[name]), rtol=1e-12)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_on_torch_tensors_autograd_agrees() -> None:
    import torch

    params = {k: torch.tensor(v, requires_grad=True) for k, v in random_params(10).items()}
    anchor = {k: torch.tensor(v) for k, v in random_params(11).items()}
    term = proximal_term(params, anchor, 0.3)
    term.backward()
    grad = proximal_gradient({k: v.detach() for k, v in params.items()}, anchor, 0.3)
    for name, tensor in params.items():
        assert tensor.grad is not None
        torch.testing.assert_close(tensor.grad, grad[name], rtol=1e-12, atol=0.0)
