"""Contract tests for the content-addressed blob store: the SAME tests run against the folder
(the embedded default) and an S3-compatible bucket on a real server (moto, its own process)."""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.store import relayblobs
from shoal.store.blobs import Blobs, BlobStore
from shoal.store.jobfiles import JobFiles
from shoal.store.s3blobs import S3BlobStore
from tests.s3server import S3Server


@pytest.fixture(params=["folder", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Blobs]:
    if request.param == "folder":
        yield BlobStore(tmp_path / "blobs")
        return
    s3: S3Server = request.getfixturevalue("s3")
    bucket = s3.new_bucket()
    for name, value in s3.env(bucket).items():
        monkeypatch.setenv(name, value)
    # 5 MiB parts (S3's smallest) so the 5+ MB tests below go multipart
    yield S3BlobStore(bucket, "blobs", spool=tmp_path / "spool", multipart_threshold=5 << 20)


def read(blobs: Blobs, sha: str, start: int = 0) -> bytes:
    with blobs.open(sha, start) as f:
        out = b""
        while chunk := f.read(1 << 16):
            out += chunk
        return out


def leftovers(blobs: Blobs) -> list[Path]:
    """Temporary files a store left on local disk."""
    folder = blobs.root / "tmp" if isinstance(blobs, BlobStore) else blobs.spool  # type: ignore[attr-defined]
    return list(folder.iterdir())


def test_put_bytes_is_content_addressed(blobs: Blobs) -> None:
    data = b"hello shoal"
    sha = blobs.put_bytes(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert read(blobs, sha) == data
    assert blobs.size(sha) == len(data)
    assert blobs.exists(sha)
    assert blobs.total_bytes() == len(data)


def test_put_file_large_and_idempotent(blobs: Blobs, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    data = bytes(range(256)) * 24_000  # ~6 MB: several copy chunks, two multipart parts
    src.write_bytes(data)
    sha = blobs.put_file(src)
    assert sha == hashlib.sha256(data).hexdigest()
    assert blobs.put_file(src) == sha
    assert blobs.put_bytes(data) == sha
    assert blobs.put_stream(io.BytesIO(data)) == sha
    assert read(blobs, sha) == data
    assert read(blobs, sha, 5_000_000) == data[5_000_000:]  # a resumed download's tail
    with blobs.local_file(sha) as local:
        assert local.read_bytes() == data
    assert blobs.total_bytes() == len(data)  # stored once
    assert leftovers(blobs) == []  # no temp files left behind


def test_put_stream_limit_leaves_nothing(blobs: Blobs) -> None:
    with pytest.raises(ValueError):
        blobs.put_stream(io.BytesIO(b"x" * 1000), max_bytes=100)
    assert leftovers(blobs) == []
    assert not blobs.exists(hashlib.sha256(b"x" * 1000).hexdigest())
    assert blobs.total_bytes() == 0


def test_open_and_delete(blobs: Blobs) -> None:
    sha = blobs.put_bytes(b"abc")
    assert read(blobs, sha) == b"abc"
    blobs.delete(sha)
    assert not blobs.exists(sha)
    blobs.delete(sha)  # deleting twice is fine
    for call in (blobs.open, blobs.size):
        with pytest.raises(FileNotFoundError):
            call(sha)
    with pytest.raises(FileNotFoundError), blobs.local_file(sha):
        pass
    assert leftovers(blobs) == []


def test_empty_blob(blobs: Blobs) -> None:
    sha = blobs.put_bytes(b"")
    assert read(blobs, sha) == b""
    assert blobs.exists(sha)


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
def test_bad_ids_refused_before_touching_disk(blobs: Blobs, bad: str) -> None:
    for call in (blobs.exists, blobs.delete, blobs.open, blobs.size):
        with pytest.raises(ValueError):
            call(bad)
    with pytest.raises(ValueError), blobs.local_file(bad):
        pass


def test_folder_layout(tmp_path: Path) -> None:
    """The folder's own promise: ``root/ab/cdef...``, a read-only file per blob."""
    blobs = BlobStore(tmp_path / "b")
    sha = blobs.put_bytes(b"layout")
    assert blobs.path(sha) == blobs.root / sha[:2] / sha[2:]
    assert blobs.path(sha).read_bytes() == b"layout"


def test_survives_new_instance(tmp_path: Path) -> None:
    sha = BlobStore(tmp_path / "b").put_bytes(b"persist")
    assert BlobStore(tmp_path / "b").exists(sha)


# --- finished jobs' files (shoal.store.jobfiles): the same contract, folder and bucket ---------


def _job_files(blobs: Blobs, root: Path) -> tuple[JobFiles, Path]:
    """The job files beside ``blobs``, and job 7's local folder with a workspace as a settled
    job leaves it: a model past one multipart part, metrics, a site's log, an odd file name."""
    files = blobs.job_files(root)
    ws = files.local(7) / "workspace"
    (ws / "site-1").mkdir(parents=True)
    (ws / "FL_global_model.safetensors").write_bytes(BIG)
    (ws / "metrics_summary.json").write_text('{"rounds": []}')
    (ws / "site-1" / "log.txt").write_text("trained\n")
    (ws / "a b%20é.txt").write_text("odd")
    (ws / "link").symlink_to(ws / "metrics_summary.json")  # a link is never kept or followed
    return files, ws


BIG = bytes(range(256)) * 24_000  # ~6 MB: two multipart parts in the bucket
KEPT = [
    ("workspace/FL_global_model.safetensors", len(BIG)),
    ("workspace/a b%20é.txt", 3),
    ("workspace/metrics_summary.json", 14),
    ("workspace/site-1/log.txt", 8),
]


def _read_job_file(files: JobFiles, job_id: int, name: str, start: int = 0) -> bytes:
    with files.open(job_id, name, start) as f:
        out = b""
        while chunk := f.read(1 << 16):
            out += chunk
        return out


def test_kept_job_files_list_and_stream_back(blobs: Blobs, tmp_path: Path) -> None:
    files, ws = _job_files(blobs, tmp_path / "jobs")
    assert files.list(7, "workspace/") == KEPT  # readable while the job runs: from disk
    moves = not isinstance(blobs, BlobStore)
    assert files.left_behind() == ([7] if moves else [])  # what a restart keeps (the bucket)
    files.keep(7)
    assert files.left_behind() == []
    assert files.list(7, "workspace/") == KEPT
    assert files.list(7, "workspace/site-1/") == [("workspace/site-1/log.txt", 8)]
    assert files.list(8, "workspace/") == []  # another job sees none of them
    assert files.size(7, "workspace/FL_global_model.safetensors") == len(BIG)
    assert _read_job_file(files, 7, "workspace/FL_global_model.safetensors") == BIG
    assert _read_job_file(files, 7, "workspace/FL_global_model.safetensors", 5_000_000) == BIG[5_000_000:]
    assert _read_job_file(files, 7, "workspace/a b%20é.txt") == b"odd"
    if isinstance(blobs, BlobStore):
        assert ws.is_dir()  # the folder is where the folder store keeps them
    else:
        assert not ws.exists()  # uploaded, then gone from the server's disk
    for call in (files.size, files.open):
        with pytest.raises(FileNotFoundError):
            call(7, "workspace/nothing.txt")
    assert blobs.total_bytes() == 0  # a job's files are not blobs: the archive quota ignores them


def test_put_file_then_delete_removes_every_file_of_the_job(blobs: Blobs, tmp_path: Path) -> None:
    files, _ = _job_files(blobs, tmp_path / "jobs")
    files.keep(7)
    other = files.local(8) / "workspace"
    other.mkdir(parents=True)
    (other / "metrics_summary.json").write_text("{}")
    files.keep(8)
    built = files.scratch(7) / "result.tmp"
    built.write_bytes(b"zip")
    files.put_file(7, "result.zip", built)
    assert not built.exists()
    assert _read_job_file(files, 7, "result.zip") == b"zip"
    files.delete(7)
    files.delete(7)  # twice is fine
    assert files.list(7, "") == []
    assert not files.local(7).exists()
    with pytest.raises(FileNotFoundError):
        files.size(7, "result.zip")
    assert files.list(8, "") == [("workspace/metrics_summary.json", 2)]  # only job 7 went


def test_a_file_on_disk_is_newer_than_the_kept_one(blobs: Blobs, tmp_path: Path) -> None:
    """A site's log that arrives after the job was kept (a straggler) is served from disk."""
    files, ws = _job_files(blobs, tmp_path / "jobs")
    files.keep(7)
    log = files.local(7) / "workspace" / "site-1" / "log.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("trained, and said more\n")
    assert ("workspace/site-1/log.txt", 23) in files.list(7, "workspace/")
    assert _read_job_file(files, 7, "workspace/site-1/log.txt") == b"trained, and said more\n"


@pytest.mark.parametrize("bad", ["", "../8/workspace/x", "workspace/../../x", "a//b", "./a", "a\\b", "a\0b"])
def test_bad_job_file_names_refused_before_anything(blobs: Blobs, tmp_path: Path, bad: str) -> None:
    files = blobs.job_files(tmp_path / "jobs")
    for call in (files.size, files.open):
        with pytest.raises(ValueError):
            call(7, bad)
    src = tmp_path / "src"
    src.write_bytes(b"x")
    with pytest.raises(ValueError):
        files.put_file(7, bad, src)


def test_take_file_stores_the_file_and_takes_it_away(blobs: Blobs, tmp_path: Path) -> None:
    """A checkpoint's model is taken, not copied: the folder store renames the very file in
    (same inode), and ``src`` is gone either way, also when the content was already stored."""
    data = bytes(range(256)) * 24_000
    src = tmp_path / "model.safetensors"
    src.write_bytes(data)
    inode = src.stat().st_ino
    sha = blobs.take_file(src)
    assert sha == hashlib.sha256(data).hexdigest()
    assert read(blobs, sha) == data
    assert not src.exists()
    if isinstance(blobs, BlobStore):
        assert blobs.path(sha).stat().st_ino == inode  # moved in: no second copy written
        assert blobs.path(sha).stat().st_mode & 0o777 == 0o444
    again = tmp_path / "again.safetensors"
    again.write_bytes(data)
    assert blobs.take_file(again) == sha
    assert not again.exists()
    assert read(blobs, sha) == data
    assert leftovers(blobs) == []


# --- relay blobs (decisions/0048) ----------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"x", bytes(range(256)) * 3000])
def test_a_relay_blob_gives_back_its_bytes_whole_and_from_any_offset(
    blobs: Blobs, tmp_path: Path, content: bytes
) -> None:
    src = tmp_path / "src"
    src.write_bytes(content)
    blob = relayblobs.put(blobs, src)
    assert relayblobs.size(blobs, blob) == len(content)
    with contextlib.closing(relayblobs.open_at(blobs, blob)) as f:
        assert f.read() == content
    if content:
        start = len(content) // 2 or 0
        with contextlib.closing(relayblobs.open_at(blobs, blob, start)) as f:
            assert f.read() == content[start:]
    relayblobs.fetch(blobs, blob, tmp_path / "dest")
    assert (tmp_path / "dest").read_bytes() == content


def test_dropping_a_relay_blob_never_drops_a_blob_of_the_same_bytes(blobs: Blobs, tmp_path: Path) -> None:
    """A task's model is often the checkpoint a job resumes from, and a site that trained nothing
    sends that same model back: the relayed copies have addresses of their own."""
    src = tmp_path / "model"
    src.write_bytes(b"the checkpoint's bytes")
    kept = blobs.put_file(src)
    first, second = relayblobs.put(blobs, src), relayblobs.put(blobs, src)
    assert len({kept, first, second}) == 3
    relayblobs.drop(blobs, first)
    assert blobs.exists(kept) and blobs.exists(second) and not blobs.exists(first)
    with pytest.raises(FileNotFoundError):
        relayblobs.size(blobs, first)
