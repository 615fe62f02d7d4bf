"""Submit on the server side, on real stores: a refused submit leaves the server as it was,
and its errors describe the upload, never the server's own folders."""

from __future__ import annotations

import dataclasses
import errno
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import EXAMPLES

from shoal.errors import ShoalError
from shoal.server.submission import PreparedJob, prepare_submission, release_blob, store_submission
from shoal.store.base import Submitter
from shoal.store.blobs import BlobStore
from shoal.store.sqlite import SqliteJobStore
from shoal.wire.archive import zip_folder

SITES = ["site-1", "site-2"]
ADMIN = Submitter("admin@x.org", "x.org", "project_admin")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteJobStore]:
    db = SqliteJobStore(tmp_path / "server" / "store.db")
    yield db
    db.close()


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "server" / "blobs")


def blob_files(blobs: BlobStore) -> list[str]:
    return sorted(p.relative_to(blobs.root).as_posix() for p in blobs.root.glob("??/*"))


def prepared(tmp_path: Path, name: str, client_text: str = "") -> PreparedJob:
    """hello-numpy as uploaded (a zip of the folder), validated as the server does."""
    job = tmp_path / name / "job"
    shutil.copytree(EXAMPLES / "hello-numpy", job, ignore=shutil.ignore_patterns("__pycache__"))
    if client_text:
        (job / "app" / "custom" / "client.py").write_text(client_text)
    upload = tmp_path / name / "upload.zip"
    zip_folder(job, upload)
    work = tmp_path / name / "work"
    work.mkdir()
    return prepare_submission(upload, work, SITES)


def submit(store: SqliteJobStore, blobs: BlobStore, job: PreparedJob, token: str | None) -> tuple[str, bool]:
    record, created = store_submission(
        store, blobs, job, study="default", submitter=ADMIN, submit_token=token
    )
    return str(record.job_id), created


def refused(store: SqliteJobStore, blobs: BlobStore, job: PreparedJob, token: str | None) -> str:
    with pytest.raises(ShoalError) as err:
        submit(store, blobs, job, token)
    return str(err.value.code)


def test_refused_submit_tokens_leave_no_blob(tmp_path: Path, store: SqliteJobStore, blobs: BlobStore) -> None:
    first = prepared(tmp_path, "first")
    other = prepared(tmp_path, "other", "print('other content')\n")
    job_id, created = submit(store, blobs, first, "tok")
    assert created and blob_files(blobs) == [f"{first.archive_sha256[:2]}/{first.archive_sha256[2:]}"]
    before = blob_files(blobs)

    assert refused(store, blobs, other, "tok") == "SUBMIT_TOKEN_CONFLICT"
    assert blob_files(blobs) == before

    store.delete_job(int(job_id))  # as the delete route does: the record, then the unshared blob
    blobs.delete(first.archive_sha256)
    assert refused(store, blobs, first, "tok") == "SUBMIT_TOKEN_JOB_DELETED"
    assert blob_files(blobs) == []
    assert list((blobs.root / "tmp").iterdir()) == []


def test_a_refused_submit_keeps_a_blob_that_a_job_already_uses(
    tmp_path: Path, store: SqliteJobStore, blobs: BlobStore
) -> None:
    """Blobs are content-addressed: the refused archive may be another job's, which keeps it."""
    first = prepared(tmp_path, "first")
    shared = prepared(tmp_path, "shared", "print('shared content')\n")
    submit(store, blobs, first, "tok")
    owner_id, _ = submit(store, blobs, shared, None)
    before = blob_files(blobs)
    assert refused(store, blobs, shared, "tok") == "SUBMIT_TOKEN_CONFLICT"
    assert blob_files(blobs) == before
    owner = store.get_job(int(owner_id))
    assert owner is not None and blobs.exists(owner.content_sha256)


def test_a_record_the_store_cannot_write_takes_its_blob_back(
    tmp_path: Path, store: SqliteJobStore, blobs: BlobStore
) -> None:
    """Defence in depth: meta.json validation refuses NaN first; if a value the store cannot
    write ever got through, the blob would still not be left behind."""
    job = prepared(tmp_path, "nan")
    bad = dataclasses.replace(
        job, jobdef=dataclasses.replace(job.jobdef, meta={**job.jobdef.meta, "x": float("nan")})
    )
    with pytest.raises(ValueError):
        submit(store, blobs, bad, None)
    assert blob_files(blobs) == [] and store.list_jobs(study=None) == []


def _zip(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(name, "{}" if name.endswith(".json") else "x")
    return path


@pytest.mark.parametrize(
    ("names", "says"),
    [
        ([], "holds no files"),
        (["app/config/config_fed_server.json", "README.txt"], "'README.txt', 'app/'"),
        (["one/meta.json", "two/meta.json"], "'one/', 'two/'"),
        ([f"f{i}.txt" for i in range(8)], "'f4.txt' and 3 more"),
    ],
)
def test_no_meta_json_is_described_by_the_archive_not_a_server_path(
    tmp_path: Path, names: list[str], says: str
) -> None:
    work = tmp_path / "server" / "tmp" / "request"
    work.mkdir(parents=True)
    upload = _zip(tmp_path / "upload.zip", names)
    with pytest.raises(ShoalError) as err:
        prepare_submission(upload, work, SITES)
    assert err.value.code == "JOB_META_MISSING"
    message = err.value.message
    assert says in message and str(tmp_path) not in message and "extracted" not in message, message


def test_a_deleted_jobs_archive_goes_only_when_no_job_uses_it(
    tmp_path: Path, store: SqliteJobStore, blobs: BlobStore
) -> None:
    """release_blob (after a delete) rechecks under the submit lock: a second job of the same
    archive keeps it, the last one's delete removes it."""
    job = prepared(tmp_path, "a")
    first, _ = submit(store, blobs, job, None)
    second, _ = submit(store, blobs, job, None)
    assert len(blob_files(blobs)) == 1
    store.delete_job(int(first), deleted_by=ADMIN)
    release_blob(store, blobs, job.archive_sha256)
    assert blob_files(blobs)  # the second job still points at it
    store.delete_job(int(second), deleted_by=ADMIN)
    release_blob(store, blobs, job.archive_sha256)
    assert blob_files(blobs) == []


class FullDisk(BlobStore):
    """A blob store on a disk that fills while the archive is copied in."""

    def put_file(self, src: Path) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_disk_that_fills_during_a_submit_is_store_full(tmp_path: Path, store: SqliteJobStore) -> None:
    blobs = FullDisk(tmp_path / "server" / "blobs")
    with pytest.raises(ShoalError) as err:
        submit(store, blobs, prepared(tmp_path, "full"), "t-full")
    assert err.value.code == "STORE_FULL"
    assert store.list_jobs(study="default") == [] and blob_files(blobs) == []
