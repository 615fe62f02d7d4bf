"""Bytes passed between server replicas through the blob store, under addresses of their own.

A task's model for a site held by another replica, a site's result for the replica running its
job and a site's final log travel as blobs of the shared store (decisions/0048). The store is
content-addressed, and these bytes are often equal to a blob that must stay: a task's model is
the checkpoint the job resumes from, a site that trained nothing sends that same model back.
Deleting the relayed copy once it was taken would delete the checkpoint. So a relay blob is
its bytes after ``SALT`` random bytes: its address is its own, deleting it touches nothing
else, and readers skip the salt.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from shoal.store.blobs import Blobs

SALT = 16
CHUNK = 4 * 2**20


class _Salted:
    """A file read after ``SALT`` random bytes, as a stream the blob store takes."""

    def __init__(self, f: BinaryIO) -> None:
        self._head = os.urandom(SALT)
        self._f = f

    def read(self, size: int = -1) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        return self._f.read(size)


def put(blobs: Blobs, path: Path) -> str:
    """Keep the file at ``path`` as a relay blob; its address."""
    with open(path, "rb") as f:
        return blobs.put_stream(_Salted(f))  # type: ignore[arg-type]  # read() is all it takes


def size(blobs: Blobs, blob: str) -> int:
    """The relayed bytes' length (FileNotFoundError when the blob is gone)."""
    return blobs.size(blob) - SALT


def open_at(blobs: Blobs, blob: str, start: int = 0) -> BinaryIO:
    """The relayed bytes from byte ``start`` on (FileNotFoundError when the blob is gone)."""
    if start:  # a resumed download: never at the very end (``_range_start`` sends it whole)
        return blobs.open(blob, start + SALT)
    # From the top the salt is read off rather than skipped by a ranged read: the bytes may be
    # none (an empty log), and a bucket refuses a range that starts at an object's end.
    f = blobs.open(blob)
    skipped = 0
    while skipped < SALT:
        got = len(f.read(SALT - skipped))
        if not got:
            break
        skipped += got
    return f


def fetch(blobs: Blobs, blob: str, dest: Path) -> None:
    """Copy the relayed bytes to ``dest`` (FileNotFoundError when the blob is gone)."""
    with contextlib.closing(open_at(blobs, blob)) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)


def drop(blobs: Blobs, blob: str) -> None:
    """The relay blob was taken (or is no longer wanted): it goes."""
    blobs.delete(blob)
