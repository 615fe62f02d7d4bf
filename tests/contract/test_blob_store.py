"""Contract tests for the content-addressed blob store."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from shoal.store.blobs import BlobStore


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def test_put_bytes_is_content_addressed(blobs: BlobStore) -> None:
    data = b"hello shoal"
    sha = blobs.put_bytes(data)
    assert sha == hashlib.sha256(data).hexdigest()
    path = blobs.path(sha)
    assert path == blobs.root / sha[:2] / sha[2:]
    assert path.read_bytes() == data
    assert blobs.exists(sha)


def test_put_file_large_and_idempotent(blobs: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    data = bytes(range(256)) * 20_000  # ~5 MB, several copy chunks
    src.write_bytes(data)
    sha = blobs.put_file(src)
    assert sha == hashlib.sha256(data).hexdigest()
    assert blobs.put_file(src) == sha
    assert blobs.put_bytes(data) == sha
    assert blobs.path(sha).read_bytes() == data
    assert list((blobs.root / "tmp").iterdir()) == []  # no temp files left behind


def test_put_stream_limit_leaves_nothing(blobs: BlobStore) -> None:
    with pytest.raises(ValueError):
        blobs.put_stream(io.BytesIO(b"x" * 1000), max_bytes=100)
    assert list((blobs.root / "tmp").iterdir()) == []
    assert not blobs.exists(hashlib.sha256(b"x" * 1000).hexdigest())


def test_open_and_delete(blobs: BlobStore) -> None:
    sha = blobs.put_bytes(b"abc")
    with blobs.open(sha) as f:
        assert f.read() == b"abc"
    blobs.delete(sha)
    assert not blobs.exists(sha)
    blobs.delete(sha)  # deleting twice is fine


def test_empty_blob(blobs: BlobStore) -> None:
    sha = blobs.put_bytes(b"")
    assert blobs.path(sha).read_bytes() == b""


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../" + "a" * 61,
        "A" * 64,
        "a" * 63,
        "a" * 65,
        "g" * 64,
        "/" + "a" * 63,
        "aa/" + "b" * 61,
        "a" * 63 + "\n",
    ],
)
def test_bad_ids_refused_before_touching_disk(blobs: BlobStore, bad: str) -> None:
    for call in (blobs.path, blobs.exists, blobs.delete, blobs.open):
        with pytest.raises(ValueError):
            call(bad)


def test_survives_new_instance(tmp_path: Path) -> None:
    sha = BlobStore(tmp_path / "b").put_bytes(b"persist")
    assert BlobStore(tmp_path / "b").exists(sha)
