"""Model weights on the wire and on disk: safetensors files of numpy arrays, never pickle.

Loading a safetensors file cannot run code, and it maps straight onto numpy arrays. Metadata
(round numbers and the like) travels in the JSON messages beside the file, not inside it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from shoal.errors import ShoalError

if TYPE_CHECKING:
    import numpy as np

Params = dict[str, "np.ndarray"]


def save_params(params: Mapping[str, np.ndarray], path: Path) -> None:
    """Write weights atomically (temp file then rename), so a reader never sees half a file."""
    import numpy as np
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in params.items()}, str(tmp))
    os.replace(tmp, path)


MAX_HEADER_BYTES = 100 * 2**20


def check_safetensors(path: Path) -> None:
    """Cheap structural check of an upload before anyone loads it (standard library only):
    an 8-byte little-endian header length, a JSON header of tensor entries, data offsets that
    fit the file. Refuses with MODEL_INVALID; never executes or unpickles anything."""
    import json
    import struct

    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ShoalError("MODEL_INVALID", "shorter than a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise ShoalError("MODEL_INVALID", "header length does not fit the file")
        try:
            header = json.loads(f.read(length))
        except ValueError as exc:
            raise ShoalError("MODEL_INVALID", "header is not JSON") from exc
    if not isinstance(header, dict):
        raise ShoalError("MODEL_INVALID", "header is not a JSON object")
    data_size = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (
            isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1] <= data_size
        ):
            raise ShoalError("MODEL_INVALID", f"tensor {name!r} has bad data offsets")


class LazyParams(Mapping[str, "np.ndarray"]):
    """A safetensors file read tensor by tensor on access (``dict(lazy)`` loads it all)."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        check_safetensors(path)
        self.path = path
        try:
            self._file = safe_open(str(path), framework="numpy")
            self._keys = list(self._file.keys())  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise ShoalError("MODEL_INVALID", f"{path.name}: {exc}") from exc

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._keys:
            raise KeyError(key)
        tensor: np.ndarray = self._file.get_tensor(key)  # type: ignore[no-untyped-call]
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def load_params(path: Path) -> Params:
    """Read weights; a file that is not valid safetensors is refused with MODEL_INVALID."""
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except Exception as exc:  # safetensors raises its own SafetensorError and OSError
        raise ShoalError("MODEL_INVALID", f"{path.name}: {exc}") from exc
