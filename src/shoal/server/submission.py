"""Turning an uploaded archive into a validated, normalised job archive, then a stored job.

Both steps run in a worker thread. Validation touches nothing but the request's own temp
folder; storing writes the archive blob and then the job record, and takes the blob back if
the record is refused, so a refused submit leaves the server as it found it.
"""

from __future__ import annotations

import errno
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError
from shoal.store.base import JobRecord, JobStore, Submitter
from shoal.store.blobs import Blobs
from shoal.wire.archive import content_hash_of_folder, extract_archive, zip_folder
from shoal.wire.jobdef import (
    JobDefinition,
    check_min_clients,
    load_job_definition,
    meta_folder,
    server_custom_code,
)
from shoal.wire.resources import check_spec, never_fits

#: How many of an archive's top-level names a JOB_META_MISSING message lists.
LAYOUT_NAMES_SHOWN = 5

#: Held from "is this blob already stored?" to "the job record is written, or the blob is gone
#: again": two submits of one archive must not both decide the blob is theirs to remove.
_STORE_LOCK = threading.Lock()


@dataclass(frozen=True)
class PreparedJob:
    jobdef: JobDefinition
    archive: Path  # deterministic zip with meta.json at its root
    archive_sha256: str  # the blob id the archive will be stored under
    content_hash: str  # what submit tokens compare; a zip wrapper folder does not change it
    server_custom_code: str | None = None  # what custom code the server app runs (None: none)


def _layout(files: list[str]) -> str:
    """The archive's top level as the user built it ("'job/', 'notes.txt'"): never a server path."""
    tops = sorted({name.split("/", 1)[0] + ("/" if "/" in name else "") for name in files})
    shown = ", ".join(repr(name) for name in tops[:LAYOUT_NAMES_SHOWN])
    more = len(tops) - LAYOUT_NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def job_root(extracted: Path, files: list[str]) -> Path:
    """The folder holding meta.json: the archive root, or its single wrapper folder.

    ``files`` are the archive's member paths; when neither place holds meta.json the error
    describes them, since the extraction folder is the server's business, not the user's.
    """
    folder = meta_folder(files)
    if folder is not None:
        return extracted / folder if folder else extracted
    if not files:
        raise ShoalError("JOB_META_MISSING", "the uploaded archive holds no files")
    raise ShoalError(
        "JOB_META_MISSING",
        "no meta.json at the top of the uploaded job, nor inside a single top folder; "
        f"its top level holds {_layout(files)}",
    )


def _sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def prepare_submission(
    upload: Path, work: Path, known_sites: list[str], declared: dict[str, dict[str, Any]] | None = None
) -> PreparedJob:
    """Validate everything before the store is touched: a refused job leaves no trace.
    ``declared``: the resources of the connected sites, as their agents declared them."""
    extracted = work / "extracted"
    files = extract_archive(upload, extracted)
    root = job_root(extracted, files)
    jobdef = load_job_definition(root)
    check_min_clients(jobdef, known_sites)
    check_resources(jobdef.resource_spec, known_sites, declared or {})
    archive = work / "job.zip"
    zip_folder(root, archive)
    return PreparedJob(
        jobdef=jobdef,
        archive=archive,
        archive_sha256=_sha256_of(archive),
        content_hash=content_hash_of_folder(root),
        server_custom_code=server_custom_code(root / jobdef.server_app),
    )


def check_resources(
    spec: dict[str, Any], known_sites: list[str], declared: dict[str, dict[str, Any]]
) -> None:
    """RESOURCES_UNSATISFIABLE for a spec naming a site the federation does not have, or asking
    a connected site for more than it declares at all (it would wait for ever). A site not
    connected now is given the benefit of the doubt: its resources are not known."""
    for site, need in check_spec(spec).items():
        if site not in known_sites:
            detail = f"resource_spec names '{site}', which is not a site here"
            raise ShoalError("RESOURCES_UNSATISFIABLE", detail)
        problem = never_fits(declared[site], need) if site in declared else None
        if problem:
            raise ShoalError("RESOURCES_UNSATISFIABLE", f"resource_spec for {site} {problem}")


def store_submission(
    store: JobStore,
    blobs: Blobs,
    prepared: PreparedJob,
    *,
    study: str,
    submitter: Submitter,
    submit_token: str | None,
) -> tuple[JobRecord, bool]:
    """Store the archive and write the job record; return ``(record, created)`` as ``create_job``.

    The record can still be refused here (SUBMIT_TOKEN_CONFLICT, SUBMIT_TOKEN_JOB_DELETED are
    only decided inside the store's write transaction). Blobs are content-addressed, so the
    same archive may already be another job's: only a blob this call added, and that no job
    references, is removed again.
    """
    with _STORE_LOCK:
        existed = blobs.exists(prepared.archive_sha256)
        try:
            sha = blobs.put_file(prepared.archive)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise ShoalError("STORE_FULL", "the disk under the server's store is full") from exc
            raise
        try:
            return store.create_job(
                study=study,
                name=prepared.jobdef.name,
                meta=prepared.jobdef.meta,
                content_sha256=sha,
                submitter=submitter,
                submit_token=submit_token,
                content_hash=prepared.content_hash,
            )
        except BaseException:
            if not existed and store.jobs_using_content(sha) == 0:
                blobs.delete(sha)
            raise


def release_blob(store: JobStore, blobs: Blobs, sha: str) -> None:
    """Remove an archive no job uses any more (after a delete). Under the same lock as
    ``store_submission``: a submit of the same archive that found the blob stored must not
    have it removed before its own job record points at it."""
    with _STORE_LOCK:
        if store.jobs_using_content(sha) == 0:
            blobs.delete(sha)
