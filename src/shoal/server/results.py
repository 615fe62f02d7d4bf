"""The downloadable result of a finished job: one zip of its definition, meta and workspace."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError
from shoal.scheduler.runner import JobPaths
from shoal.store.base import JobRecord
from shoal.store.blobs import Blobs
from shoal.wire.jsonout import dumps

#: What ``job download --only`` may ask for, and which of a result's files each part is.
PARTS = ("model", "metrics", "logs", "job")
MODEL_SUFFIXES = (".safetensors", ".pt", ".pth")


def part_of(rel: str) -> str | None:
    """Which part a workspace file belongs to (``rel`` below workspace/): the global model and
    the metrics sit at its top, logs in each participant's folder; anything else only ships
    in a full download."""
    if "/" in rel:
        return "logs" if rel.rsplit("/", 1)[1] in ("log.txt", "log.json") else None
    if rel.endswith(MODEL_SUFFIXES):
        return "model"
    return "metrics" if rel.endswith((".json", ".jsonl")) else None


def parse_parts(raw: str | None) -> tuple[str, ...] | None:
    """The ``only`` query: None for everything, else the named parts, sorted; others refused."""
    if raw is None:
        return None
    parts = sorted({p.strip() for p in raw.split(",") if p.strip()})
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ShoalError(
            "INVALID_ARGS", f"only takes a comma-separated list of {', '.join(PARTS)}, got {raw[:100]!r}"
        )
    return tuple(parts)


def build_result_zip(
    paths: JobPaths,
    blobs: Blobs,
    job: JobRecord,
    meta: dict[str, Any],
    parts: tuple[str, ...] | None = None,
) -> Path:
    """Write ``result.zip`` once (weights stored, not deflated); later downloads reuse it.
    ``parts`` (see PARTS) makes a smaller zip of those alone, plus meta.json, kept the same way:
    a user who wants the metrics of a 1 GB model's job need not fetch the model."""
    target = paths.root / ("result.zip" if parts is None else f"result-{'-'.join(parts)}.zip")
    if target.exists():
        return target
    tmp = target.with_suffix(".tmp")
    paths.root.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr("meta.json", dumps(meta, indent=2, sort_keys=True))
        if parts is None or "job" in parts:
            with blobs.local_file(job.content_sha256) as archive, zipfile.ZipFile(archive) as job_zip:
                for info in job_zip.infolist():
                    if not info.is_dir():
                        zf.writestr(
                            "job/" + info.filename, job_zip.read(info), compress_type=zipfile.ZIP_DEFLATED
                        )
        if paths.workspace.is_dir():
            for file in sorted(paths.workspace.rglob("*")):
                if file.is_file() and not file.is_symlink():
                    rel = file.relative_to(paths.workspace).as_posix()
                    if parts is not None and part_of(rel) not in parts:
                        continue
                    method = zipfile.ZIP_STORED if file.suffix == ".safetensors" else zipfile.ZIP_DEFLATED
                    zf.write(file, "workspace/" + rel, compress_type=method)
    os.replace(tmp, target)
    return target
