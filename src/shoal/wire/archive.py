"""Job archives: deterministic zips out, hostile zips refused before a single byte lands.

A job archive comes from a client we authenticate but do not trust to be careful: it may hold
``../`` paths, links, devices, names that collide on a case-insensitive disk, or a few KiB
that inflate to gigabytes. Sites run other systems than the server, so a name must also be
one every site can hold (``portable_name_problem``): no Windows device names (``CON``,
``aux.py``), no trailing dots or spaces, none of ``<>:"|?*``, and no two names that are one
on a disk that ignores case or Unicode normalisation (``A.py``/``a.py``, NFC/NFD ``é``).
``inspect_archive`` checks every entry of the central directory before anything is written;
``extract_archive`` then writes into a private temp directory, counts the bytes it really
writes (declared sizes can lie), and only renames the result into place when everything
succeeded, so a refusal leaves nothing behind.

The content hash (``sha256:<hex>``) identifies a job's content for submit-token idempotency.
It is computed over files sorted by relative POSIX path, feeding for each file the 8-byte
big-endian length of its UTF-8 path, the path, the 8-byte big-endian length of its content,
and the content. A zip whose files all sit under one top-level folder is hashed without that
folder, so ``zip -r job.zip job/`` hashes like the folder ``job/``. Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import stat
import struct
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from shoal.errors import ShoalError

TYPE_CHECKING = False  # typing itself costs `job submit` ~7 ms of start-up
if TYPE_CHECKING:
    from typing import IO

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_TOTAL_BYTES = 512 * 2**20
DEFAULT_MAX_MEMBER_BYTES = 256 * 2**20
#: Deflate tops out near 1032:1; real job content (code, JSON, weights) stays far below 100:1.
DEFAULT_MAX_RATIO = 200
#: Members smaller than this are not ratio-checked: a small file of zeros is harmless.
_RATIO_MIN_BYTES = 1 << 20
_MAX_PATH_CHARS = 1024
_MAX_COMPONENT_BYTES = 255
_CHUNK = 1 << 20

#: Left out of archives and hashes: caches and VCS state are not part of a job.
SKIP_DIRS = frozenset({"__pycache__", ".git"})
SKIP_SUFFIXES = (".pyc",)
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)
_ALLOWED_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
_DRIVE = re.compile(r"^[A-Za-z]:")
#: Why two names are refused as one: on Windows and macOS they are one file or folder.
_TWIN = "differs only in case or Unicode form from"
#: Characters Windows refuses in a file name (the backslash is refused on its own, earlier).
_WINDOWS_FORBIDDEN = frozenset('<>:"|?*')
#: Windows device names: a file called so, with any extension (``aux.py``), opens the device.
_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$"}
    | {f"{port}{n}" for port in ("com", "lpt") for n in ("1", "2", "3", "4", "5", "6", "7", "8", "9")}
    | {f"{port}{n}" for port in ("com", "lpt") for n in ("0", "\u00b9", "\u00b2", "\u00b3")}
)


def _unsafe(entry: str, reason: str) -> ShoalError:
    """ARCHIVE_UNSAFE naming the entry in the message and, for programs, in ``data.entry``."""
    return ShoalError("ARCHIVE_UNSAFE", f"entry {entry!r}: {reason}", data={"entry": entry})


def portable_name_problem(part: str) -> str | None:
    """Why one path component cannot be a file name on every site's system, or None.

    The server and most sites run Linux, which takes almost any name; a site on Windows (or a
    user unpacking a download there) cannot create these, or creates something else: a
    device instead of ``nul.txt``, ``a.py`` for ``a.py.``. Control characters (C0 and C1)
    are refused too: they are not names, and they reach terminals through listings.
    """
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in part):
        return "name holds control characters"
    forbidden = sorted(set(part) & _WINDOWS_FORBIDDEN)
    if forbidden:
        return f"name holds {' '.join(forbidden)}, which Windows does not allow in file names"
    if part.endswith((".", " ")):
        return "name ends with a dot or a space, which Windows drops (a different file there)"
    if part.split(".", 1)[0].rstrip(" ").casefold() in _WINDOWS_DEVICES:
        return "name is a Windows device name (CON, PRN, AUX, NUL, COM1-9, LPT1-9), with any extension"
    return None


def portable_key(rel: str) -> str:
    """``rel`` as a disk that ignores case and Unicode normalisation sees it (Windows, macOS):
    two names with one key are one file there. ``unicodedata`` is loaded only for non-ASCII
    names, so the CLI's start-up does not pay for it."""
    if rel.isascii():
        return rel.lower()
    import unicodedata

    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", rel).casefold())


def _too_large(detail: str) -> ShoalError:
    return ShoalError("UPLOAD_TOO_LARGE", detail)


# --- writing ------------------------------------------------------------------------------


def _skipped(name: str, is_dir: bool) -> bool:
    return name in SKIP_DIRS if is_dir else name.endswith(SKIP_SUFFIXES)


def iter_folder_files(folder: Path) -> list[tuple[str, Path]]:
    """``(relative POSIX path, absolute path)`` of a folder's regular files, sorted by path.

    Symlinks anywhere are refused (ARCHIVE_UNSAFE): following them could pull files from
    outside the job into an upload; skipping them silently would change what the job means.
    """
    found: list[tuple[str, Path]] = []

    def walk(directory: Path, prefix: str) -> None:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        siblings: dict[str, str] = {}
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_symlink():
                raise _unsafe(rel, "symbolic links are not allowed in a job folder")
            is_dir = entry.is_dir(follow_symlinks=False)
            is_file = not is_dir and entry.is_file(follow_symlinks=False)
            if (is_dir or is_file) and _skipped(entry.name, is_dir):
                continue
            _check_portable(rel, entry.name, siblings)
            if is_dir:
                walk(Path(entry.path), rel + "/")
            elif is_file:
                found.append((rel, Path(entry.path)))
            else:
                raise _unsafe(rel, "only regular files and folders are allowed in a job folder")

    walk(Path(folder), "")
    found.sort(key=lambda item: item[0])
    return found


def _check_portable(rel: str, name: str, siblings: dict[str, str]) -> None:
    """Refuse a folder entry whose name is not UTF-8, not portable, or one with a sibling on a
    case- or normalisation-insensitive disk (``siblings``: key -> name, filled as we go). Two
    paths collide exactly when, at their first differing component, those siblings collide."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise _unsafe(rel, "file name is not valid UTF-8") from None
    problem = portable_name_problem(name)
    if problem is not None:
        raise _unsafe(rel, problem)
    key = portable_key(name)
    if key in siblings:
        raise _unsafe(rel, f"{_TWIN} {siblings[key]!r}")
    siblings[key] = name


def zip_folder(folder: Path, dest: Path) -> None:
    """Write a deterministic zip of ``folder``'s regular files to ``dest`` (written atomically).

    Deterministic (sorted names, fixed timestamps, fixed modes) so the same folder always
    gives the same bytes: uploads can be compared and cached. Member paths are relative to
    ``folder`` (no wrapper directory); ``__pycache__``, ``.git`` and ``*.pyc`` are left out.
    """
    files = iter_folder_files(folder)  # listed before dest exists, so dest never zips itself
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for rel, src in files:
                info = zipfile.ZipInfo(rel, date_time=_FIXED_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                mode = 0o755 if os.stat(src).st_mode & 0o111 else 0o644
                info.external_attr = (stat.S_IFREG | mode) << 16
                info.create_system = 3  # Unix, so the mode above is read back as such
                with open(src, "rb") as fin, zf.open(info, "w", force_zip64=True) as fout:
                    shutil.copyfileobj(fin, fout, _CHUNK)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


# --- inspecting ---------------------------------------------------------------------------


def _declared_entry_count(path: Path) -> int | None:
    """Entry count from the end-of-central-directory record, read without parsing the directory.

    Lets a 100,000-entry archive be refused in microseconds instead of after zipfile built
    100,000 objects. None when the record cannot be found (zipfile then decides).
    """
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            tail_len = min(size, 22 + 0xFFFF)
            f.seek(size - tail_len)
            tail = f.read(tail_len)
            i = tail.rfind(b"PK\x05\x06")
            if i < 0 or len(tail) - i < 22:
                return None
            total = int(struct.unpack("<H", tail[i + 10 : i + 12])[0])
            if total != 0xFFFF:
                return total
            j = i - 20  # zip64 end-of-central-directory locator
            if j < 0 or tail[j : j + 4] != b"PK\x06\x07":
                return None
            offset = int(struct.unpack("<Q", tail[j + 8 : j + 16])[0])
            f.seek(offset)
            record = f.read(56)
            if record[:4] != b"PK\x06\x06":
                return None
            return int(struct.unpack("<Q", record[32:40])[0])
    except (OSError, struct.error):
        return None


def _non_utf8_name(path: Path) -> str | None:
    """Best effort: the raw bytes (as repr) of the first entry name that is not UTF-8."""
    try:
        with zipfile.ZipFile(path) as zf:  # cp437 decodes any bytes: lets us find the offender
            for info in zf.infolist():
                raw = info.orig_filename.encode("cp437", errors="replace")
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    return repr(raw)
    except Exception:
        return None
    return None


def _open_zip(path: Path) -> zipfile.ZipFile:
    """Open with UTF-8 names; a name that is not UTF-8 is refused, named by its raw bytes."""
    try:
        return zipfile.ZipFile(path, metadata_encoding="utf-8")
    except UnicodeDecodeError:
        offender = _non_utf8_name(path)
        if offender is not None:
            raise _unsafe(offender, "entry name is not valid UTF-8") from None
        raise ShoalError("ARCHIVE_UNSAFE", "an entry name is not valid UTF-8") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise ShoalError("ARCHIVE_UNSAFE", f"not a readable zip archive: {exc}") from None


def _check_name(info: zipfile.ZipInfo) -> tuple[str, bool]:
    """Validate one entry's name and type; return ``(path without trailing '/', is_dir)``."""
    name = info.orig_filename
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name):
        raise _unsafe(name, "name holds control characters")
    if "\\" in name:
        raise _unsafe(name, "backslashes are not allowed in entry names")
    if name.startswith("/"):
        raise _unsafe(name, "absolute paths are not allowed")
    if _DRIVE.match(name):
        raise _unsafe(name, "drive-letter paths are not allowed")
    if len(name) > _MAX_PATH_CHARS:
        raise _unsafe(name[:80] + "...", "path is too long")
    is_dir = name.endswith("/")
    parts = (name[:-1] if is_dir else name).split("/")
    for part in parts:
        if part == "..":
            raise _unsafe(name, "'..' path components are not allowed")
        if part in ("", "."):
            raise _unsafe(name, "empty or '.' path components are not allowed")
        if len(part.encode("utf-8")) > _MAX_COMPONENT_BYTES:
            raise _unsafe(name, "a path component is too long")
        problem = portable_name_problem(part)
        if problem is not None:
            raise _unsafe(name, problem)
    mode = info.external_attr >> 16
    ftype = stat.S_IFMT(mode)
    if info.create_system == 3 and ftype:  # Unix-made entries carry st_mode; others do not
        if ftype == stat.S_IFLNK:
            raise _unsafe(name, "symbolic links are not allowed")
        if ftype == stat.S_IFDIR:
            if not is_dir:
                raise _unsafe(name, "directory entry without a trailing '/'")
        elif ftype != stat.S_IFREG:
            raise _unsafe(name, "device, pipe or other special files are not allowed")
        elif is_dir:
            raise _unsafe(name, "regular file entry with a trailing '/'")
    if info.flag_bits & 0x1:
        raise _unsafe(name, "encrypted entries are not allowed")
    if info.compress_type not in _ALLOWED_METHODS:
        raise _unsafe(name, f"compression method {info.compress_type} is not supported")
    return "/".join(parts), is_dir


def inspect_archive(
    path: Path,
    *,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> list[zipfile.ZipInfo]:
    """Check every entry before anything is extracted; return the regular-file entries.

    Refuses (ARCHIVE_UNSAFE, naming the entry and why): ``..``, absolute or drive-letter
    paths, backslashes, links, devices and other special files, names no site's system can
    hold (``portable_name_problem``), duplicate names, names that differ only in case or
    Unicode form or that are both a file and a folder, non-UTF-8 names, encrypted
    entries, too many entries, and a compression ratio past ``max_ratio`` (zip bombs).
    Refuses with UPLOAD_TOO_LARGE a member or a declared total past the size limits.
    """
    declared = _declared_entry_count(path)
    if declared is not None and declared > max_entries:
        raise ShoalError(
            "ARCHIVE_UNSAFE", f"the archive holds {declared} entries; the limit is {max_entries}"
        )
    with _open_zip(path) as zf:
        infos = zf.infolist()
    if len(infos) > max_entries:
        raise ShoalError(
            "ARCHIVE_UNSAFE", f"the archive holds {len(infos)} entries; the limit is {max_entries}"
        )
    seen: dict[str, str] = {}
    files: list[zipfile.ZipInfo] = []
    file_keys: set[str] = set()
    dirs: dict[str, str] = {}  # folder key -> its spelling: one folder must have one spelling
    total = compressed = 0
    for info in infos:
        rel, is_dir = _check_name(info)
        key = portable_key(rel)
        if key in seen:
            other = seen[key]
            why = "duplicate entry" if other == rel else f"{_TWIN} {other!r}"
            raise _unsafe(info.orig_filename, why)
        seen[key] = rel
        parts = rel.split("/")
        for i in range(1, len(parts) if not is_dir else len(parts) + 1):
            folder = "/".join(parts[:i])
            spelt = dirs.setdefault(portable_key(folder), folder)
            if spelt != folder:
                raise _unsafe(info.orig_filename, f"{_TWIN} {spelt!r}")
        if is_dir:
            continue
        file_keys.add(key)
        if info.file_size > max_member_bytes:
            raise _too_large(f"entry {rel!r} is {info.file_size} bytes; the limit is {max_member_bytes}")
        total += info.file_size
        compressed += info.compress_size
        if total > max_total_bytes:
            raise _too_large(f"the archive inflates past {max_total_bytes} bytes")
        if info.file_size > _RATIO_MIN_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
            ratio = info.file_size // max(info.compress_size, 1)
            raise _unsafe(rel, f"compression ratio {ratio}:1 exceeds {max_ratio:g}:1 (zip bomb)")
        files.append(info)
    if total > _RATIO_MIN_BYTES and total > max_ratio * max(compressed, 1):
        raise ShoalError("ARCHIVE_UNSAFE", f"overall compression ratio exceeds {max_ratio:g}:1 (zip bomb)")
    clash = file_keys & set(dirs)
    if clash:
        raise _unsafe(seen[min(clash)], "is both a file and a folder")
    return files


def wrapper_dir(names: Iterable[str]) -> str | None:
    """The one top-level folder every file path sits under, or None.

    When it exists there is no file at the root (so no root meta.json), and the job root is
    that folder: ``zip -r job.zip job/`` unpacks and hashes like the folder ``job/``.
    """
    first: str | None = None
    any_name = False
    for name in names:
        any_name = True
        head, sep, _ = name.partition("/")
        if not sep or (first is not None and head != first):
            return None
        first = head
    return first if any_name else None


def strip_wrapper_dir(names: Iterable[str]) -> list[str]:
    """File paths with the common wrapper folder removed (unchanged when there is none)."""
    names = list(names)
    top = wrapper_dir(names)
    if top is None:
        return names
    return [name[len(top) + 1 :] for name in names]


# --- extracting and hashing ---------------------------------------------------------------


def _member_paths(infos: list[zipfile.ZipInfo], strip_wrapper: bool) -> list[tuple[zipfile.ZipInfo, str]]:
    rels = [info.orig_filename for info in infos]
    if strip_wrapper:
        rels = strip_wrapper_dir(rels)
    return list(zip(infos, rels, strict=True))


def _copy_member(src: IO[bytes], out: IO[bytes], info: zipfile.ZipInfo, budget: int) -> int:
    """Copy one member, counting real bytes; refuse past the declared size or the budget."""
    written = 0
    while chunk := src.read(_CHUNK):
        written += len(chunk)
        if written > info.file_size:
            raise _unsafe(info.orig_filename, "inflates past its declared size")
        if written > budget:
            raise _too_large("the archive inflates past the size limit")
        out.write(chunk)
    if written != info.file_size:
        raise _unsafe(info.orig_filename, "is shorter than its declared size")
    return written


def extract_archive(
    path: Path,
    dest: Path,
    *,
    strip_wrapper: bool = False,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> list[str]:
    """Inspect, then extract into ``dest`` (which must not exist, or be empty); return the paths.

    Files are written into a private temp folder beside ``dest`` with ``O_EXCL|O_NOFOLLOW``
    and renamed to ``dest`` only when all succeeded: on any refusal ``dest`` is untouched.
    ``strip_wrapper`` drops a single top-level folder (see ``wrapper_dir``).
    """
    infos = inspect_archive(
        path,
        max_entries=max_entries,
        max_total_bytes=max_total_bytes,
        max_member_bytes=max_member_bytes,
        max_ratio=max_ratio,
    )
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"extraction target {dest} exists and is not an empty folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.partial"
    tmp.mkdir()
    written: list[str] = []
    try:
        budget = max_total_bytes
        with _open_zip(path) as zf:
            for info, rel in _member_paths(infos, strip_wrapper):
                target = tmp.joinpath(*rel.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                fd = os.open(target, flags, mode)
                with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                    budget -= _copy_member(src, out, info, budget)
                written.append(rel)
        if dest.exists():
            dest.rmdir()
        os.rename(tmp, dest)
    except zipfile.BadZipFile as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ShoalError("ARCHIVE_UNSAFE", f"the archive is corrupt: {exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def _feed(digest: hashlib._Hash, rel: str, size: int, chunks: Iterator[bytes]) -> int:
    path_bytes = rel.encode("utf-8")
    digest.update(len(path_bytes).to_bytes(8, "big"))
    digest.update(path_bytes)
    digest.update(size.to_bytes(8, "big"))
    fed = 0
    for chunk in chunks:
        fed += len(chunk)
        digest.update(chunk)
    return fed


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(_CHUNK):
        yield chunk


def content_hash_of_archive(path: Path, *, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> str:
    """``sha256:<hex>`` of an archive's files (wrapper folder stripped); inspects it first."""
    infos = inspect_archive(path, max_member_bytes=max_member_bytes)
    members = sorted(_member_paths(infos, strip_wrapper=True), key=lambda item: item[1])
    digest = hashlib.sha256()
    try:
        with _open_zip(path) as zf:
            for info, rel in members:
                with zf.open(info) as src:
                    if _feed(digest, rel, info.file_size, _chunks(src)) != info.file_size:
                        raise _unsafe(info.orig_filename, "content length differs from its declared size")
    except zipfile.BadZipFile as exc:
        raise ShoalError("ARCHIVE_UNSAFE", f"the archive is corrupt: {exc}") from None
    return "sha256:" + digest.hexdigest()


def content_hash_of_folder(folder: Path) -> str:
    """``sha256:<hex>`` of a folder's files, with the same skip rules as ``zip_folder``.

    Equal to ``content_hash_of_archive`` of ``zip_folder(folder)``, so the client and the
    server agree on a job's content hash.
    """
    digest = hashlib.sha256()
    for rel, src in iter_folder_files(folder):
        with open(src, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if _feed(digest, rel, size, _chunks(f)) != size:
                raise OSError(f"{src} changed while it was being hashed")
    return "sha256:" + digest.hexdigest()
