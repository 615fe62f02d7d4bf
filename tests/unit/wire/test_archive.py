"""Safe archives: deterministic zips, content hashes, and every hostile archive refused.

Each refusal test builds the hostile zip itself with ``zipfile`` and checks that extraction
left nothing behind (no destination, no partial folder).
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest

from shoal.errors import ShoalError
from shoal.wire.archive import (
    content_hash_of_archive,
    content_hash_of_folder,
    extract_archive,
    inspect_archive,
    iter_folder_files,
    portable_key,
    portable_name_problem,
    strip_wrapper_dir,
    wrapper_dir,
    zip_folder,
)


def make_job(root: Path) -> Path:
    (root / "app" / "config").mkdir(parents=True)
    (root / "app" / "custom").mkdir()
    (root / "meta.json").write_text('{"name": "hello"}')
    (root / "app" / "config" / "config_fed_client.json").write_text('{"script": "train.py"}')
    (root / "app" / "custom" / "train.py").write_text("print('hi')\n")
    (root / ".hidden").write_text("kept")
    return root


def make_zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on duplicate names; we want them
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return path


def entry_of(err: ShoalError) -> str:
    """The archive entry an error names (its ``data``)."""
    assert err.data is not None, err
    return str(err.data["entry"])


def refused(tmp_path: Path, archive: Path, code: str, match: str = "", **limits: Any) -> ShoalError:
    """Assert both inspect and extract refuse with ``code`` and extraction leaves nothing."""
    with pytest.raises(ShoalError) as err:
        inspect_archive(archive, **limits)
    assert err.value.code == code
    assert match in str(err.value), str(err.value)
    out = tmp_path / "out"
    with pytest.raises(ShoalError) as err2:
        extract_archive(archive, out, **limits)
    assert err2.value.code == code
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    return err.value


# --- writing and hashing --------------------------------------------------------------------


def test_zip_folder_deterministic_and_skips_caches(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    (job / "__pycache__").mkdir()
    (job / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (job / "app" / "custom" / "mod.pyc").write_bytes(b"\0")
    (job / ".git").mkdir()
    (job / ".git" / "HEAD").write_text("ref")
    zip_folder(job, tmp_path / "a.zip")
    os.utime(job / "meta.json", (time.time() + 1000, time.time() + 1000))
    zip_folder(job, tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert zf.namelist() == [
            ".hidden",
            "app/config/config_fed_client.json",
            "app/custom/train.py",
            "meta.json",
        ]


def test_zip_folder_refuses_symlinks(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    (job / "app" / "custom" / "link.py").symlink_to("/etc/passwd")
    with pytest.raises(ShoalError) as err:
        zip_folder(job, tmp_path / "a.zip")
    assert err.value.code == "ARCHIVE_UNSAFE" and "link.py" in str(err.value)
    assert not (tmp_path / "a.zip").exists()


def test_zip_folder_into_itself(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    zip_folder(job, job / "self.zip")
    with zipfile.ZipFile(job / "self.zip") as zf:
        assert "self.zip" not in zf.namelist()


def test_roundtrip_extract(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    zip_folder(job, tmp_path / "job.zip")
    written = extract_archive(tmp_path / "job.zip", tmp_path / "out")
    assert written == [".hidden", "app/config/config_fed_client.json", "app/custom/train.py", "meta.json"]
    assert (tmp_path / "out" / "app" / "custom" / "train.py").read_text() == "print('hi')\n"
    assert content_hash_of_folder(tmp_path / "out") == content_hash_of_folder(job)


def test_extract_into_existing_nonempty_dir_refused(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    zip_folder(job, tmp_path / "job.zip")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("keep")
    with pytest.raises(FileExistsError):
        extract_archive(tmp_path / "job.zip", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    extract_archive(tmp_path / "job.zip", tmp_path / "empty")
    assert (tmp_path / "empty" / "meta.json").is_file()


def test_hash_formula(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    (folder / "b").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"A")
    (folder / "b" / "c").write_bytes(b"CC")
    digest = hashlib.sha256()
    for rel, data in (("a.txt", b"A"), ("b/c", b"CC")):
        digest.update(len(rel).to_bytes(8, "big") + rel.encode() + len(data).to_bytes(8, "big") + data)
    assert content_hash_of_folder(folder) == "sha256:" + digest.hexdigest()


def test_hash_wrapper_zip_equals_folder(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    expected = content_hash_of_folder(job)
    zip_folder(job, tmp_path / "plain.zip")
    assert content_hash_of_archive(tmp_path / "plain.zip") == expected
    # what `zip -r job.zip job/` makes: a wrapper folder, directory entries, any order
    entries: list[tuple[str | zipfile.ZipInfo, bytes]] = [("job/", b""), ("job/app/", b"")]
    for path in sorted(job.rglob("*"), reverse=True):
        if path.is_file():
            entries.append(("job/" + path.relative_to(job).as_posix(), path.read_bytes()))
    make_zip(tmp_path / "wrapped.zip", entries)
    assert content_hash_of_archive(tmp_path / "wrapped.zip") == expected
    # zipping the parent adds a second level: different content
    make_zip(tmp_path / "parent.zip", [("top/" + str(n), d) for n, d in entries if isinstance(n, str)])
    assert content_hash_of_archive(tmp_path / "parent.zip") != expected


def test_hash_changes_with_content(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    before = content_hash_of_folder(job)
    (job / "meta.json").write_text('{"name": "hello2"}')
    assert content_hash_of_folder(job) != before


def test_wrapper_helpers() -> None:
    assert wrapper_dir(["job/meta.json", "job/app/x"]) == "job"
    assert wrapper_dir(["meta.json", "app/x"]) is None
    assert wrapper_dir(["a/x", "b/y"]) is None
    assert wrapper_dir([]) is None
    assert strip_wrapper_dir(["job/meta.json", "job/app/x"]) == ["meta.json", "app/x"]
    assert strip_wrapper_dir(["meta.json"]) == ["meta.json"]


def test_extract_strips_wrapper(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "w.zip", [("job/", b""), ("job/meta.json", b"{}"), ("job/app/a.py", b"x")])
    written = extract_archive(archive, tmp_path / "out", strip_wrapper=True)
    assert sorted(written) == ["app/a.py", "meta.json"]
    assert (tmp_path / "out" / "meta.json").read_bytes() == b"{}"


# --- hostile archives -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../evil.py", "'..'"),
        ("app/../../evil.py", "'..'"),
        ("/etc/passwd", "absolute"),
        ("C:/Windows/evil.dll", "drive-letter"),
        ("c:evil", "drive-letter"),
        ("app\\..\\evil.py", "backslash"),
        ("app//x.py", "empty"),
        ("./x.py", "'.'"),
        ("bad\x01name", "control"),
    ],
)
def test_bad_paths_refused(tmp_path: Path, name: str, why: str) -> None:
    archive = make_zip(tmp_path / "bad.zip", [("meta.json", b"{}"), (name, b"x")])
    err = refused(tmp_path, archive, "ARCHIVE_UNSAFE", why)
    assert repr(name) in str(err)


def _special(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        (stat.S_IFLNK | 0o777, "symbolic link"),
        (stat.S_IFCHR | 0o644, "special"),
        (stat.S_IFBLK | 0o644, "special"),
        (stat.S_IFIFO | 0o644, "special"),
        (stat.S_IFSOCK | 0o644, "special"),
    ],
)
def test_links_and_devices_refused(tmp_path: Path, mode: int, why: str) -> None:
    archive = make_zip(
        tmp_path / "bad.zip", [("meta.json", b"{}"), (_special("app/link", mode), b"/etc/passwd")]
    )
    err = refused(tmp_path, archive, "ARCHIVE_UNSAFE", why)
    assert "app/link" in str(err)


def test_duplicate_names_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "dup.zip", [("meta.json", b"{}"), ("meta.json", b'{"evil": 1}')])
    refused(tmp_path, archive, "ARCHIVE_UNSAFE", "duplicate")


def test_case_only_difference_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "case.zip", [("meta.json", b"{}"), ("Meta.JSON", b"{}")])
    refused(tmp_path, archive, "ARCHIVE_UNSAFE", "only in case")


def test_file_and_folder_clash_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "clash.zip", [("app", b"x"), ("app/x.py", b"y")])
    refused(tmp_path, archive, "ARCHIVE_UNSAFE", "both a file and a folder")


def test_non_utf8_name_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "enc.zip", [("meta.json", b"{}"), ("cafX.txt", b"x")])
    raw = archive.read_bytes()
    assert raw.count(b"cafX.txt") == 2  # local header and central directory
    archive.write_bytes(raw.replace(b"cafX.txt", b"caf\xe9.txt"))
    refused(tmp_path, archive, "ARCHIVE_UNSAFE", "UTF-8")


def test_utf8_names_accepted(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "ok.zip", [("meta.json", b"{}"), ("café/naïve.txt", b"x")])
    extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out" / "café" / "naïve.txt").read_bytes() == b"x"


#: Names Linux takes but some site's system cannot (entry -> what the refusal says).
NOT_PORTABLE = {
    "app/custom/CON": "device name",
    "app/custom/aux.py": "device name",
    "nul.txt": "device name",
    "app/COM1/x.py": "device name",
    "app/custom/lpt9.tar.gz": "device name",
    "app/custom/Com\u00b2": "device name",
    "app/custom/train.py.": "ends with a dot",
    "notes.txt ": "ends with a dot or a space",
    "app/custom/a:b.py": ":",
    "a<b": "<",
    "a>b": ">",
    'a"b': '"',
    "a|b": "|",
    "a?b": "?",
    "a*b": "*",
    "app/custom/x\x1b[31m.py": "control",
    "app/custom/x\u0085.py": "control",
}


@pytest.mark.parametrize("name", sorted(NOT_PORTABLE), ids=repr)
def test_names_some_site_cannot_hold_are_refused_naming_the_entry(tmp_path: Path, name: str) -> None:
    archive = make_zip(tmp_path / "bad.zip", [("meta.json", b"{}"), (name, b"x")])
    err = refused(tmp_path, archive, "ARCHIVE_UNSAFE", NOT_PORTABLE[name])
    assert entry_of(err) == name


@pytest.mark.parametrize("name", ["console.py", "auxiliary/x.py", "con_fig.json", "com10", "a.b.c", "nully"])
def test_names_that_only_look_like_device_names_are_accepted(name: str) -> None:
    assert all(portable_name_problem(part) is None for part in name.split("/"))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("app/custom/A.py", "app/custom/a.py"),
        ("caf\u00e9.py", "cafe\u0301.py"),  # NFC and NFD of one name: one file on macOS
        ("Caf\u00e9/x.py", "cafe\u0301/y.py"),  # folders collide too
        ("stra\u00dfe.txt", "STRASSE.txt"),  # case folding beyond ASCII
    ],
    ids=repr,
)
def test_names_that_are_one_name_on_another_disk_are_refused(tmp_path: Path, first: str, second: str) -> None:
    assert portable_key(first.split("/")[0]) == portable_key(second.split("/")[0])
    archive = make_zip(tmp_path / "twins.zip", [("meta.json", b"{}"), (first, b"1"), (second, b"2")])
    err = refused(tmp_path, archive, "ARCHIVE_UNSAFE", "only in case or Unicode form")
    assert entry_of(err) == second


@pytest.mark.parametrize("name", sorted(NOT_PORTABLE), ids=repr)
def test_a_job_folder_with_such_a_name_is_refused_before_zipping(tmp_path: Path, name: str) -> None:
    """The CLI lists a folder with iter_folder_files before it zips and uploads it."""
    job = make_job(tmp_path / "job")
    (job / name).parent.mkdir(parents=True, exist_ok=True)
    (job / name).write_text("x")
    with pytest.raises(ShoalError) as err:
        iter_folder_files(job)
    entry = entry_of(err.value)
    assert err.value.code == "ARCHIVE_UNSAFE" and name.startswith(entry), entry  # the file or its folder


def test_a_job_folder_with_twin_names_is_refused(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    (job / "app" / "custom" / "Train.py").write_text("x")
    (job / "caf\u00e9").mkdir()
    with pytest.raises(ShoalError) as err:
        iter_folder_files(job)
    assert entry_of(err.value) in ("app/custom/Train.py", "app/custom/train.py")
    (job / "app" / "custom" / "Train.py").unlink()
    (job / "cafe\u0301").mkdir()
    with pytest.raises(ShoalError) as err:
        zip_folder(job, tmp_path / "job.zip")
    assert err.value.code == "ARCHIVE_UNSAFE" and "caf" in entry_of(err.value)
    assert not (tmp_path / "job.zip").exists()


def test_not_a_zip_refused(tmp_path: Path) -> None:
    archive = tmp_path / "junk.zip"
    archive.write_bytes(b"this is not a zip" * 100)
    refused(tmp_path, archive, "ARCHIVE_UNSAFE", "not a readable zip")


def test_too_many_entries_refused_fast(tmp_path: Path) -> None:
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(100_000):
            zf.writestr(f"f{i}", b"")
    start = time.perf_counter()
    err = refused(tmp_path, archive, "ARCHIVE_UNSAFE", "100000 entries")
    assert time.perf_counter() - start < 0.5
    assert "10000" in str(err)


def test_zip_bomb_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "bomb.zip", [("meta.json", b"{}"), ("app/zeros.bin", b"\0" * (20 * 2**20))])
    assert archive.stat().st_size < 100_000
    refused(tmp_path, archive, "ARCHIVE_UNSAFE", "zip bomb")


def test_many_small_compressible_members_bomb_refused(tmp_path: Path) -> None:
    entries: list[tuple[str | zipfile.ZipInfo, bytes]] = [(f"z{i}", b"\0" * 900_000) for i in range(20)]
    refused(tmp_path, make_zip(tmp_path / "bomb.zip", entries), "ARCHIVE_UNSAFE", "overall compression ratio")


def test_declared_total_past_limit(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "big.zip", [(f"f{i}", os.urandom(4096)) for i in range(10)])
    refused(tmp_path, archive, "UPLOAD_TOO_LARGE", "inflates past", max_total_bytes=20_000)


def test_ten_megabyte_meta_json_refused_by_member_limit(tmp_path: Path) -> None:
    big = b'{"name": "x", "pad": "' + os.urandom(5 * 2**20).hex().encode() + b'"}'
    assert len(big) > 10 * 2**20
    archive = make_zip(tmp_path / "meta.zip", [("meta.json", big)])
    err = refused(tmp_path, archive, "UPLOAD_TOO_LARGE", "meta.json", max_member_bytes=2**20)
    assert "limit is 1048576" in str(err)


def test_lying_declared_size_refused(tmp_path: Path) -> None:
    """A member that inflates past its declared size is caught while writing, not trusted."""
    archive = make_zip(tmp_path / "liar.zip", [("meta.json", b"{}"), ("data.txt", b"a" * 5000)])
    raw = bytearray(archive.read_bytes())
    for sig, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = -1
        while (pos := raw.find(sig, pos + 1)) >= 0:
            name_len = int.from_bytes(raw[pos + (26 if sig == b"PK\x03\x04" else 28) :][:2], "little")
            name_at = pos + (30 if sig == b"PK\x03\x04" else 46)
            if bytes(raw[name_at : name_at + name_len]) == b"data.txt":
                raw[pos + size_at : pos + size_at + 4] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(raw))
    assert inspect_archive(archive)  # declared sizes look harmless
    out = tmp_path / "out"
    with pytest.raises(ShoalError) as err:
        extract_archive(archive, out)
    assert err.value.code == "ARCHIVE_UNSAFE"
    assert not out.exists()
    with pytest.raises(ShoalError):
        content_hash_of_archive(archive)
