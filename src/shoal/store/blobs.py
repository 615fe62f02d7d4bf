"""Content-addressed blob store: large content lives under the name of its SHA-256.

``Blobs`` is the interface the server uses; ``BlobStore`` (a folder beside the job database) is
the embedded default, and ``open_blobs`` picks an S3-compatible bucket instead when
``SHOAL_BLOBS_URL`` says ``s3://bucket/prefix`` (shoal.store.s3blobs, loaded only then).

Job archives, models, logs and workspaces are too big for SQLite rows. Naming a file by its
hash makes writes idempotent (the same content is stored once), lets readers verify what they
read, and means a file, once in place, never changes. Every write goes to a temp file in the
same directory tree, is fsynced, then renamed into place, so a crash never leaves a partial
blob under a valid name.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from shoal.store.jobfiles import JobFiles

from shoal import settings

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def _check_sha(sha: str) -> str:
    """Refuse anything but 64 lowercase hex digits before it becomes part of a path."""
    if not isinstance(sha, str) or not _SHA256_HEX.fullmatch(sha):
        raise ValueError(f"not a SHA-256 blob id: {sha!r}")
    return sha


def _fsync_dir(path: Path) -> None:
    """Make a rename durable: the directory entry must reach disk too (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Blobs(Protocol):
    """What the server needs of a blob store, wherever the bytes live.

    Ids are 64 lowercase hex digits (ValueError otherwise, before anything is touched); a blob
    once stored never changes. Nothing here hands out a whole blob in memory: writes read a
    stream, reads return a stream or a local file, so a 1 GB model never sits in RAM.
    """

    def exists(self, sha: str) -> bool: ...

    def put_stream(self, stream: BinaryIO, *, max_bytes: int | None = None) -> str: ...

    def put_file(self, src: Path) -> str: ...

    def take_file(self, src: Path) -> str:
        """Store the file ``src`` (one the caller owns and gives up: it is gone afterwards, or
        moved into the store) and return its SHA-256 hex: a copy is not made where the store can
        take the file itself (the folder store renames it in)."""
        ...

    def put_bytes(self, data: bytes) -> str: ...

    def open(self, sha: str, start: int = 0) -> BinaryIO:
        """The blob from byte ``start`` on, to read in chunks (FileNotFoundError when absent)."""
        ...

    def size(self, sha: str) -> int:
        """The blob's length in bytes (FileNotFoundError when absent)."""
        ...

    def local_file(self, sha: str) -> contextlib.AbstractContextManager[Path]:
        """A local file holding the blob for the ``with`` block, for readers that must seek
        (zip files); FileNotFoundError when absent. Do not write to it."""
        ...

    def total_bytes(self) -> int: ...

    def delete(self, sha: str) -> None: ...

    def job_files(self, jobs_root: Path) -> JobFiles:
        """Where finished jobs' files are kept beside these blobs (shoal.store.jobfiles): the
        folder ``jobs_root`` for the folder store, the same bucket for the bucket."""
        ...


def open_blobs(workspace: Path, url: str | None = None) -> Blobs:
    """The blob store ``url`` names (by default the server's environment's
    ``SHOAL_BLOBS_URL``): ``s3://bucket/prefix`` for a bucket, empty for the folder
    ``workspace/blobs`` (BLOB_STORE_CONFIG for anything else). The bucket's code, and boto3, are
    imported only when a bucket is asked for: the CLI and the embedded default never load them."""
    url = (settings.text(settings.BLOBS_URL) if url is None else url).strip()
    if not url:
        return BlobStore(workspace / "blobs")
    from shoal.store.s3blobs import S3BlobStore, parse_s3_url

    bucket, prefix = parse_s3_url(url)
    return S3BlobStore(bucket, prefix, spool=workspace / "blobs-spool")


def spool_hashed(stream: BinaryIO, folder: Path, max_bytes: int | None, *, durable: bool) -> tuple[Path, str]:
    """Copy ``stream`` into a new file in ``folder`` while hashing it (the content is read once);
    returns the file and the content's SHA-256 hex. Past ``max_bytes`` the file goes and
    ValueError says why (callers translate it at the edge); ``durable`` fsyncs the file."""
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix="blob-")
    tmp = Path(tmp_name)
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise ValueError(f"blob larger than {max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
            if durable:
                out.flush()
                os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return tmp, digest.hexdigest()


class BlobStore:
    """Files under ``root/ab/cdef...`` named by the SHA-256 of their content (the embedded
    default). ``path`` is this store's own: code that must work with a bucket too uses
    ``open``, ``size`` or ``local_file``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(exist_ok=True)

    def path(self, sha: str) -> Path:
        """Where the blob ``sha`` lives (whether or not it exists)."""
        _check_sha(sha)
        return self.root / sha[:2] / sha[2:]

    def exists(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def put_stream(self, stream: BinaryIO, *, max_bytes: int | None = None) -> str:
        """Store everything read from ``stream``; return its SHA-256 hex.

        Hashes while copying, so the content is read once. ``max_bytes`` stops an oversized
        upload without storing it (ValueError); callers translate that at the edge.
        """
        tmp, sha = spool_hashed(stream, self._tmp, max_bytes, durable=True)
        self._settle(tmp, sha)
        return sha

    def put_file(self, src: Path) -> str:
        """Copy ``src`` into the store (idempotent); return its SHA-256 hex."""
        with open(src, "rb") as f:
            return self.put_stream(f)

    def take_file(self, src: Path) -> str:
        """Move ``src`` (on the store's file system, owned by the caller) into the store after
        hashing it: read once, never copied. Made durable as ``put_stream`` makes a copy (the
        file fsynced, renamed into place, the folder fsynced); ``src`` is gone afterwards, also
        when the store already held that content."""
        with open(src, "rb") as f:
            digest = hashlib.file_digest(f, "sha256")
            os.fsync(f.fileno())
        sha = digest.hexdigest()
        self._settle(src, sha)
        return sha

    def _settle(self, src: Path, sha: str) -> None:
        """Put the finished, fsynced file ``src`` in place as blob ``sha`` (read-only, renamed,
        the folder fsynced), or drop it when the store already holds that content; ``src`` is
        gone afterwards either way, also when placing it failed."""
        dest = self.path(sha)
        try:
            if not dest.is_file():
                dest.parent.mkdir(exist_ok=True)
                os.chmod(src, 0o444)
                os.replace(src, dest)
                _fsync_dir(dest.parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                src.unlink()

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` (idempotent); return its SHA-256 hex."""
        sha = hashlib.sha256(data).hexdigest()
        if self.exists(sha):
            return sha
        return self.put_stream(io.BytesIO(data))

    def open(self, sha: str, start: int = 0) -> BinaryIO:
        """Open a blob for reading from byte ``start`` (FileNotFoundError when absent)."""
        f = open(self.path(sha), "rb")
        if start:
            f.seek(start)
        return f

    def size(self, sha: str) -> int:
        return self.path(sha).stat().st_size

    @contextlib.contextmanager
    def local_file(self, sha: str) -> Iterator[Path]:
        """The blob's own file: it is already local, and never changes once stored."""
        path = self.path(sha)
        if not path.is_file():
            raise FileNotFoundError(f"no blob {sha}")
        yield path

    def total_bytes(self) -> int:
        """Bytes the stored blobs take (for the server's store quota)."""
        return sum(p.stat().st_size for p in self.root.glob("??/*") if p.is_file())

    def delete(self, sha: str) -> None:
        """Remove a blob; deleting a blob that is not there is not an error."""
        with contextlib.suppress(FileNotFoundError):
            self.path(sha).unlink()

    def job_files(self, jobs_root: Path) -> JobFiles:
        """Jobs' files stay in their folders (the embedded default)."""
        from shoal.store.jobfiles import JobFolder

        return JobFolder(jobs_root)
