"""App bundles (FABs): a deterministic zip of an app project, named by its content hash.

Same input, same bytes: entries are sorted, timestamps and permissions fixed. The bundle holds
a manifest (path, sha256, size of every file), Flower's ``.info/CONTENT`` listing the same as its
last entry, and the project's pyproject.toml without its
``[tool.shoal.federations]`` (where to run is the caller's business, not the app's). Files
that must not ship stay out: ``.git``, ``__pycache__``, virtual environments, built bundles,
and whatever ``.gitignore`` excludes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from shoal.app.project import AppProject
from shoal.errors import ShoalError

MAX_BUNDLE_BYTES = 64 * 2**20
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
ALWAYS_SKIPPED = {".git", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
MANIFEST = "MANIFEST.json"
#: Flower's content list, the bundle's last entry: ``path,sha256,size in bits`` per file
#: (pyproject.toml included, as shipped), joined with newlines, none at the end (Flower 1.41).
CONTENT = ".info/CONTENT"
#: Entries that describe the bundle rather than being the app's files.
BUNDLE_INFO = (MANIFEST, CONTENT)


@dataclass(frozen=True)
class Bundle:
    path: Path
    sha256: str
    fab_id: str
    fab_name: str
    fab_version: str

    @property
    def hash8(self) -> str:
        return self.sha256[:8]

    @property
    def filename(self) -> str:
        return self.path.name

    def describe(self) -> dict[str, str]:
        return {
            "fab-id": self.fab_id,
            "fab-name": self.fab_name,
            "fab-version": self.fab_version,
            "fab-hash": self.hash8,
            "fab-filename": self.filename,
        }


def _ignore_patterns(root: Path) -> list[str]:
    path = root / ".gitignore"
    if not path.is_file():
        return []
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "!"))]


def _ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    for pattern in patterns:
        anchored = pattern.startswith("/")
        pat = pattern.strip("/")
        if anchored and (fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(parts[0], pat)):
            return True
        if not anchored and any(fnmatch.fnmatch(p, pat) for p in parts):
            return True
        if not anchored and fnmatch.fnmatch(rel, pat):
            return True
    return False


def shipped_files(root: Path) -> list[tuple[str, Path]]:
    """(relative path, file) of everything that goes into the bundle, sorted."""
    patterns = _ignore_patterns(root)
    out: list[tuple[str, Path]] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        parts = rel.split("/")
        if any(p in ALWAYS_SKIPPED for p in parts) or any(
            (root / p).joinpath("pyvenv.cfg").exists() for p in parts[:1]
        ):
            continue
        if path.is_symlink() or not path.is_file() or path.suffix in (".pyc", ".fab"):
            continue
        if _ignored(rel, patterns):
            continue
        out.append((rel, path))
    return out


def strip_federations(pyproject: str) -> str:
    """Drop every [tool.shoal.federations...] table from the text (the rest stays byte-identical)."""
    out: list[str] = []
    skipping = False
    for line in pyproject.splitlines(keepends=True):
        header = re.match(r"\s*\[+\s*([^\]]+?)\s*\]+", line)
        if header:
            skipping = header.group(1).startswith("tool.shoal.federations")
        if not skipping:
            out.append(line)
    return "".join(out)


def build_bundle(project: AppProject, out_dir: Path) -> Bundle:
    files = shipped_files(project.root)
    manifest: list[dict[str, object]] = []
    contents: list[tuple[str, bytes]] = []
    total = 0
    for rel, path in files:
        data = path.read_bytes()
        if rel == "pyproject.toml":
            data = strip_federations(data.decode()).encode()
        total += len(data)
        if total > MAX_BUNDLE_BYTES:
            raise ShoalError(
                "BUNDLE_TOO_LARGE",
                f"{total} bytes and counting; the limit is {MAX_BUNDLE_BYTES}",
                path=str(rel),
            )
        contents.append((rel, data))
        manifest.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    contents.append(
        (
            MANIFEST,
            json.dumps(
                {"fab-id": project.fab_id, "version": project.version, "files": manifest},
                indent=2,
                sort_keys=True,
            ).encode(),
        )
    )
    listing = "\n".join(f"{m['path']},{m['sha256']},{int(str(m['size'])) * 8}" for m in manifest)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, data in [*sorted(contents), (CONTENT, listing.encode())]:
            info = zipfile.ZipInfo(rel, date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    raw = buffer.getvalue()
    sha = hashlib.sha256(raw).hexdigest()
    version = project.version.replace(".", "-")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{project.publisher}.{project.name}.{version}.{sha[:8]}.fab"
    path.write_bytes(raw)
    return Bundle(
        path=path, sha256=sha, fab_id=project.fab_id, fab_name=project.name, fab_version=project.version
    )
