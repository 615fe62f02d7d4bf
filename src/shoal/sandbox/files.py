"""How a host takes files from a folder its job's code can write.

The host (server or agent) is not confined; the job is, and can write its own folders. So a
path the job names, or a file it leaves, may be a symlink to the host's key, a hard link to it,
a FIFO that blocks a reader, or sit under a folder the job swapped for a symlink a moment
after the host looked. Reading or renaming such a path as the host would act on the host's
files with the host's rights. The rule here: the host never follows a path inside a job's
folder. It walks it from a folder the job cannot replace, one component at a time with
``O_NOFOLLOW``, moves the file into a folder of its own (``rename`` moves the link itself,
never its target), and only then looks at what it got: one regular file, with one link.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: How deep ``harvest`` goes into a job's output folder. A job can nest folders deeper than
#: Python's recursion limit (``os.fwalk`` recurses), which would stop the host's own code.
HARVEST_DEPTH = 32


class UnsafeJobFile(ValueError):
    """A job named or left a file the host will not take (outside its folder, a link, ...)."""


def relative_inside(root: Path, named: str) -> PurePosixPath:
    """``named`` (absolute, or relative to ``root``) as a path beneath ``root``, judged by its
    text alone: no ``..``, nothing outside, no empty or ``.`` components."""
    raw = os.path.normpath(os.path.join(str(root), named))
    try:
        rel = PurePosixPath(os.path.relpath(raw, str(root)))
    except ValueError as exc:
        raise UnsafeJobFile(f"{named!r} is not inside the job's folder") from exc
    if not rel.parts or rel.parts[0] in ("..", ".") or rel.is_absolute():
        raise UnsafeJobFile(f"{named[:200]!r} is not inside the job's folder")
    return rel


def claim(root: Path, named: str, dest: Path) -> Path:
    """Move the file ``named`` (beneath ``root``, a folder the job may write but not replace)
    to ``dest`` (in a folder the job cannot reach), and return ``dest`` once it is known to be
    one regular file with one link. Raises UnsafeJobFile (nothing is left at ``dest``) or
    FileNotFoundError."""
    rel = relative_inside(root, named)
    parent = _walk_dirs(root, rel.parts[:-1])
    try:
        target = os.open(dest.parent, _DIR_FLAGS)
        try:
            os.rename(rel.parts[-1], dest.name, src_dir_fd=parent, dst_dir_fd=target)
            _check_taken(target, dest)
        finally:
            os.close(target)
    finally:
        os.close(parent)
    return dest


def give(src: Path, root: Path, name: str) -> bool:
    """Move the host's file ``src`` into the job's folder ``root`` (a folder the job may write
    but not replace) as ``name``, for the job to write over (decisions/0054). ``root`` is opened
    without following a link and the rename replaces whatever the job left under ``name`` (a
    link is replaced, never written through); the file takes the folder's owner. False, with
    ``src`` removed, when it cannot be (``name`` is a folder there, another file system): the
    host never keeps a file it gave up."""
    try:
        target = os.open(root, _DIR_FLAGS)
    except OSError:
        src.unlink(missing_ok=True)
        return False
    try:
        owner = os.fstat(target)  # a root host's job runs as the job user, who owns its folder
        if os.stat(src).st_uid != owner.st_uid:
            os.chown(src, owner.st_uid, owner.st_gid)
        os.chmod(src, 0o600)
        os.rename(src, name, dst_dir_fd=target)
        return True
    except OSError:
        src.unlink(missing_ok=True)
        return False
    finally:
        os.close(target)


def harvest(src: Path, dest: Path, reserved: frozenset[str] = frozenset()) -> list[str]:
    """Move every regular file under ``src`` (a job's output folder) to the same place under
    ``dest`` (the host's), never replacing a file there, and never into a top-level name in
    ``reserved`` (the host's own folders there); returns what was left out, and why."""
    skipped: list[str] = []
    for folder, dirs, files, folder_fd in os.fwalk(src, follow_symlinks=False):
        rel = Path(folder).relative_to(src)
        if len(rel.parts) >= HARVEST_DEPTH and dirs:
            skipped.append(f"{rel}: folders deeper than {HARVEST_DEPTH} levels")
            dirs.clear()  # not walked into: the walk's depth stays bounded
        if rel.parts and rel.parts[0] in reserved:
            skipped += [f"{rel / name}: the server keeps {rel.parts[0]}/ for itself" for name in files]
            continue
        target_dir = dest / rel
        for name in dirs:
            if stat.S_ISLNK(os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode):
                skipped.append(f"{rel / name}: a link")
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
            if target_dir.is_symlink() or not target_dir.is_dir():
                raise OSError("not a folder")
        except OSError:
            skipped += [f"{rel / name}: no folder for it" for name in files]
            continue
        target_fd = os.open(target_dir, _DIR_FLAGS)
        try:
            for name in files:
                shown = str(rel / name)
                if not rel.parts and name in reserved:
                    skipped.append(f"{shown}: the server keeps that name for itself")
                    continue
                if os.path.lexists(target_dir / name):
                    skipped.append(f"{shown}: the server's own file has that name")
                    continue
                try:
                    os.rename(name, name, src_dir_fd=folder_fd, dst_dir_fd=target_fd)
                    _check_taken(target_fd, target_dir / name)
                except UnsafeJobFile as exc:
                    skipped.append(f"{shown}: {exc}")
                except OSError as exc:
                    skipped.append(f"{shown}: {exc.strerror or exc}")
        finally:
            os.close(target_fd)
    return skipped


def remove_tree(root: Path) -> None:
    """Remove ``root`` and everything beneath it, never following a link, with a loop rather than
    recursion and one descriptor at a time: a job can nest folders deeper than Python's recursion
    limit (``shutil.rmtree`` recurses on 3.11) and than any path can be long."""
    try:
        fd = os.open(root, _DIR_FLAGS)
    except FileNotFoundError:
        return
    below: list[str] = []  # the names from ``root`` down to the folder ``fd`` is
    try:
        while True:
            with os.scandir(fd) as entries:
                listed = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
            sub = next((name for name, is_dir in listed if is_dir), None)
            for name, is_dir in listed:
                if not is_dir:
                    os.unlink(name, dir_fd=fd)
            if sub is not None:
                child = os.open(sub, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
                below.append(sub)
                continue
            if not below:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(below.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(root)


def _walk_dirs(root: Path, parts: tuple[str, ...]) -> int:
    """A descriptor of ``root/parts...``, every step refusing a symlink."""
    fd = os.open(root, _DIR_FLAGS)
    for part in parts:
        try:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            os.close(fd)
            raise UnsafeJobFile(f"{part!r} on the way is not a plain folder ({exc.strerror})") from exc
        os.close(fd)
        fd = nxt
    return fd


def _check_taken(dir_fd: int, dest: Path) -> None:
    """What a rename brought into the host's folder: one regular file with one link, or gone."""
    info = os.stat(dest.name, dir_fd=dir_fd, follow_symlinks=False)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "not a regular file (a link, a pipe or a device)"
    elif info.st_nlink != 1:
        problem = "a file with other names (a hard link)"
    if problem is not None:
        os.unlink(dest.name, dir_fd=dir_fd)
        raise UnsafeJobFile(problem)
