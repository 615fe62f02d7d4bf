"""shoal's own safetensors reader and writer agree with the reference implementation."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from shoal.errors import ShoalError
from shoal.wire.models import LazyParams, check_safetensors, load_params, params_bytes, save_params

PARAMS: dict[str, np.ndarray] = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
    "f64": np.linspace(0, 1, 7),
    "i64": np.array([1, -2, 3], dtype=np.int64),
    "u8": np.arange(5, dtype=np.uint8),
    "empty": np.zeros((0, 2), dtype=np.float32),
    "scalar": np.array(3.5, dtype=np.float32),
}


def test_reference_reads_what_shoal_writes(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_params(PARAMS, path)
    loaded = load_file(str(path))
    assert set(loaded) == set(PARAMS)
    for name, value in PARAMS.items():
        np.testing.assert_array_equal(loaded[name], value)
        assert loaded[name].dtype == value.dtype


def test_shoal_reads_what_the_reference_writes(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file(PARAMS, str(path))
    for params in (load_params(path), dict(LazyParams(path))):
        for name, value in PARAMS.items():
            np.testing.assert_array_equal(params[name], value)


def test_loaded_arrays_are_copy_on_write(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_params({"w": np.zeros(4, dtype=np.float32)}, path)
    params = load_params(path)
    params["w"] += 1
    assert load_file(str(path))["w"].tolist() == [0, 0, 0, 0]


def test_chunks_cover_the_tensor(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    value = np.arange(1000, dtype=np.float32)
    save_params({"w": value}, path)
    lazy = LazyParams(path)
    got = np.empty_like(value)
    for start, chunk in lazy.chunks("w", chunk_bytes=64):
        got[start : start + chunk.size] = chunk
    np.testing.assert_array_equal(got, value)
    assert lazy.shape("w") == ((1000,), np.dtype(np.float32))


def test_safetensors_in_memory_are_the_file_and_read_as_it_is(tmp_path: Path) -> None:
    """A small result reaches the workflow as bytes (decisions/0044): the same tensors as from
    its file, each read a copy the aggregator may scale in place, the same checks."""
    path = tmp_path / "m.safetensors"
    save_params(PARAMS, path)
    data = params_bytes(PARAMS)
    assert data == path.read_bytes()
    lazy, from_file = LazyParams(data), LazyParams(path)
    for name, value in PARAMS.items():
        np.testing.assert_array_equal(lazy[name], value)
        assert lazy.shape(name) == from_file.shape(name)
    got = np.empty(12, dtype=np.float32)
    for start, chunk in lazy.chunks("f32", chunk_bytes=16):
        chunk *= 2  # the aggregator scales each chunk in place
        got[start : start + chunk.size] = chunk
    np.testing.assert_array_equal(got, PARAMS["f32"].reshape(-1) * 2)
    np.testing.assert_array_equal(lazy["f32"], PARAMS["f32"])  # the bytes did not change
    check_safetensors(data)
    for bad in (data[:20], b"\xff" * 8 + b"not a safetensors file", data[: len(data) - 4]):
        with pytest.raises(ShoalError) as err:
            check_safetensors(bad)
        assert err.value.code == "MODEL_INVALID"


def test_header_that_lies_about_sizes_is_refused(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [10], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(ShoalError) as err:
        load_params(path)
    assert err.value.code == "MODEL_INVALID"


def test_itemsizes_agree_with_numpy() -> None:
    from shoal.wire.models import DTYPES, ITEMSIZE

    assert ITEMSIZE == {name: np.dtype(code).itemsize for name, code in DTYPES.items()}


def test_checking_a_result_does_not_import_numpy(tmp_path: Path) -> None:
    """The server checks every result on its event loop: numpy's import there (~0.5 s on a busy
    machine, at the first result a server takes) stalled every channel (issue 19)."""
    import subprocess
    import sys

    path = tmp_path / "m.safetensors"
    save_params(PARAMS, path)
    code = (
        "import sys; from pathlib import Path; from shoal.wire.models import check_safetensors; "
        f"check_safetensors(Path({str(path)!r})); print('numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- writing over a spare file (decisions/0054) ------------------------------------------------


def test_save_params_writes_over_a_spare_in_place(tmp_path: Path) -> None:
    """The spare's inode (and so its pages) takes the model; a longer spare is cut to size."""
    spare = tmp_path / "spare.safetensors"
    spare.write_bytes(b"\xff" * 100_000)
    inode = spare.stat().st_ino
    params: dict[str, np.ndarray] = {
        "w": np.arange(1000, dtype=np.float32),
        "b": np.ones(3, dtype=np.float64),
    }
    target = tmp_path / "checkpoint-0.safetensors"
    save_params(params, target, reuse=spare)
    assert not spare.exists()
    assert target.stat().st_ino == inode
    assert target.read_bytes() == params_bytes(params)  # byte for byte what a new file would hold


def test_save_params_does_not_write_over_a_link_or_a_file_named_twice(tmp_path: Path) -> None:
    """A spare that is a link, or a file with another name (writing over it would change that
    one too), is left as it is: the model goes to a new file."""
    other = tmp_path / "other.bin"
    other.write_bytes(b"keep me")
    params = {"w": np.arange(10, dtype=np.float32)}
    link = tmp_path / "link.safetensors"
    link.symlink_to(other)
    save_params(params, tmp_path / "a.safetensors", reuse=link)
    twice = tmp_path / "twice.safetensors"
    os.link(other, twice)
    save_params(params, tmp_path / "b.safetensors", reuse=twice)
    assert other.read_bytes() == b"keep me" and link.is_symlink() and twice.exists()
    for name in ("a", "b"):
        assert (tmp_path / f"{name}.safetensors").read_bytes() == params_bytes(params)
    save_params(params, tmp_path / "c.safetensors", reuse=tmp_path / "absent")  # no spare: a new file
    assert (tmp_path / "c.safetensors").read_bytes() == params_bytes(params)


def test_lazy_read_into_a_buffer_takes_its_memory_or_refuses_a_wrong_one(tmp_path: Path) -> None:
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    save_params({"w": values}, tmp_path / "m.safetensors")
    lazy = LazyParams(tmp_path / "m.safetensors")
    buffer = np.empty((3, 4), dtype=np.float32)
    got = lazy.read("w", buffer)
    assert got is buffer and np.array_equal(buffer, values)
    for wrong in (np.empty((4, 3), np.float32), np.empty((3, 4), np.float64), np.empty((4, 3), np.float32).T):
        with pytest.raises(ValueError, match="cannot take it"):
            lazy.read("w", wrong)
