"""What a site's update must pass before a workflow sees it (shoal.workflows.update_checks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shoal.errors import ShoalError
from shoal.wire.models import LazyParams, save_params
from shoal.workflows.update_checks import (
    DEFAULT_MAX_NUM_EXAMPLES,
    UpdateChecks,
    first_non_finite,
    non_finite_values,
    update_checks_from_limits,
)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_a_non_finite_value_is_found_in_memory_and_in_a_streamed_file(
    tmp_path: Path, bad: float, dtype: Any
) -> None:
    params = {"a": np.ones(3, dtype=dtype), "b": np.ones(1000, dtype=dtype)}
    params["b"][-1] = bad
    assert first_non_finite(params) == "b"
    save_params(params, tmp_path / "u.safetensors")
    assert first_non_finite(LazyParams(tmp_path / "u.safetensors")) == "b"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, complex(np.nan, 0), complex(0, np.inf)])
@pytest.mark.parametrize("at", [0, 517, -1])
def test_one_non_finite_value_anywhere_is_found(bad: complex, at: int) -> None:
    """The check reads a float tensor's minimum and maximum: a NaN or infinity at its start,
    middle or end, among values as large as float32 holds, is still found (complex: each part)."""
    complex_bad = isinstance(bad, complex)
    dtype: Any = np.complex64 if complex_bad else np.float32
    values = np.full(1000, 3e38, dtype=dtype)
    values[::2] = -3e38
    values[at] = bad
    assert first_non_finite({"w": values}) == "w"
    values[at] = 1.0
    assert first_non_finite({"w": values}) is None
    assert first_non_finite({"w": np.zeros(0, dtype=dtype)}) is None


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_finite_values_whose_sum_overflows_pass_and_one_bad_value_among_them_is_found(dtype: Any) -> None:
    """The one-pass check sums the values: a sum that overflowed from finite values alone goes
    to the exact check, which passes them; a NaN or infinity among them is still found."""
    big = np.full(1000, np.finfo(dtype).max / 2, dtype=dtype)
    with np.errstate(over="ignore"):
        assert not np.isfinite(big.sum())  # the fast path alone would refuse these
    assert non_finite_values(big) is False and first_non_finite({"w": big}) is None
    for bad in (np.nan, np.inf, -np.inf):
        big[500] = bad
        assert non_finite_values(big) is True and first_non_finite({"w": big}) == "w"
    assert non_finite_values(np.array([1, 2], dtype=np.int64)) is False


def test_a_value_in_a_later_chunk_of_a_streamed_tensor_is_found(tmp_path: Path) -> None:
    """Past the first megabyte: the whole tensor is read, chunk by chunk."""
    big = np.zeros(3 * 2**20 // 4, dtype=np.float32)
    big[-1] = np.nan
    save_params({"w": big}, tmp_path / "u.safetensors")
    assert first_non_finite(LazyParams(tmp_path / "u.safetensors")) == "w"


def test_finite_and_integer_tensors_pass(tmp_path: Path) -> None:
    params: dict[str, np.ndarray] = {
        "w": np.array([1e38, -1e38], dtype=np.float32),
        "n": np.array([2**62], dtype=np.int64),
    }
    assert first_non_finite(params) is None
    save_params(params, tmp_path / "u.safetensors")
    assert first_non_finite(LazyParams(tmp_path / "u.safetensors")) is None
    assert UpdateChecks().values_problem(params) is None


def test_the_check_can_be_turned_off() -> None:
    nan = {"w": np.array([np.nan])}
    assert "holds NaN or infinite values" in str(UpdateChecks().values_problem(nan))
    assert UpdateChecks(reject_non_finite=False).values_problem(nan) is None


@pytest.mark.parametrize("value", [-1, 2.5, "7", True, None, 10**15, DEFAULT_MAX_NUM_EXAMPLES + 1])
def test_num_examples_must_be_a_whole_number_within_the_bound(value: Any) -> None:
    assert UpdateChecks().num_examples_problem(value) is not None


@pytest.mark.parametrize("value", [0, 1, DEFAULT_MAX_NUM_EXAMPLES])
def test_num_examples_within_the_bound_pass(value: int) -> None:
    assert UpdateChecks().num_examples_problem(value) is None
    assert UpdateChecks(max_num_examples=10).num_examples_problem(11) is not None


def test_limits_json_sets_the_checks_and_hands_them_to_the_controller(tmp_path: Path) -> None:
    path = tmp_path / "limits.json"
    checks = update_checks_from_limits({"reject_non_finite_updates": False, "max_num_examples": 100}, path)
    assert checks == UpdateChecks(reject_non_finite=False, max_num_examples=100)
    assert checks.controller_args() == ["--max-num-examples", "100", "--accept-non-finite"]
    assert update_checks_from_limits({"max_upload_bytes": 5}, path) == UpdateChecks()
    assert UpdateChecks().controller_args() == ["--max-num-examples", str(DEFAULT_MAX_NUM_EXAMPLES)]


@pytest.mark.parametrize(
    "data",
    [
        {"reject_non_finite_updates": "false"},
        {"reject_non_finite_updates": 0},
        {"max_num_examples": 0},
        {"max_num_examples": "lots"},
        {"max_num_examples": 1.5},
        {"max_num_examples": True},
    ],
    ids=json.dumps,
)
def test_a_wrongly_typed_setting_is_refused_naming_the_key(tmp_path: Path, data: dict[str, Any]) -> None:
    with pytest.raises(ShoalError) as err:
        update_checks_from_limits(data, tmp_path / "limits.json")
    assert err.value.code == "LOCAL_FILE_ERROR" and repr(next(iter(data))) in str(err.value)
