from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from shoal.wire.models import LazyParams, save_params
from shoal.workflows.aggregate import UpdateMismatch, WeightedSum


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
    updates: list[dict[str, np.ndarray]] = [
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
    adders: list[Callable[[WeightedSum], None]] = [
        lambda acc: acc.add(update, 60_000),
        lambda acc: acc.add(SmallChunks(tmp_path / "u.safetensors"), 60_000),
    ]
    for add in adders:
        acc = WeightedSum()
        add(acc)
        add(acc)
        out = acc.result()["w"]
        assert out.dtype == np.float16
        np.testing.assert_array_equal(out, np.full(6, 2.0, dtype=np.float16))


def _as_read_from_file(params: dict[str, np.ndarray], path: Path) -> LazyParams:
    save_params(params, path)
    return LazyParams(path)


@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
def test_an_update_of_another_dtype_is_refused_and_leaves_the_sum_as_it_was(
    tmp_path: Path, streamed: bool
) -> None:
    """float32 then int64 used to be summed and cast to the first's dtype, or truncated to the
    int64 [1, 1, 1] where the mean is 1.25: now the second update is refused, untouched."""
    first: dict[str, np.ndarray] = {"w": np.full(3, 0.5, np.float32), "b": np.ones(2, np.float32)}
    other: dict[str, np.ndarray] = {"w": np.full(3, 2, np.int64), "b": np.ones(2, np.float32)}
    acc = WeightedSum()
    acc.add(_as_read_from_file(first, tmp_path / "a.safetensors") if streamed else first, 1)
    with pytest.raises(UpdateMismatch, match="'w' is int64, expected float32"):
        acc.add(_as_read_from_file(other, tmp_path / "b.safetensors") if streamed else other, 1)
    assert acc.count == 1 and acc.total_weight == 1
    out = acc.result()
    np.testing.assert_array_equal(out["b"], np.ones(2, np.float32))  # 'b' was not added twice
    np.testing.assert_array_equal(out["w"], np.full(3, 0.5, np.float32))


@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
def test_bool_tensors_cannot_be_averaged(tmp_path: Path, streamed: bool) -> None:
    flags = {"mask": np.array([True, False, True])}
    acc = WeightedSum()
    with pytest.raises(UpdateMismatch, match="'mask' is bool, which cannot be averaged"):
        acc.add(_as_read_from_file(flags, tmp_path / "m.safetensors") if streamed else flags, 1)
    assert acc.count == 0


@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
def test_integer_tensors_average_to_the_nearest_integer_in_their_own_dtype(
    tmp_path: Path, streamed: bool
) -> None:
    """(1*1 + 2*2) / 3 = 1.67 is 2, where a cast alone truncated to 1 (a BatchNorm counter)."""
    updates = [{"n": np.array([1, 7], np.int64)}, {"n": np.array([2, 7], np.int64)}]
    acc = WeightedSum()
    for i, (update, weight) in enumerate(zip(updates, (1, 2), strict=True)):
        acc.add(_as_read_from_file(update, tmp_path / f"{i}.safetensors") if streamed else update, weight)
    out = acc.result()["n"]
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [2, 7])


def test_a_mismatch_says_which_tensors_are_missing_and_which_are_extra() -> None:
    acc = WeightedSum()
    acc.add({"w": np.zeros(2), "b": np.zeros(1)}, 1)
    with pytest.raises(UpdateMismatch, match=r"missing \['b'\], unexpected \['v'\]"):
        acc.add({"w": np.zeros(2), "v": np.zeros(1)}, 1)


# --- edges that mutation testing found unchecked (docs/mutation.md) --------------------------


def test_metrics_are_weighted_by_the_examples() -> None:
    acc = WeightedSum()
    acc.add({"w": np.zeros(1)}, 2, {"loss": 3.0, "acc": 0.5})
    acc.add({"w": np.zeros(1)}, 6, {"loss": 1.0})  # a metric one site did not send
    assert acc.metrics() == {"loss": pytest.approx((2 * 3.0 + 6 * 1.0) / 8), "acc": 0.5}


def test_large_integers_are_summed_in_float64() -> None:
    """2**24 + 1 is exact in float64 and not in float32: an int32 tensor's mean keeps it."""
    acc = WeightedSum()
    big = np.array([2**24 + 1, -(2**24) - 1], dtype=np.int32)
    acc.add({"n": big}, 1)
    acc.add({"n": big}, 3)
    out = acc.result()["n"]
    assert out.dtype == np.int32 and out.tolist() == big.tolist()


@pytest.mark.parametrize(
    ("dtype", "sum_dtype"),
    [(np.float16, np.float32), (np.float32, np.float32), (np.float64, np.float64), (np.int64, np.float64)],
)
def test_the_running_sum_is_as_wide_as_it_must_be_and_no_wider(
    tmp_path: Path, dtype: type, sum_dtype: type
) -> None:
    """The class's promise on memory: a float32 (or float16) model's running sum is float32,
    not float64 (twice the model), in memory and streamed alike; integers sum in float64."""
    save_params({"w": np.ones(3, dtype=dtype)}, tmp_path / "u.safetensors")
    updates: list[dict[str, np.ndarray] | LazyParams] = [
        {"w": np.ones(3, dtype=dtype)},
        LazyParams(tmp_path / "u.safetensors"),
    ]
    for update in updates:
        acc = WeightedSum()
        acc.add(update, 1)
        acc.add(update, 2)
        assert acc._sums["w"].dtype == sum_dtype
        assert acc.result()["w"].dtype == dtype


def test_a_streamed_first_update_weighing_two_is_scaled(tmp_path: Path) -> None:
    save_params({"w": np.array([1.0, 2.0])}, tmp_path / "a.safetensors")
    save_params({"w": np.array([4.0, 8.0])}, tmp_path / "b.safetensors")
    acc = WeightedSum()
    acc.add(LazyParams(tmp_path / "a.safetensors"), 2)
    acc.add(LazyParams(tmp_path / "b.safetensors"), 1)
    np.testing.assert_array_equal(acc.result()["w"], [2.0, 4.0])  # (2*1 + 4) / 3, (2*2 + 8) / 3


def test_a_mismatch_names_only_what_differs() -> None:
    acc = WeightedSum()
    acc.add({"w": np.zeros(2)}, 1)
    with pytest.raises(UpdateMismatch) as err:
        acc.add({"w": np.zeros(2), "v": np.zeros(1)}, 1)
    assert str(err.value) == "its tensors differ: unexpected ['v']"
    with pytest.raises(UpdateMismatch) as err:
        acc.add({}, 1)
    assert str(err.value) == "its tensors differ: missing ['w']"
    with pytest.raises(ValueError, match="^no updates to aggregate$"):
        WeightedSum().result()


class Refused(Exception):
    """What the test's inspector raises for a value it refuses."""


def _refuse_nan(name: str, values: np.ndarray) -> None:
    if np.isnan(values).any():
        raise Refused(name)


@pytest.mark.parametrize("first", [True, False], ids=["as-the-first-update", "as-a-later-update"])
def test_an_update_refused_while_it_is_read_leaves_a_sum_that_refuses_any_further_use(
    tmp_path: Path, first: bool
) -> None:
    """Its values are checked as they are read (``LazyParams.inspect``), the chunks before the
    refused one already summed: the sum says so instead of averaging a part of an update."""
    bad = np.ones(3 * 2**20 // 4, dtype=np.float32)  # three of LazyParams' chunks... and more
    bad[-1] = np.nan
    save_params({"w": bad}, tmp_path / "bad.safetensors")
    acc = WeightedSum()
    if not first:
        acc.add({"w": np.ones_like(bad)}, 1.0)
    with pytest.raises(Refused):
        acc.add(LazyParams(tmp_path / "bad.safetensors", inspect=_refuse_nan), 2.0)
    with pytest.raises(ValueError, match="this sum is incomplete: an update was refused"):
        acc.result()
    with pytest.raises(ValueError, match="this sum is incomplete"):
        acc.add({"w": np.ones_like(bad)}, 1.0)


def test_an_inspected_update_that_passes_sums_as_an_uninspected_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    one, two = (rng.standard_normal(3 * 2**20 // 4).astype(np.float32) for _ in range(2))
    save_params({"w": one}, tmp_path / "one.safetensors")
    save_params({"w": two}, tmp_path / "two.safetensors")
    sums = []
    for inspect in (None, _refuse_nan):
        acc = WeightedSum()
        acc.add(LazyParams(tmp_path / "one.safetensors", inspect=inspect), 1.0)
        acc.add(LazyParams(tmp_path / "two.safetensors", inspect=inspect), 3.0)
        sums.append(acc.result()["w"])
    np.testing.assert_array_equal(sums[0], sums[1])


def test_a_sum_takes_the_memory_of_a_spare_array_that_fits_and_only_then(tmp_path: Path) -> None:
    """``reuse`` (decisions/0054): the running sum lives in the caller's array when it has the
    tensor's shape and the sum's dtype and owns its memory; anything else is not touched. The
    mean is the same either way."""
    one, two = np.full(1000, 2.0, np.float32), np.full(1000, 4.0, np.float32)
    save_params({"w": one}, tmp_path / "1.safetensors")
    save_params({"w": two}, tmp_path / "2.safetensors")

    def mean(reuse: dict[str, np.ndarray] | None) -> np.ndarray:
        acc = WeightedSum(reuse=reuse)
        acc.add(LazyParams(tmp_path / "1.safetensors"), 1)
        acc.add(LazyParams(tmp_path / "2.safetensors"), 3)
        return acc.result()["w"]

    spare = np.zeros(1000, np.float32)
    got = mean({"w": spare})
    assert np.shares_memory(got, spare) and np.allclose(got, 3.5)
    base = np.zeros(2000, np.float32)
    unfit: list[np.ndarray] = [
        np.zeros(1000, np.float64),
        np.zeros(999, np.float32),
        base[:1000],
    ]  # dtype, shape, a view
    frozen = np.zeros(1000, np.float32)
    frozen.flags.writeable = False
    for other in [*unfit, frozen]:
        got = mean({"w": other})
        assert not np.shares_memory(got, other) and np.allclose(got, 3.5)
        assert not other.any()  # left as it was
