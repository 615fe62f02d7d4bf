"""A finished job's files (its global model, metrics, logs, result zips), wherever they are kept.

While a job runs its files are on the server's disk, in ``jobs/<id>/``: the workflow process is
confined to local folders by the kernel (Landlock knows paths, not objects), the sites' logs are
appended there as they stream, and the trackers write there. Once the job has settled,
``keep`` makes them durable where the blob store lives: the folder store leaves them where they
are (the embedded default, unchanged), the bucket uploads them to ``prefix/jobs/<id>/...``
(shoal.store.s3jobfiles) and removes the local copy. Every reader (``job download``,
``job logs``) goes through this interface, by name relative to the job's folder
(``workspace/site-1/log.txt``, ``result.zip``), and reads a stream: a 1 GB model never sits in
the server's memory.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from shoal.sandbox.files import remove_tree

#: A name's parts: what a folder walk can produce, never a way out of the job's folder.
_BAD_PARTS = ("", ".", "..")
NAME_MAX = 900  # S3 keys end at 1024 bytes; prefix/jobs/<id>/ takes the rest


def check_name(name: str) -> str:
    """Refuse a name that could leave the job's folder (or its key space) before it is used."""
    if (
        not isinstance(name, str)
        or len(name.encode("utf-8", "surrogatepass")) > NAME_MAX
        or "\\" in name
        or "\0" in name
        or any(part in _BAD_PARTS for part in name.split("/"))
    ):
        raise ValueError(f"not a job file name: {name[:80]!r}")
    return name


def walk_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Every regular file under ``root`` as (name relative to ``root``, path), sorted, never
    following a link (a job's folders may hold links its code left)."""
    if not root.is_dir():
        return
    found: list[tuple[str, Path]] = []
    for folder, dirs, files, folder_fd in os.fwalk(root, follow_symlinks=False):
        dirs.sort()
        for name in files:
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode):
                    path = Path(folder) / name
                    found.append((path.relative_to(root).as_posix(), path))
    yield from sorted(found)


class JobFiles(Protocol):
    """A job's durable files, named relative to its folder (``workspace/...``, ``result.zip``).

    Names are checked (``check_name``: ValueError) before anything is touched. Reads return
    streams; a missing file is FileNotFoundError, a store that fails BLOB_STORE_UNAVAILABLE.
    """

    def local(self, job_id: int) -> Path:
        """The job's folder on this server's disk (where a running job's files are written)."""
        ...

    def keep(self, job_id: int) -> None:
        """The job has settled: make its ``workspace/`` durable where the store keeps files.
        After a failure the local files stay, and are what readers get."""
        ...

    def put_file(self, job_id: int, name: str, src: Path) -> None:
        """Keep the local file ``src`` under ``name`` (it is moved or removed)."""
        ...

    def left_behind(self) -> list[int]:
        """Jobs whose ``workspace/`` is still on local disk though it belongs elsewhere (the
        server stopped before, or while, keeping it; an upload failed): for ``keep`` again once
        they are settled. None for the folder store, where local disk is where they belong."""
        ...

    def list(self, job_id: int, under: str) -> list[tuple[str, int]]:
        """(name, size) of every file whose name starts with ``under``, sorted."""
        ...

    def size(self, job_id: int, name: str) -> int: ...

    def open(self, job_id: int, name: str, start: int = 0) -> BinaryIO:
        """The file from byte ``start`` on, to read in chunks."""
        ...

    def scratch(self, job_id: int) -> Path:
        """A local folder for a file being built before ``put_file`` (same disk as its target)."""
        ...

    def delete(self, job_id: int) -> None:
        """Every file of the job, wherever it is (local and kept); absent is not an error."""
        ...


class JobFolder:
    """The embedded default: a job's files stay in ``jobs_root/<id>/`` (``keep`` does nothing)."""

    def __init__(self, jobs_root: Path) -> None:
        self.jobs_root = Path(jobs_root)

    def local(self, job_id: int) -> Path:
        return self.jobs_root / str(int(job_id))

    def path(self, job_id: int, name: str) -> Path:
        return self.local(job_id) / check_name(name)

    def keep(self, job_id: int) -> None:
        """Nothing to move: the folder is where the files are kept."""

    def left_behind(self) -> list[int]:
        return []

    def put_file(self, job_id: int, name: str, src: Path) -> None:
        dest = self.path(job_id, name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)

    def list(self, job_id: int, under: str) -> list[tuple[str, int]]:
        root = self.local(job_id)
        return [(name, path.stat().st_size) for name, path in walk_files(root) if name.startswith(under)]

    def size(self, job_id: int, name: str) -> int:
        return self.path(job_id, name).stat().st_size

    def open(self, job_id: int, name: str, start: int = 0) -> BinaryIO:
        fd = os.open(self.path(job_id, name), os.O_RDONLY | os.O_NOFOLLOW)
        f = os.fdopen(fd, "rb")
        if start:
            f.seek(start)
        return f

    def scratch(self, job_id: int) -> Path:
        folder = self.local(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def delete(self, job_id: int) -> None:
        """Best effort, as a job's folder may hold what its code left (the job is gone anyway)."""
        with contextlib.suppress(OSError):
            remove_tree(self.local(job_id))
