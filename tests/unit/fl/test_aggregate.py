from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shoal.fl.aggregate import WeightedSum
from shoal.wire.models import LazyParams, save_params


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


class SmallChunks(LazyParams):
    """Reads in 40-byte chunks, so a tensor spans many chunks (and a partial last one)."""

    def chunks(self, key: str, chunk_bytes: int = 40) -> Iterator[tuple[int, np.ndarray]]:
        return super().chunks(key, chunk_bytes)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32])
@pytest.mark.parametrize("weights", [(1, 1, 1), (3, 1, 2.5)])
def test_streamed_updates_sum_exactly_as_in_memory_ones(
    tmp_path: Path, dtype: type, weights: tuple[float, ...]
) -> None:
    """Updates read from their files (the server's path) give the same bits as arrays in memory,
    whether the first one becomes the sum as read (float32/64) or goes into a wider one."""
    rng = np.random.default_rng(7)
    updates = [
        {"w": (rng.normal(size=(5, 7)) * 100).astype(dtype), "b": (rng.normal(size=3) * 100).astype(dtype)}
        for _ in weights
    ]
    streamed, in_memory = WeightedSum(), WeightedSum()
    for i, (update, weight) in enumerate(zip(updates, weights, strict=True)):
        path = tmp_path / f"u{i}.safetensors"
        save_params(update, path)
        streamed.add(SmallChunks(path), weight)
        in_memory.add(update, weight)
    got, want = streamed.result(), in_memory.result()
    for name in want:
        assert got[name].dtype == want[name].dtype == dtype
        np.testing.assert_array_equal(got[name], want[name])
    for i, update in enumerate(updates):  # the files are read, never written
        assert all(
            np.array_equal(v, update[k]) for k, v in LazyParams(tmp_path / f"u{i}.safetensors").items()
        )


def test_a_streamed_update_of_another_shape_is_refused(tmp_path: Path) -> None:
    save_params({"w": np.zeros(4, np.float32)}, tmp_path / "a.safetensors")
    save_params({"w": np.zeros(5, np.float32)}, tmp_path / "b.safetensors")
    acc = WeightedSum()
    acc.add(LazyParams(tmp_path / "a.safetensors"), 1)
    with pytest.raises(ValueError, match="shape"):
        acc.add(LazyParams(tmp_path / "b.safetensors"), 1)


def test_float16_updates_weighted_by_large_example_counts_do_not_overflow(tmp_path: Path) -> None:
    """60,000 examples × 2.0 is past float16's largest value: the scaling happens in float32."""
    update = {"w": np.full(6, 2.0, dtype=np.float16)}
    save_params(update, tmp_path / "u.safetensors")
    for add in (
        lambda acc: acc.add(update, 60_000),
        lambda acc: acc.add(SmallChunks(tmp_path / "u.safetensors"), 60_000),
    ):
        acc = WeightedSum()
        add(acc)
        add(acc)
        out = acc.result()["w"]
        assert out.dtype == np.float16
        np.testing.assert_array_equal(out, np.full(6, 2.0, dtype=np.float16))
