"""Streaming weighted aggregation: one running sum, so memory does not grow with the sites."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from shoal.wire.models import LazyParams, holds

#: A tensor's shape and dtype: what every update of a round must agree on, tensor by tensor.
TensorSpec = tuple[tuple[int, ...], np.dtype[Any]]


class UpdateMismatch(ValueError):
    """An update cannot be averaged with the others: a tensor missing or extra, of another shape
    or dtype, or of a kind that has no mean (bool). Nothing of it was added to the sum."""


def tensor_specs(params: Mapping[str, Any]) -> dict[str, TensorSpec]:
    """Each tensor's shape and dtype, read from a file's header for a streamed update."""
    if isinstance(params, LazyParams):
        return {name: params.shape(name) for name in params}
    specs: dict[str, TensorSpec] = {}
    for name in params:
        arr = np.asarray(params[name])
        specs[name] = (arr.shape, arr.dtype)
    return specs


def mismatch(expected: Mapping[str, TensorSpec], params: Mapping[str, Any]) -> str | None:
    """Why ``params`` does not fit tensors ``expected`` (same names, shapes and dtypes), or None."""
    got = tensor_specs(params)
    if set(got) != set(expected):
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected {extra}"] if extra else [])
        return f"its tensors differ: {', '.join(parts)}"
    for name in sorted(got):
        (shape, dtype), (want_shape, want_dtype) = got[name], expected[name]
        if shape != want_shape:
            return f"tensor {name!r} has shape {shape}, expected {want_shape}"
        if dtype != want_dtype:
            return f"tensor {name!r} is {dtype}, expected {want_dtype}"
    return None


def _unaveraged(specs: Mapping[str, TensorSpec]) -> str | None:
    """Why one of these tensors has no mean (only integer and float tensors have one), or None."""
    for name in sorted(specs):
        dtype = specs[name][1]
        if dtype.kind not in "iuf":
            return f"tensor {name!r} is {dtype}, which cannot be averaged (only numbers can)"
    return None


def _accumulator(dtype: np.dtype[Any]) -> type[np.floating[Any]]:
    """float64 sums for float64 (and integer) tensors; float32 for smaller floats, so a large
    float32 model's running sum takes its own size, not twice it."""
    if np.issubdtype(dtype, np.floating) and dtype.itemsize <= 4:
        return np.float32
    return np.float64


def _scaled(arr: np.ndarray, weight: float, dtype: np.dtype[Any]) -> np.ndarray:
    """``arr * weight`` computed in the sum's dtype: scaling a float16 tensor by a site's
    example count in float16 would round it, and overflow past 65504."""
    return arr * weight if arr.dtype == dtype else arr.astype(dtype) * weight


class WeightedSum:
    """Accumulates ``sum(w_i * x_i)`` and ``sum(w_i)`` one update at a time.

    Updates are folded in as they arrive and can be freed right away; the result is the
    weighted mean. Sums are kept in float64 so the order updates arrive in does not
    change the answer beyond float rounding of the final cast.

    The first update sets the tensors: every later one must have the same names, shapes and
    dtypes, or ``add`` raises ``UpdateMismatch`` before adding any of it. Mixed dtypes are
    refused rather than cast: a float32 update summed into an int64 model came back truncated,
    and which dtype should win is the job author's call, not the aggregator's. Bool tensors (and
    any other non-numeric kind) are refused: a mean of flags has no meaning.

    Integer tensors are averaged, in float64, and the mean is rounded to the nearest integer
    (half to even) in the tensor's own dtype. They are common in real models, PyTorch
    BatchNorm's ``num_batches_tracked`` (int64) in every ResNet: refusing them would fail any
    such job, and FLARE and Flower both average them; a FLARE/PyTorch user loads the result with
    ``load_state_dict``, which needs the dtype kept. Rounding, not truncating, keeps the mean of
    1 and 2 (weights 1 and 2) at 2 rather than 1. Exact while values stay below 2**53.
    """

    def __init__(self, reuse: Mapping[str, np.ndarray] | None = None) -> None:
        # Arrays the caller is done with (the previous round's model, which a task already
        # carries): the running sums take their memory instead of fresh pages (decisions/0054).
        self._spare = dict(reuse or {})
        self._sums: dict[str, np.ndarray] = {}
        self._dtypes: dict[str, np.dtype[Any]] = {}
        self._metric_sums: dict[str, float] = {}
        self._metric_weights: dict[str, float] = {}
        self.total_weight = 0.0
        self.count = 0
        self._broken: str | None = None  # why the sum is no longer one of whole updates

    def add(
        self, params: Mapping[str, np.ndarray], weight: float, metrics: dict[str, float] | None = None
    ) -> None:
        """Fold one update in. A read of it that raises part-way (an update whose values are
        checked as they are read, ``LazyParams.inspect``, refused in its middle) leaves a sum
        that is no sum of whole updates: it refuses any further use (the job fails anyway)."""
        if self._broken is not None:
            raise ValueError(f"this sum is incomplete: {self._broken}")
        if weight <= 0:
            raise ValueError(f"update weight must be positive, got {weight}")
        self._check(params)
        try:
            self._add_values(params, weight)
        except BaseException as exc:
            self._broken = f"an update was refused while it was being added ({type(exc).__name__}: {exc})"
            raise
        self._add_metrics(metrics, weight)
        self.total_weight += weight
        self.count += 1

    def _add_values(self, params: Mapping[str, np.ndarray], weight: float) -> None:
        if isinstance(params, LazyParams):
            self._add_streamed(params, weight)
            return
        for name in params:
            arr = np.asarray(params[name])
            if name not in self._sums:
                self._sums[name] = arr.astype(_accumulator(arr.dtype)) * weight
                self._dtypes[name] = arr.dtype
            else:
                self._sums[name] += _scaled(arr, weight, self._sums[name].dtype)
            del arr

    def _check(self, params: Mapping[str, Any]) -> None:
        """Refuse the whole update before any of it is summed, so a refused one leaves the sum
        as it was (reading shapes and dtypes of a streamed update touches its header only)."""
        if self.count == 0:
            reason = _unaveraged(tensor_specs(params))
        else:
            expected = {name: (self._sums[name].shape, self._dtypes[name]) for name in self._sums}
            reason = mismatch(expected, params)
        if reason is not None:
            raise UpdateMismatch(reason)

    def _add_streamed(self, params: LazyParams, weight: float) -> None:
        """Fold an update in chunk by chunk from its file: memory stays at one chunk, whatever
        the model's size (the running sum is the only full-size array)."""
        for name in params:
            shape, dtype = params.shape(name)
            if name not in self._sums:
                self._dtypes[name] = dtype
                accumulator = _accumulator(dtype)
                spare = self._take_spare(name, shape, accumulator)
                if accumulator == dtype:
                    # The first update becomes the running sum as it is read: no zero-filled
                    # array to add it into (a pass over the model saved per round).
                    first = params.read(name, spare)
                    if weight != 1:
                        first *= weight
                    self._sums[name] = first
                    continue
                if spare is not None:
                    spare.fill(0)
                self._sums[name] = np.zeros(shape, dtype=accumulator) if spare is None else spare
            flat = self._sums[name].reshape(-1)
            for start, chunk in params.chunks(name):
                part = flat[start : start + chunk.size]
                if weight == 1:
                    part += chunk
                elif chunk.dtype == part.dtype:
                    chunk *= weight  # the chunk is LazyParams' scratch buffer: no temporary array
                    part += chunk
                else:
                    part += _scaled(chunk, weight, part.dtype)

    def _take_spare(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
        """The caller's array for tensor ``name`` if it can hold its sum: same shape and dtype,
        contiguous, writable, and its own memory (not a view into another array or a file)."""
        spare = self._spare.pop(name, None)
        if isinstance(spare, np.ndarray) and holds(spare, shape, dtype) and spare.flags.owndata:
            return spare
        return None

    def _add_metrics(self, metrics: dict[str, float] | None, weight: float) -> None:
        for key, val in (metrics or {}).items():
            self._metric_sums[key] = self._metric_sums.get(key, 0.0) + float(val) * weight
            self._metric_weights[key] = self._metric_weights.get(key, 0.0) + weight

    def result(self) -> dict[str, np.ndarray]:
        """The weighted mean; it takes over the running sums (in place), so call it once."""
        if self._broken is not None:
            raise ValueError(f"this sum is incomplete: {self._broken}")
        if self.count == 0:
            raise ValueError("no updates to aggregate")
        self._spare.clear()
        out: dict[str, np.ndarray] = {}
        for name in list(self._sums):
            total = self._sums.pop(name)
            total /= self.total_weight  # in place: no second copy of a large model
            dtype = self._dtypes[name]
            if dtype.kind in "iu":
                np.rint(total, out=total)  # the nearest integer: astype alone truncates
            out[name] = total.astype(dtype, copy=False)
        return out

    def metrics(self) -> dict[str, float]:
        return {k: self._metric_sums[k] / self._metric_weights[k] for k in self._metric_sums}
