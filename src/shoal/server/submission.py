"""Turning an uploaded archive into a validated, normalised job archive (runs in a worker thread)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shoal.wire.archive import content_hash_of_folder, extract_archive, zip_folder
from shoal.wire.jobdef import JobDefinition, check_min_clients, load_job_definition


@dataclass(frozen=True)
class PreparedJob:
    jobdef: JobDefinition
    archive: Path  # deterministic zip with meta.json at its root
    content_hash: str  # what submit tokens compare; a zip wrapper folder does not change it


def job_root(extracted: Path) -> Path:
    """The folder holding meta.json: the archive root, or its single wrapper folder."""
    if (extracted / "meta.json").exists():
        return extracted
    children = [p for p in extracted.iterdir() if not p.name.startswith(".")]
    if len(children) == 1 and children[0].is_dir() and (children[0] / "meta.json").exists():
        return children[0]
    return extracted


def prepare_submission(upload: Path, work: Path, known_sites: list[str]) -> PreparedJob:
    """Validate everything before the store is touched: a refused job leaves no trace."""
    extracted = work / "extracted"
    extract_archive(upload, extracted)
    root = job_root(extracted)
    jobdef = load_job_definition(root)
    check_min_clients(jobdef, known_sites)
    archive = work / "job.zip"
    zip_folder(root, archive)
    return PreparedJob(jobdef=jobdef, archive=archive, content_hash=content_hash_of_folder(root))
