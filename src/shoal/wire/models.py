"""Model weights on the wire and on disk: safetensors files of numpy arrays, never pickle.

Loading a safetensors file cannot run code. The format is simple (an 8-byte header length, a
JSON header naming each tensor's dtype, shape and byte range, then the raw bytes), so shoal
reads and writes it itself to stream large models: writing never copies an array into one big
buffer, reading maps the file (copy-on-write) instead of loading it, and the aggregator reads a
tensor in fixed-size chunks. Files stay readable by ``safetensors.numpy/torch.load_file``.
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.errors import ShoalError

if TYPE_CHECKING:
    import numpy as np

Params = dict[str, "np.ndarray"]
MAX_HEADER_BYTES = 100 * 2**20
#: How much of a streamed tensor is read at a time (checking and summing an update): memory
#: beside the running sum. 8 MiB folds a 100 MB update as fast as 32 MiB did (faster, the chunk
#: stays nearer the CPU's caches) and takes 24 MiB less of the server's tree.
CHUNK_BYTES = 8 * 2**20
#: Models and results up to this size travel inside the site's control-channel messages
#: (base64) instead of a separate HTTPS request each way: for a small model a round costs its
#: requests, not its bytes (docs/performance.md, "per-round overhead").
INLINE_BYTES = 256 * 2**10
#: The most a result's num_examples, metrics and meta may take as JSON. They travel beside the
#: weights, in the upload's X-Shoal-Result header or the inline result message, so the server
#: reads headers up to this size; large data belongs in the tensors or in files.
RESULT_HEADER_MAX = 64 * 2**10
#: The most a site's result may take: RESULT_SIZE_FACTOR times its task's model (the same
#: tensors come back; the factor leaves room for a wider dtype and a longer header), or the
#: floor if that is more: metrics-only answers (cross-site evaluation) and statistics (fedstats)
#: answer an empty or tiny model, and in round 0 without an initial_model every site answers an
#: empty model with its own whole initial weights. The server's operator may change the floor
#: (``result_floor_bytes`` in ``local/limits.json``).
RESULT_SIZE_FACTOR = 2
RESULT_FLOOR_BYTES = 64 * 2**20


def result_bound(model_bytes: int, floor: int = RESULT_FLOOR_BYTES) -> int:
    """The largest result a task whose model took ``model_bytes`` may have."""
    return max(RESULT_SIZE_FACTOR * model_bytes, floor)


def result_header_json(header: Mapping[str, Any]) -> str:
    """``header`` as JSON; ValueError past RESULT_HEADER_MAX, saying what to do instead."""
    text = json.dumps(dict(header))
    if len(text) > RESULT_HEADER_MAX:
        raise ValueError(
            f"a result's metrics and meta take {len(text)} bytes as JSON; at most {RESULT_HEADER_MAX} "
            "travel with it (put large data in the model's tensors or in files)"
        )
    return text


#: The name, in a job's folder, of a model file its host is done with and hands back (the server
#: a released result to the workflow, the agent a sent result to the script; decisions/0054): the
#: job writes its next model over it (``save_params(reuse=)``).
SPARE_MODEL = "spare.safetensors"

# safetensors dtype name <-> numpy dtype string
DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}
# bytes per element of each, so checking a header needs no numpy: the server checks every
# result it takes, and importing numpy on its event loop at the first one stalled it ~0.5 s
ITEMSIZE = {name: int(code[-1]) if code[-1].isdigit() else 1 for name, code in DTYPES.items()}


def _safetensors_dtype(arr: np.ndarray) -> str:
    import numpy as np

    for name, code in DTYPES.items():
        if arr.dtype == np.dtype(code):
            return name
    raise ShoalError("MODEL_INVALID", f"dtype {arr.dtype} cannot be stored as safetensors")


def save_params(params: Mapping[str, np.ndarray], path: Path, *, reuse: Path | None = None) -> None:
    """Write weights atomically (temp file, then rename), streaming each array's own buffer.

    ``reuse``: a file this process may overwrite (a spare its host handed back, decisions/0054);
    when it is there, the weights are written over it in place, so the file's pages, still in
    memory, take them instead of pages the kernel must find (on a VM whose freed memory goes back
    to its host, each fresh page is a fault on the host: 0.2-0.5 s per 100 MB against 0.025)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if reuse is not None and _take_spare(reuse, tmp):
        with tmp.open("r+b") as f:
            _write_params(params, f)
            f.truncate()
    else:
        with tmp.open("wb") as f:
            _write_params(params, f)
    os.replace(tmp, path)


def _take_spare(spare: Path, tmp: Path) -> bool:
    """Rename ``spare`` to ``tmp`` when it is a regular file of one link (not a link, nor a
    file that something else also names, which writing over would change too)."""
    try:
        found = os.lstat(spare)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1 or not os.access(spare, os.W_OK):
        return False
    try:
        os.replace(spare, tmp)
    except OSError:
        return False
    return True


def params_bytes(params: Mapping[str, np.ndarray]) -> bytes:
    """The safetensors bytes ``save_params`` would write, in memory (a small model or result)."""
    out = io.BytesIO()
    _write_params(params, out)
    return out.getvalue()


def _write_params(params: Mapping[str, np.ndarray], f: io.BufferedIOBase) -> None:
    """Safetensors into ``f``, streaming each array's own buffer."""
    import numpy as np

    arrays = {name: np.ascontiguousarray(params[name]) for name in sorted(params)}
    header: dict[str, Any] = {}
    offset = 0
    for name, arr in arrays.items():
        header[name] = {
            "dtype": _safetensors_dtype(arr),
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keep the data 8-byte aligned, as the reference writer does
    f.write(struct.pack("<Q", len(raw)))
    f.write(raw)
    for arr in arrays.values():
        if arr.nbytes:
            f.write(arr.reshape(-1).view(np.uint8).data)


#: Where safetensors come from: a file, or the bytes themselves (a small result the server handed
#: to the workflow inside its message, decisions/0044).
Source = Path | bytes


def _open(source: Source) -> io.BufferedIOBase:
    return io.BytesIO(source) if isinstance(source, bytes) else source.open("rb")


def _size(source: Source) -> int:
    return len(source) if isinstance(source, bytes) else source.stat().st_size


def _name(source: Source) -> str:
    return "the result's bytes" if isinstance(source, bytes) else source.name


def read_header(source: Source) -> tuple[dict[str, Any], int]:
    """The validated header and where the data starts. Refuses anything malformed with
    MODEL_INVALID (standard library only; nothing is executed or unpickled)."""
    size = _size(source)
    with _open(source) as f:
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
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    for name, entry in tensors.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (
            isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1] <= data_size
        ):
            raise ShoalError("MODEL_INVALID", f"tensor {name!r} has bad data offsets")
        if entry.get("dtype") not in DTYPES or not isinstance(entry.get("shape"), list):
            raise ShoalError("MODEL_INVALID", f"tensor {name!r} has an unknown dtype or no shape")
        count = 1
        for dim in entry["shape"]:
            if not isinstance(dim, int) or dim < 0:
                raise ShoalError("MODEL_INVALID", f"tensor {name!r} has a bad shape")
            count *= dim
        if count * ITEMSIZE[entry["dtype"]] != offsets[1] - offsets[0]:
            raise ShoalError("MODEL_INVALID", f"tensor {name!r}: shape and byte range disagree")
    return tensors, 8 + length


def check_safetensors(source: Source) -> None:
    """Cheap structural check of an upload before anyone loads it."""
    read_header(source)


#: Looks at values a ``LazyParams`` read (a tensor's name, then the whole tensor or one chunk of
#: it) before its reader gets them, and raises to refuse them.
Inspect = Callable[[str, "np.ndarray"], None]


def holds(buffer: np.ndarray, shape: tuple[int, ...], dtype: Any) -> bool:
    """Whether ``buffer`` can take a tensor of ``shape`` and ``dtype`` in place: the same
    shape and dtype, one contiguous block, writable (decisions/0054)."""
    return (
        buffer.shape == shape
        and buffer.dtype == dtype
        and bool(buffer.flags.c_contiguous)
        and bool(buffer.flags.writeable)
    )


class LazyParams(Mapping[str, "np.ndarray"]):
    """Safetensors (a file, or bytes in memory) whose tensors are read on access, or chunk by
    chunk (``chunks``): either way a tensor read is a copy the caller owns and may change.

    ``inspect``, if given, sees every tensor or chunk as it is read and before the reader does:
    a check folded into the reader's own pass (the server's update checks, folded into FedAvg's
    sum) instead of a pass of its own over the whole file."""

    def __init__(self, source: Source, inspect: Inspect | None = None) -> None:
        self.source = source
        self.inspect = inspect
        self._tensors, self._data_start = read_header(source)

    def _spec(self, key: str) -> tuple[Any, list[int], int, int]:
        import numpy as np

        entry = self._tensors[key]
        begin, end = entry["data_offsets"]
        return np.dtype(DTYPES[entry["dtype"]]), entry["shape"], self._data_start + begin, end - begin

    def __getitem__(self, key: str) -> np.ndarray:
        return self.read(key)

    def read(self, key: str, out: np.ndarray | None = None) -> np.ndarray:
        """The tensor ``key``, read into ``out`` when given (an array of its shape and dtype
        that the caller is done with: its memory is reused, decisions/0054), else a new one."""
        import numpy as np

        dtype, shape, start, nbytes = self._spec(key)
        if out is None:
            out = np.empty(shape, dtype=dtype)
        elif not holds(out, tuple(shape), dtype):
            raise ValueError(f"tensor {key!r}: a buffer of {out.shape} {out.dtype} cannot take it")
        with _open(self.source) as f:
            f.seek(start)
            if nbytes and f.readinto(out.reshape(-1).view(np.uint8).data) != nbytes:
                raise ShoalError("MODEL_INVALID", f"{_name(self.source)}: tensor {key!r} is cut short")
        if self.inspect is not None:
            self.inspect(key, out)
        return out

    def shape(self, key: str) -> tuple[tuple[int, ...], Any]:
        dtype, shape, _, _ = self._spec(key)
        return tuple(shape), dtype

    def chunks(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, np.ndarray]]:
        """(first element index, flat chunk) pairs, reusing one buffer: memory stays at one chunk."""
        import numpy as np

        dtype, _, start, nbytes = self._spec(key)
        per = max(1, chunk_bytes // dtype.itemsize)
        buffer = np.empty(per, dtype=dtype)
        done = 0
        with _open(self.source) as f:
            f.seek(start)
            while done < nbytes:
                take = min(per * dtype.itemsize, nbytes - done)
                view = buffer[: take // dtype.itemsize]
                if f.readinto(view.view(np.uint8).data) != take:
                    raise ShoalError("MODEL_INVALID", f"{_name(self.source)}: tensor {key!r} is cut short")
                if self.inspect is not None:
                    self.inspect(key, view)
                yield done // dtype.itemsize, view
                done += take

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def load_params(path: Path) -> Params:
    """Map the file's tensors into memory copy-on-write: nothing is read until it is used, and
    changing an array in place never writes back to the file."""
    import numpy as np

    tensors, data_start = read_header(path)
    out: Params = {}
    for name, entry in tensors.items():
        begin, end = entry["data_offsets"]
        dtype = np.dtype(DTYPES[entry["dtype"]])
        if end == begin:
            out[name] = np.zeros(entry["shape"], dtype=dtype)
        else:
            out[name] = np.memmap(
                path, dtype=dtype, mode="c", offset=data_start + begin, shape=tuple(entry["shape"])
            )
    return out
