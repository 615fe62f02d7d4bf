from __future__ import annotations

import numpy as np
import pytest

from shoal.fl.aggregate import WeightedSum


def test_weighted_mean_of_updates() -> None:
    acc = WeightedSum()
    acc.add({"w": np.array([1.0, 2.0], dtype=np.float32)}, 1, {"loss": 4.0})
    acc.add({"w": np.array([3.0, 6.0], dtype=np.float32)}, 3, {"loss": 0.0})
    out = acc.result()
    np.testing.assert_allclose(out["w"], [2.5, 5.0])
    assert out["w"].dtype == np.float32
    assert acc.metrics() == {"loss": 1.0}
    assert acc.count == 2 and acc.total_weight == 4


def test_mismatched_updates_are_refused() -> None:
    acc = WeightedSum()
    acc.add({"w": np.zeros(2)}, 1)
    with pytest.raises(ValueError, match="tensors"):
        acc.add({"v": np.zeros(2)}, 1)
    with pytest.raises(ValueError, match="shape"):
        acc.add({"w": np.zeros(3)}, 1)
    with pytest.raises(ValueError, match="positive"):
        acc.add({"w": np.zeros(2)}, 0)


def test_empty_result_is_an_error() -> None:
    with pytest.raises(ValueError):
        WeightedSum().result()
