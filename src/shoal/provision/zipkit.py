"""A kit's ``.zip``, the same bytes for the same files, so an unchanged kit's zip never changes.

Entries are sorted, dated 1980-01-01 and carry their Unix mode (``unzip`` restores 0600 on
the key and 0755 on the start script). A server's runtime ``workspace/`` is never zipped.
"""

from __future__ import annotations

import os
import stat
import tempfile
import zipfile
from pathlib import Path

_EPOCH = (1980, 1, 1, 0, 0, 0)
SKIP = ("workspace",)  # what a running service adds to its kit folder


def zip_kit(kit: Path) -> Path:
    """Write ``<kit>.zip`` beside the kit folder (atomically); its entries start with the kit's name."""
    target = kit.with_name(kit.name + ".zip")
    files = sorted(
        p for p in kit.rglob("*") if p.relative_to(kit).parts[0] not in SKIP and (p.is_file() or p.is_dir())
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}-", dir=kit.parent)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                rel = Path(kit.name, path.relative_to(kit)).as_posix()
                mode = stat.S_IMODE(path.stat().st_mode)
                if path.is_dir():
                    info = zipfile.ZipInfo(rel + "/", _EPOCH)
                    info.external_attr = ((stat.S_IFDIR | mode) << 16) | 0x10
                    zf.writestr(info, b"")
                else:
                    info = zipfile.ZipInfo(rel, _EPOCH)
                    info.external_attr = (stat.S_IFREG | mode) << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    zf.writestr(info, path.read_bytes())
        os.chmod(tmp, 0o600)  # it holds a private key
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
