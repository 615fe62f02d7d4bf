"""Streaming weighted aggregation: one running sum, so memory does not grow with the sites."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from shoal.wire.models import LazyParams


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
    """

    def __init__(self) -> None:
        self._sums: dict[str, np.ndarray] = {}
        self._dtypes: dict[str, np.dtype[Any]] = {}
        self._metric_sums: dict[str, float] = {}
        self._metric_weights: dict[str, float] = {}
        self.total_weight = 0.0
        self.count = 0

    def add(
        self, params: Mapping[str, np.ndarray], weight: float, metrics: dict[str, float] | None = None
    ) -> None:
        if weight <= 0:
            raise ValueError(f"update weight must be positive, got {weight}")
        if self._sums and set(params) != set(self._sums):
            missing = sorted(set(self._sums) ^ set(params))
            raise ValueError(f"update does not match the model's tensors: {missing}")
        if isinstance(params, LazyParams):
            self._add_streamed(params, weight)
            params = {}
        for name in params:
            arr = np.asarray(params[name])
            if name not in self._sums:
                self._sums[name] = arr.astype(_accumulator(arr.dtype)) * weight
                self._dtypes[name] = arr.dtype
            else:
                if arr.shape != self._sums[name].shape:
                    raise ValueError(
                        f"tensor {name!r} has shape {arr.shape}, expected {self._sums[name].shape}"
                    )
                self._sums[name] += _scaled(arr, weight, self._sums[name].dtype)
            del arr
        self._add_metrics(metrics, weight)
        self.total_weight += weight
        self.count += 1

    def _add_streamed(self, params: LazyParams, weight: float) -> None:
        """Fold an update in chunk by chunk from its file: memory stays at one chunk, whatever
        the model's size (the running sum is the only full-size array)."""
        for name in params:
            shape, dtype = params.shape(name)
            if name not in self._sums:
                self._dtypes[name] = dtype
                accumulator = _accumulator(dtype)
                if accumulator == dtype:
                    # The first update becomes the running sum as it is read: no zero-filled
                    # array to add it into (a pass over the model saved per round).
                    first = params[name]
                    if weight != 1:
                        first *= weight
                    self._sums[name] = first
                    continue
                self._sums[name] = np.zeros(shape, dtype=accumulator)
            elif shape != self._sums[name].shape:
                raise ValueError(f"tensor {name!r} has shape {shape}, expected {self._sums[name].shape}")
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

    def _add_metrics(self, metrics: dict[str, float] | None, weight: float) -> None:
        for key, val in (metrics or {}).items():
            self._metric_sums[key] = self._metric_sums.get(key, 0.0) + float(val) * weight
            self._metric_weights[key] = self._metric_weights.get(key, 0.0) + weight

    def result(self) -> dict[str, np.ndarray]:
        """The weighted mean; it takes over the running sums (in place), so call it once."""
        if self.count == 0:
            raise ValueError("no updates to aggregate")
        out: dict[str, np.ndarray] = {}
        for name in list(self._sums):
            total = self._sums.pop(name)
            total /= self.total_weight  # in place: no second copy of a large model
            out[name] = total.astype(self._dtypes[name], copy=False)
        return out

    def metrics(self) -> dict[str, float]:
        return {k: self._metric_sums[k] / self._metric_weights[k] for k in self._metric_sums}
