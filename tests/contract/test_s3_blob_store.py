"""What the bucket store promises beyond the blob contract: multipart uploads for large
objects, its configuration refused clearly, and credentials that never reach a log or an error.
Against a real S3-compatible server (moto, a process of its own)."""

from __future__ import annotations

import hashlib
import io
import logging
import traceback
from pathlib import Path

import pytest

from shoal.errors import ShoalError
from shoal.store.blobs import BlobStore, open_blobs
from shoal.store.s3blobs import S3BlobStore, parse_s3_url
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server


@pytest.fixture
def bucket_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    bucket = s3.new_bucket()
    for name, value in s3.env(bucket).items():
        monkeypatch.setenv(name, value)
    return bucket


def test_large_objects_go_up_in_parts_and_come_back_whole(
    s3: S3Server, bucket_env: str, tmp_path: Path
) -> None:
    store = S3BlobStore(bucket_env, "deep/prefix", spool=tmp_path / "spool", multipart_threshold=5 << 20)
    src = tmp_path / "model.bin"
    data = hashlib.sha256(b"seed").digest() * 400_000  # 12.8 MB: three 5 MiB parts
    src.write_bytes(data)
    sha = store.put_file(src)
    key = f"deep/prefix/{sha[:2]}/{sha[2:]}"
    assert s3.keys(bucket_env) == [key]
    etag = s3.client().head_object(Bucket=bucket_env, Key=key)["ETag"].strip('"')
    assert etag.endswith("-3"), etag  # a multipart upload's ETag counts its parts
    assert S3BlobStore(bucket_env, "deep/prefix", spool=tmp_path / "other").exists(sha)  # a new instance
    digest = hashlib.sha256()
    with store.open(sha) as body:
        while chunk := body.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == sha


def test_open_blobs_picks_the_store_from_the_environment(
    bucket_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_blobs(tmp_path)
    assert isinstance(store, S3BlobStore) and (store.bucket, store.prefix) == (bucket_env, "blobs")
    assert not (tmp_path / "blobs").exists()
    monkeypatch.delenv("SHOAL_BLOBS_URL")
    assert isinstance(open_blobs(tmp_path), BlobStore)


@pytest.mark.parametrize(
    "url",
    [
        "file:///srv/blobs",
        "s3://",
        "s3://Bad_Bucket/x",
        "s3://ok-bucket/../up",
        "s3://ok-bucket/a b",
        "blobs",
    ],
)
def test_a_bad_blobs_url_is_refused(url: str) -> None:
    with pytest.raises(ShoalError) as caught:
        parse_s3_url(url)
    assert caught.value.code == "BLOB_STORE_CONFIG"


@pytest.mark.parametrize(
    "url", [f"s3://{ACCESS_KEY}:{SECRET_KEY}@bucket/x", f"s3://bucket/{SECRET_KEY}:@x", f"{SECRET_KEY}://b"]
)
def test_a_url_with_credentials_in_it_is_refused_without_repeating_them(url: str) -> None:
    with pytest.raises(ShoalError) as caught:
        parse_s3_url(url)
    said = str(caught.value) + repr(caught.value) + caught.value.hint
    assert caught.value.code == "BLOB_STORE_CONFIG" and SECRET_KEY not in said and ACCESS_KEY not in said


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://my.bucket-1") == ("my.bucket-1", "")
    assert parse_s3_url("s3://b42/shoal/prod/") == ("b42", "shoal/prod")


def _failures(s3: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every way the store can fail, as text: errors, their tracebacks."""
    seen: list[str] = []

    def record(call: object) -> None:
        with pytest.raises(ShoalError) as caught:
            call()  # type: ignore[operator]
        assert caught.value.code == "BLOB_STORE_UNAVAILABLE"
        seen.append(str(caught.value) + repr(caught.value))
        seen.append("".join(traceback.format_exception(caught.value)))

    record(lambda: S3BlobStore("no-such-bucket-here", "", spool=tmp_path / "s1"))
    store = S3BlobStore(bucket, "p", spool=tmp_path / "s2")
    s3.client().delete_bucket(Bucket=bucket)  # the bucket vanishes under a running store
    record(lambda: store.put_bytes(b"x"))
    record(lambda: store.put_stream(io.BytesIO(b"y" * 100)))
    record(store.total_bytes)
    files = store.job_files(tmp_path / "jobs")
    kept = files.local(5) / "workspace" / "m.safetensors"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"w" * 100)
    record(lambda: files.keep(5))
    assert kept.read_bytes() == b"w" * 100  # a failed upload leaves the job's files on disk
    record(lambda: files.list(5, "workspace/"))
    record(lambda: files.open(5, "result.zip"))
    record(lambda: files.delete(5))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    record(lambda: S3BlobStore(bucket, "", spool=tmp_path / "s3"))
    return seen


def test_credentials_never_reach_a_log_or_an_error(
    s3: S3Server, bucket_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even with the root logger at DEBUG (botocore's DEBUG lines carry signed headers)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        store = S3BlobStore(bucket_env, "p", spool=tmp_path / "s0", multipart_threshold=5 << 20)
        sha = store.put_bytes(b"a" * (6 << 20))
        with store.open(sha) as body:
            body.read()
        store.delete(sha)
        texts = _failures(s3, bucket_env, tmp_path, monkeypatch)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    logged = stream.getvalue()
    assert "s3://" in "".join(texts)  # the errors do say where
    for text in [logged, *texts]:
        assert ACCESS_KEY not in text and SECRET_KEY not in text


def test_a_large_blob_never_sits_whole_in_memory(bucket_env: str, tmp_path: Path) -> None:
    """Up by parts from a file, down by chunks from a stream: peak allocation stays well under
    the blob's size (the transfer manager holds a few 5 MiB parts at most)."""
    import tracemalloc

    store = S3BlobStore(bucket_env, "p", spool=tmp_path / "spool", multipart_threshold=5 << 20)
    size = 48 << 20
    src = tmp_path / "big.bin"
    with src.open("wb") as f:
        for i in range(size >> 20):
            f.write(hashlib.sha256(str(i).encode()).digest() * (1 << 15))
    tracemalloc.start()
    try:
        with src.open("rb") as stream:
            sha = store.put_stream(stream)
        with store.open(sha) as body:
            got = 0
            while chunk := body.read(1 << 20):
                got += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == size
    assert peak < size // 4, f"peak {peak} bytes for a {size}-byte blob"
