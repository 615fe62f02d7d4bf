"""Hostile job archives submitted through the real CLI are refused before anything is extracted,
each with its code, and the store is unchanged."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.e2e.conftest import Federation
from tests.federation import archive_blobs

pytestmark = pytest.mark.e2e


def good_files() -> dict[str, bytes]:
    root = EXAMPLES / "hello-numpy"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_zip(
    path: Path, entries: dict[str, bytes], tweak: Callable[[zipfile.ZipFile], None] | None = None
) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if tweak:
            tweak(zf)
    return path


def symlink_entry(zf: zipfile.ZipFile) -> None:
    info = zipfile.ZipInfo("app/custom/link.py")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, "/etc/passwd")


def bomb(zf: zipfile.ZipFile) -> None:
    zf.writestr("app/custom/zeros.bin", b"\0" * (300 * 2**20))


CASES: dict[
    str, tuple[Callable[[], dict[str, bytes]], Callable[[zipfile.ZipFile], None] | None, set[str]]
] = {
    "dotdot": (lambda: {**good_files(), "../evil.py": b"x"}, None, {"ARCHIVE_UNSAFE"}),
    "absolute": (lambda: {**good_files(), "/tmp/evil.py": b"x"}, None, {"ARCHIVE_UNSAFE"}),
    "symlink": (good_files, symlink_entry, {"ARCHIVE_UNSAFE"}),
    "case-twins": (lambda: {**good_files(), "app/custom/Client.py": b"x"}, None, {"ARCHIVE_UNSAFE"}),
    "zip-bomb": (good_files, bomb, {"ARCHIVE_UNSAFE", "UPLOAD_TOO_LARGE"}),
    "huge-meta": (
        lambda: {**good_files(), "meta.json": b" " * (10 * 2**20) + b"{}"},
        None,
        {"JOB_META_INVALID", "UPLOAD_TOO_LARGE", "ARCHIVE_UNSAFE"},
    ),
    "escaping-app-name": (
        lambda: {
            **good_files(),
            "meta.json": json.dumps(
                {"name": "x", "min_clients": 1, "deploy_map": {"../../etc": ["@ALL"]}}
            ).encode(),
        },
        None,
        {"JOB_META_INVALID", "JOB_APP_MISSING"},
    ),
}


def blob_files(fed: Federation) -> list[str]:
    """The server's stored archives: a refused submit must not add one. (Only the archives: a
    job another test left running stores its round checkpoints as blobs too.)"""
    return sorted(archive_blobs(fed))


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_archive_is_refused(federation: Federation, tmp_path: Path, case: str) -> None:
    entries, tweak, codes = CASES[case]
    archive = write_zip(tmp_path / f"{case}.zip", entries(), tweak)
    code, before = federation.cli.json("job", "list")
    blobs_before = blob_files(federation)
    code, doc = federation.cli.json("job", "submit", "-j", archive)
    assert code != 0 and doc["error_code"] in codes, doc
    code, after = federation.cli.json("job", "list")
    assert after["data"] == before["data"]
    assert blob_files(federation) == blobs_before
    assert not (Path("/tmp") / "evil.py").exists()


def test_many_tiny_files_are_refused_fast(federation: Federation, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in good_files().items():
            zf.writestr(name, data)
        for i in range(100_000):
            zf.writestr(f"app/custom/many/{i}.txt", b"")
    archive = tmp_path / "many.zip"
    archive.write_bytes(buf.getvalue())
    code, doc = federation.cli.json("job", "submit", "-j", archive)
    assert code != 0 and doc["error_code"] in ("ARCHIVE_UNSAFE", "UPLOAD_TOO_LARGE"), doc


#: Names a Linux server takes but a site on another system cannot hold, or holds as another
#: file (case: the extra entries, and the entry the refusal must name).
NOT_PORTABLE: dict[str, tuple[dict[str, bytes], str]] = {
    "windows-device": ({"app/custom/aux.py": b"x"}, "app/custom/aux.py"),
    "windows-device-folder": ({"app/CON/x.py": b"x"}, "app/CON/x.py"),
    "device-with-extension": ({"nul.txt": b"x"}, "nul.txt"),
    "trailing-dot": ({"app/custom/client.py.": b"x"}, "app/custom/client.py."),
    "trailing-space": ({"notes ": b"x"}, "notes "),
    "colon": ({"app/custom/a:b.py": b"x"}, "app/custom/a:b.py"),
    "pipe": ({"app/custom/a|b.py": b"x"}, "app/custom/a|b.py"),
    "control-character": ({"app/custom/x\x1b[2J.py": b"x"}, "app/custom/x\x1b[2J.py"),
    "nfc-nfd-twins": ({"caf\u00e9.txt": b"1", "cafe\u0301.txt": b"2"}, "cafe\u0301.txt"),
    "case-twins": ({"app/custom/Util.py": b"1", "app/custom/util.py": b"2"}, "app/custom/util.py"),
}


def _as_folder(root: Path, extra: dict[str, bytes]) -> Path:
    for name, data in {**good_files(), **extra}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


@pytest.mark.parametrize("case", sorted(NOT_PORTABLE))
def test_a_name_some_site_cannot_hold_is_refused_at_submit(
    federation: Federation, tmp_path: Path, case: str
) -> None:
    """Refused by the CLI before upload (zip and folder alike) and, when a client skips that
    check, by the server before anything is stored; each refusal names the entry."""
    from shoal.api.client import AdminClient
    from shoal.api.kits import resolve_admin_kit
    from shoal.errors import ShoalError

    extra, entry = NOT_PORTABLE[case]
    archive = write_zip(tmp_path / f"{case}.zip", {**good_files(), **extra})
    _, before = federation.cli.json("job", "list")
    blobs_before = blob_files(federation)
    folder = _as_folder(tmp_path / case, extra)
    code, doc = federation.cli.json("job", "submit", "-j", archive)
    assert code == 1 and doc["error_code"] == "ARCHIVE_UNSAFE" and doc["data"] == {"entry": entry}, doc
    # a folder is refused as it is listed: the entry named is the file, or the folder, that is
    # not portable (of twins, whichever is listed second)
    code, doc = federation.cli.json("job", "submit", "-j", folder)
    assert code == 1 and doc["error_code"] == "ARCHIVE_UNSAFE", doc
    named = {"/".join(name.split("/")[: i + 1]) for name in extra for i in range(name.count("/") + 1)}
    assert doc["data"]["entry"] in named, doc
    with AdminClient(resolve_admin_kit(None, str(federation.kits / "admin@example.com"))) as client:
        with pytest.raises(ShoalError) as refused:
            client.submit_job(archive, "default")
    assert refused.value.code == "ARCHIVE_UNSAFE" and refused.value.data == {"entry": entry}
    assert federation.cli.json("job", "list")[1]["data"] == before["data"]
    assert blob_files(federation) == blobs_before
