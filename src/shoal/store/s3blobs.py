"""The blob store in an S3-compatible bucket (``SHOAL_BLOBS_URL=s3://bucket/prefix``).

Objects are keyed ``prefix/ab/cdef...`` by the SHA-256 of their content, as the folder store
names its files. The name is only known once the content has been read, so a write spools to a
local temporary file while hashing (bounded by ``max_bytes``), then uploads it under its final
key with boto3's transfer manager: multipart above ``multipart_threshold``, so a large object is
sent part by part from the file and never sits whole in memory. An S3 PUT, like the completion
of a multipart upload, is atomic: a reader never sees a partial object under a valid name.

Connection settings are the AWS SDKs' usual environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``), read by boto3 itself. Those
credentials must never reach a log or an error: botocore's own loggers are held at WARNING
(their DEBUG lines carry signed request headers), and every failure is re-raised as a
BLOB_STORE_UNAVAILABLE naming the operation, the key and the service's error code only, with
any credential value that might still be in it blanked.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

from shoal import settings
from shoal.errors import ShoalError
from shoal.store.blobs import _CHUNK, _check_sha, spool_hashed

if TYPE_CHECKING:
    from shoal.store.jobfiles import JobFiles

#: S3's own bucket naming rule (3-63 of lowercase letters, digits, dots and hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^[A-Za-z0-9._/-]{0,512}$")
#: Loggers that could print a signed request (Authorization carries the access key id).
_QUIET_LOGGERS = ("boto3", "botocore", "s3transfer", "urllib3")
_SECRET_ENV = (settings.AWS_ACCESS_KEY_ID, settings.AWS_SECRET_ACCESS_KEY, settings.AWS_SESSION_TOKEN)
#: Part size and the size from which uploads go multipart (S3's smallest part is 5 MiB).
MULTIPART_BYTES = 8 << 20
#: Operations where "not there" means the blob is absent (FileNotFoundError), not a failure.
_READS = ("head_object", "get_object")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without surrounding slashes); BLOB_STORE_CONFIG
    for anything else. The URL holds no credentials (those come from the AWS_* variables), and
    the error never repeats the value: an operator who wrote ``s3://KEY:SECRET@bucket`` must not
    find the secret in a log."""
    if not url.startswith("s3://"):
        raise ShoalError("BLOB_STORE_CONFIG", "SHOAL_BLOBS_URL must start with s3://")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET.fullmatch(bucket):
        raise ShoalError(
            "BLOB_STORE_CONFIG",
            "SHOAL_BLOBS_URL: the bucket name must be 3-63 lowercase letters, digits, dots and "
            "hyphens (credentials go in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, never the URL)",
        )
    if not _PREFIX.fullmatch(prefix) or ".." in prefix.split("/") or "//" in prefix:
        raise ShoalError(
            "BLOB_STORE_CONFIG",
            "SHOAL_BLOBS_URL: the prefix may hold letters, digits, '.', '_', '-' and single '/' "
            "between parts, and no '..'",
        )
    return bucket, prefix


def _redact(text: str) -> str:
    """``text`` with every credential value of this process's environment blanked."""
    for name in _SECRET_ENV:
        value = settings.text(name)
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


class S3BlobStore:
    """Blobs as objects ``prefix/ab/cdef...`` in one bucket; see the module's docstring."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        spool: Path,
        multipart_threshold: int = MULTIPART_BYTES,
        check: bool = True,
    ) -> None:
        try:
            import boto3
            from boto3.s3.transfer import TransferConfig
            from botocore.config import Config
        except ImportError as exc:
            raise ShoalError(
                "BLOB_STORE_CONFIG",
                "SHOAL_BLOBS_URL names a bucket but boto3 is not installed",
                hint="Install the extra: pip install 'shoal[s3]'.",
            ) from exc
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        self.bucket = bucket
        self.prefix = prefix
        self.spool = Path(spool)
        self.spool.mkdir(parents=True, exist_ok=True)
        for stale in self.spool.glob("blob-*"):  # left by a process that died mid-transfer
            with contextlib.suppress(OSError):
                stale.unlink()
        region = (
            settings.text(settings.AWS_REGION) or settings.text(settings.AWS_DEFAULT_REGION) or "us-east-1"
        )
        self._client: Any = boto3.session.Session().client(
            "s3",
            region_name=region,
            endpoint_url=settings.text(settings.AWS_ENDPOINT_URL) or None,
            config=Config(retries={"max_attempts": 4, "mode": "standard"}, connect_timeout=10),
        )
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=max(multipart_threshold, 5 << 20),
            max_concurrency=2,
        )
        if check:
            self._call("head_bucket", "", Bucket=bucket)

    def __repr__(self) -> str:
        return f"S3BlobStore(s3://{self.bucket}/{self.prefix})"

    # --- naming and errors ---------------------------------------------------------------

    def key(self, sha: str) -> str:
        """The object key of blob ``sha`` (ValueError for anything but a SHA-256 hex id)."""
        _check_sha(sha)
        rel = f"{sha[:2]}/{sha[2:]}"
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _fail(self, operation: str, key: str, exc: BaseException) -> NoReturn:
        """BLOB_STORE_UNAVAILABLE with the service's error code, never its whole answer."""
        code = ""
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
        what = code or type(exc).__name__
        where = f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"
        raise ShoalError("BLOB_STORE_UNAVAILABLE", _redact(f"{operation} {where}: {what}")) from None

    @staticmethod
    def _missing(exc: BaseException) -> bool:
        """The object is not there (a HEAD's bare 404, a GET's NoSuchKey); a missing bucket
        (NoSuchBucket, also a 404) is a broken store, not a missing blob."""
        response = getattr(exc, "response", None)
        if not isinstance(response, dict):
            return False
        return str(response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NotFound")

    def _call(self, operation: str, key: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, operation)(**kwargs)
        except Exception as exc:
            if operation in _READS and self._missing(exc):
                raise FileNotFoundError(f"no blob at s3://{self.bucket}/{key}") from None
            self._fail(operation, key, exc)

    # --- the Blobs interface ---------------------------------------------------------------

    def exists(self, sha: str) -> bool:
        try:
            self._call("head_object", self.key(sha), Bucket=self.bucket, Key=self.key(sha))
        except FileNotFoundError:
            return False
        return True

    def size(self, sha: str) -> int:
        head = self._call("head_object", self.key(sha), Bucket=self.bucket, Key=self.key(sha))
        return int(head["ContentLength"])

    def put_stream(self, stream: BinaryIO, *, max_bytes: int | None = None) -> str:
        """Spool ``stream`` to a local file while hashing, then upload it under its SHA-256."""
        tmp, sha = spool_hashed(stream, self.spool, max_bytes, durable=False)
        try:
            self._upload(tmp, sha)
            return sha
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def put_file(self, src: Path) -> str:
        """Upload ``src`` under its SHA-256 (read twice: hashed first, so a blob the bucket
        already holds is not sent again)."""
        digest = hashlib.sha256()
        with open(src, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        sha = digest.hexdigest()
        self._upload(Path(src), sha)
        return sha

    def take_file(self, src: Path) -> str:
        """``put_file``, then ``src`` goes: a bucket cannot take a local file but by upload."""
        try:
            return self.put_file(src)
        finally:
            with contextlib.suppress(FileNotFoundError):
                Path(src).unlink()

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self.exists(sha):
            key = self.key(sha)
            self._call("put_object", key, Bucket=self.bucket, Key=key, Body=data)
        return sha

    def _upload(self, path: Path, sha: str) -> None:
        if self.exists(sha):
            return
        key = self.key(sha)
        try:
            self._client.upload_file(str(path), self.bucket, key, Config=self._transfer)
        except Exception as exc:
            self._fail("upload", key, exc)

    def open(self, sha: str, start: int = 0) -> BinaryIO:
        """The object's body as a stream (a ranged GET from ``start``): read it in chunks."""
        key = self.key(sha)
        extra = {"Range": f"bytes={start}-"} if start else {}
        body: BinaryIO = self._call("get_object", key, Bucket=self.bucket, Key=key, **extra)["Body"]
        return body

    @contextlib.contextmanager
    def local_file(self, sha: str) -> Iterator[Path]:
        """A temporary local copy, downloaded in ranged parts straight to disk, removed after."""
        key = self.key(sha)
        fd, tmp_name = tempfile.mkstemp(dir=self.spool, prefix="blob-")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            try:
                self._client.download_file(self.bucket, key, str(tmp), Config=self._transfer)
            except Exception as exc:
                if self._missing(exc):
                    raise FileNotFoundError(f"no blob at s3://{self.bucket}/{key}") from None
                self._fail("download", key, exc)
            yield tmp
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def total_bytes(self) -> int:
        """Bytes of the blobs under the prefix (one listing: pages of 1,000 objects); finished
        jobs' files under ``prefix/jobs/`` are not blobs and not counted, as the folder store
        does not count the job folders."""
        start = f"{self.prefix}/" if self.prefix else ""
        total = 0
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start)
            for page in pages:
                for obj in page.get("Contents", []):
                    if not str(obj["Key"]).startswith(f"{start}jobs/"):
                        total += int(obj["Size"])
        except Exception as exc:
            self._fail("list", start, exc)
        return total

    def delete(self, sha: str) -> None:
        """Remove a blob; S3 answers a delete of a missing key with success, as we want."""
        key = self.key(sha)
        self._call("delete_object", key, Bucket=self.bucket, Key=key)

    def job_files(self, jobs_root: Path) -> JobFiles:
        """Finished jobs' files in this bucket, under ``prefix/jobs/`` (shoal.store.s3jobfiles)."""
        from shoal.store.s3jobfiles import S3JobFiles

        return S3JobFiles(self, jobs_root)
