"""The downloadable result of a finished job: one zip of its definition, meta and workspace."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from shoal.scheduler.runner import JobPaths
from shoal.store.base import JobRecord
from shoal.store.blobs import BlobStore
from shoal.wire.jsonout import dumps


def build_result_zip(paths: JobPaths, blobs: BlobStore, job: JobRecord, meta: dict[str, Any]) -> Path:
    """Write ``result.zip`` once (weights stored, not deflated); later downloads reuse it."""
    target = paths.root / "result.zip"
    if target.exists():
        return target
    tmp = target.with_suffix(".tmp")
    paths.root.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr("meta.json", dumps(meta, indent=2, sort_keys=True))
        with zipfile.ZipFile(blobs.path(job.content_sha256)) as job_zip:
            for info in job_zip.infolist():
                if not info.is_dir():
                    zf.writestr(
                        "job/" + info.filename, job_zip.read(info), compress_type=zipfile.ZIP_DEFLATED
                    )
        if paths.workspace.is_dir():
            for file in sorted(paths.workspace.rglob("*")):
                if file.is_file() and not file.is_symlink():
                    rel = file.relative_to(paths.workspace).as_posix()
                    method = zipfile.ZIP_STORED if file.suffix == ".safetensors" else zipfile.ZIP_DEFLATED
                    zf.write(file, "workspace/" + rel, compress_type=method)
    os.replace(tmp, target)
    return target
