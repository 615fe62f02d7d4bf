"""A finished job's files in the bucket: ``prefix/jobs/<id>/<name>`` (SHOAL_BLOBS_URL).

A running job's files are on local disk (see shoal.store.jobfiles for why); ``keep`` uploads
its ``workspace/`` once it has settled, each file from disk with the bucket's transfer manager
(multipart above the part size: a 1 GB model goes up 8 MiB at a time), then removes the local
copy. Readers look on local disk first, then in the bucket: a job still running, or one whose
upload failed (its files stay, and a notice says so), is served from disk; a kept job from
the bucket, by ranged streaming GETs. Names are the job's own file names, percent-encoded
into keys, so a workflow's odd file name cannot reach another job's keys.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote

from shoal.sandbox.files import remove_tree
from shoal.store.jobfiles import JobFolder, check_name, walk_files
from shoal.store.s3blobs import S3BlobStore


class S3JobFiles:
    """Job files in the bucket of ``blobs``, with its client, errors and part size."""

    def __init__(self, blobs: S3BlobStore, jobs_root: Path) -> None:
        self.s3 = blobs
        self.disk = JobFolder(jobs_root)

    def _job_prefix(self, job_id: int) -> str:
        rel = f"jobs/{int(job_id)}/"
        return f"{self.s3.prefix}/{rel}" if self.s3.prefix else rel

    def key(self, job_id: int, name: str) -> str:
        return self._job_prefix(job_id) + quote(check_name(name), safe="/-._~")

    def local(self, job_id: int) -> Path:
        return self.disk.local(job_id)

    def keep(self, job_id: int) -> None:
        """Upload ``workspace/`` (every regular file, no link followed), then drop the local copy.
        Each upload is atomic (S3 PUT or multipart completion); a failure leaves every local
        file in place and raises BLOB_STORE_UNAVAILABLE."""
        root = self.local(job_id)
        for name, path in walk_files(root / "workspace"):
            self._upload(path, self.key(job_id, f"workspace/{name}"))
        remove_tree(root / "workspace")

    def left_behind(self) -> list[int]:
        root = self.disk.jobs_root
        if not root.is_dir():
            return []
        return sorted(int(d.name) for d in root.iterdir() if d.name.isdigit() and (d / "workspace").is_dir())

    def _upload(self, path: Path, key: str) -> None:
        try:
            self.s3._client.upload_file(str(path), self.s3.bucket, key, Config=self.s3._transfer)
        except Exception as exc:
            self.s3._fail("upload", key, exc)

    def put_file(self, job_id: int, name: str, src: Path) -> None:
        key = self.key(job_id, name)
        try:
            self._upload(src, key)
        finally:
            with contextlib.suppress(FileNotFoundError):
                src.unlink()

    def _listed(self, job_id: int) -> dict[str, tuple[str, int]]:
        """Object key -> (file name, size) of every object of the job."""
        start = self._job_prefix(job_id)
        found: dict[str, tuple[str, int]] = {}
        try:
            lister = self.s3._client.get_paginator("list_objects_v2")
            pages = lister.paginate(Bucket=self.s3.bucket, Prefix=start)
            for page in pages:
                for obj in page.get("Contents", []):
                    key = str(obj["Key"])
                    found[key] = (unquote(key[len(start) :]), int(obj["Size"]))
        except Exception as exc:
            self.s3._fail("list", start, exc)
        return found

    def list(self, job_id: int, under: str) -> list[tuple[str, int]]:
        found = dict(entry for entry in self._listed(job_id).values() if entry[0].startswith(under))
        found.update(self.disk.list(job_id, under))  # what is on disk is the newer
        return sorted(found.items())

    def size(self, job_id: int, name: str) -> int:
        with contextlib.suppress(FileNotFoundError):
            return self.disk.size(job_id, name)
        key = self.key(job_id, name)
        return int(self.s3._call("head_object", key, Bucket=self.s3.bucket, Key=key)["ContentLength"])

    def open(self, job_id: int, name: str, start: int = 0) -> BinaryIO:
        with contextlib.suppress(FileNotFoundError):
            return self.disk.open(job_id, name, start)
        key = self.key(job_id, name)
        extra = {"Range": f"bytes={start}-"} if start else {}
        body: BinaryIO = self.s3._call("get_object", key, Bucket=self.s3.bucket, Key=key, **extra)["Body"]
        return body

    def scratch(self, job_id: int) -> Path:
        return self.s3.spool

    def delete(self, job_id: int) -> None:
        keys = sorted(self._listed(job_id))
        for at in range(0, len(keys), 1000):  # S3's most keys in one DeleteObjects
            batch = [{"Key": key} for key in keys[at : at + 1000]]
            answer = self.s3._call(
                "delete_objects", self._job_prefix(job_id), Bucket=self.s3.bucket, Delete={"Objects": batch}
            )
            if answer.get("Errors"):
                failed = answer["Errors"][0]
                self.s3._fail("delete", str(failed.get("Key", "")), _Coded(str(failed.get("Code", ""))))
        remove_tree(self.local(job_id))


class _Coded(Exception):
    """A per-key failure of DeleteObjects, in the form ``S3BlobStore._fail`` reads a code from."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.response = {"Error": {"Code": code}}
