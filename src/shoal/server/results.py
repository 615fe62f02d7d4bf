"""The downloadable result of a finished job: one zip of its definition, meta and workspace."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError
from shoal.store.base import JobRecord
from shoal.store.blobs import Blobs
from shoal.store.jobfiles import JobFiles
from shoal.wire.jsonout import dumps

#: What ``job download --only`` may ask for, and which of a result's files each part is.
PARTS = ("model", "metrics", "logs", "job")
MODEL_SUFFIXES = (".safetensors", ".pt", ".pth")
_ZIP_EPOCH = 315_532_800  # 1980-01-01: the earliest time a zip entry can say
_COPY_CHUNK = 4 << 20


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
    files: JobFiles,
    blobs: Blobs,
    job: JobRecord,
    meta: dict[str, Any],
    parts: tuple[str, ...] | None = None,
) -> str:
    """Write ``result.zip`` once (weights stored, not deflated); later downloads reuse it.
    ``parts`` (see PARTS) makes a smaller zip of those alone, plus meta.json, kept the same way:
    a user who wants the metrics of a 1 GB model's job need not fetch the model. Returns the
    zip's name among the job's files (shoal.store.jobfiles), which may be in a bucket: each
    workspace file is copied in from a stream, chunk by chunk, never whole in memory."""
    name = "result.zip" if parts is None else f"result-{'-'.join(parts)}.zip"
    with contextlib.suppress(FileNotFoundError):
        files.size(job.job_id, name)
        return name
    when = time.gmtime(max(job.end_time or job.submit_time, _ZIP_EPOCH))[:6]
    fd, tmp_name = tempfile.mkstemp(dir=files.scratch(job.job_id), prefix="result-", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w") as zf:
            zf.writestr(zipfile.ZipInfo("meta.json", when), dumps(meta, indent=2, sort_keys=True))
            if parts is None or "job" in parts:
                with blobs.local_file(job.content_sha256) as archive, zipfile.ZipFile(archive) as job_zip:
                    for info in job_zip.infolist():
                        if not info.is_dir():
                            zf.writestr(
                                "job/" + info.filename, job_zip.read(info), compress_type=zipfile.ZIP_DEFLATED
                            )
            for rel, size in files.list(job.job_id, "workspace/"):
                if parts is not None and part_of(rel[len("workspace/") :]) not in parts:
                    continue
                entry = zipfile.ZipInfo(rel, when)
                stored = rel.endswith(".safetensors")  # weights do not deflate; stored is faster
                entry.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
                entry.file_size = size  # tells zipfile whether the entry needs ZIP64
                with files.open(job.job_id, rel) as src, zf.open(entry, "w") as dest:
                    shutil.copyfileobj(src, dest, _COPY_CHUNK)
        files.put_file(job.job_id, name, tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return name
