"""The host's way of taking files out of a job's folder: links, FIFOs, hard links and folders
swapped for links are refused, never followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shoal.sandbox.files import UnsafeJobFile, claim, give, harvest, relative_inside, remove_tree


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "host" / "key.pem"
    path.parent.mkdir()
    path.write_text("PRIVATE KEY")
    return path


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    work, mine = tmp_path / "work", tmp_path / "mine"
    work.mkdir()
    mine.mkdir()
    return work, mine


def test_a_regular_file_is_claimed(dirs: tuple[Path, Path]) -> None:
    work, mine = dirs
    (work / "sub").mkdir()
    (work / "sub" / "r.bin").write_bytes(b"update")
    got = claim(work, str(work / "sub" / "r.bin"), mine / "taken")
    assert got.read_bytes() == b"update" and not (work / "sub" / "r.bin").exists()


def test_a_link_to_a_host_file_is_refused_and_the_file_stays(dirs: tuple[Path, Path], secret: Path) -> None:
    work, mine = dirs
    (work / "r.bin").symlink_to(secret)
    with pytest.raises(UnsafeJobFile, match="not a regular file"):
        claim(work, "r.bin", mine / "taken")
    assert secret.read_text() == "PRIVATE KEY" and not (mine / "taken").exists()


def test_a_hard_link_is_refused(dirs: tuple[Path, Path], secret: Path) -> None:
    work, mine = dirs
    os.link(secret, work / "r.bin")
    with pytest.raises(UnsafeJobFile, match="hard link"):
        claim(work, "r.bin", mine / "taken")
    assert secret.read_text() == "PRIVATE KEY" and not (mine / "taken").exists()


def test_a_fifo_is_refused_without_blocking(dirs: tuple[Path, Path]) -> None:
    work, mine = dirs
    os.mkfifo(work / "r.bin")
    with pytest.raises(UnsafeJobFile):
        claim(work, "r.bin", mine / "taken")


def test_a_folder_on_the_way_that_is_a_link_is_refused(dirs: tuple[Path, Path], secret: Path) -> None:
    """The job swaps a folder of the path for a link to the host's: the walk refuses it, so the
    host's own file is never moved out from under it."""
    work, mine = dirs
    (work / "sub").symlink_to(secret.parent, target_is_directory=True)
    with pytest.raises(UnsafeJobFile, match="not a plain folder"):
        claim(work, str(work / "sub" / "key.pem"), mine / "taken")
    assert secret.exists()


@pytest.mark.parametrize("named", ["../host/key.pem", "/etc/passwd", ".", ""])
def test_paths_outside_the_folder_are_refused_by_their_text(dirs: tuple[Path, Path], named: str) -> None:
    with pytest.raises(UnsafeJobFile):
        relative_inside(dirs[0], named)


def test_harvest_keeps_regular_files_and_refuses_the_rest(dirs: tuple[Path, Path], secret: Path) -> None:
    out, workspace = dirs
    (out / "model.bin").write_bytes(b"m")
    (out / "deep").mkdir()
    (out / "deep" / "metrics.json").write_text("{}")
    (out / "key.pem").symlink_to(secret)
    (out / "linked").symlink_to(secret.parent, target_is_directory=True)
    os.link(secret, out / "hard.pem")
    os.mkfifo(out / "pipe")
    (workspace / "server").mkdir()
    (workspace / "server" / "log.txt").write_text("the server's")
    (out / "server").mkdir()
    (out / "server" / "log.txt").write_text("forged")
    skipped = harvest(out, workspace)
    assert (workspace / "model.bin").read_bytes() == b"m"
    assert (workspace / "deep" / "metrics.json").read_text() == "{}"
    assert (workspace / "server" / "log.txt").read_text() == "the server's"
    for name in ("key.pem", "hard.pem", "pipe", "linked"):
        assert not (workspace / name).exists() and not (workspace / name).is_symlink()
        assert any(s.startswith(name) for s in skipped), skipped
    assert secret.read_text() == "PRIVATE KEY"


def test_harvest_leaves_the_servers_own_folders_alone(dirs: tuple[Path, Path]) -> None:
    """A workflow's output folder named like a site (or the server) would pass for its log."""
    out, workspace = dirs
    (out / "site-1").mkdir()
    (out / "site-1" / "log.txt").write_text("forged site log")
    (out / "server").write_text("a file named like the server's folder")
    (out / "model.bin").write_bytes(b"m")
    skipped = harvest(out, workspace, frozenset({"server", "site-1"}))
    assert not (workspace / "site-1").exists() and not (workspace / "server").exists()
    assert (workspace / "model.bin").exists() and len(skipped) == 2, skipped


def _nest(root: Path, depth: int) -> None:
    """``depth`` folders inside each other (deeper than a path may be long, or Python recurse)."""
    fd = os.open(root, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


def test_harvest_is_bounded_in_depth(dirs: tuple[Path, Path]) -> None:
    """A job's 3,000 nested folders made the host's walk raise RecursionError (its job then
    never settled); the walk stops at HARVEST_DEPTH and says so."""
    out, workspace = dirs
    (out / "model.bin").write_bytes(b"m")
    _nest(out, 3000)
    try:
        skipped = harvest(out, workspace)
    finally:
        remove_tree(out)  # pytest's own clean-up of tmp_path recurses (shutil.rmtree) and would fail
    assert (workspace / "model.bin").exists()
    assert any("deeper than" in s for s in skipped), skipped


def test_remove_tree_takes_any_depth_and_follows_no_link(tmp_path: Path, secret: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    _nest(job, 3000)
    (job / "key-link").symlink_to(secret)
    (job / "dir-link").symlink_to(secret.parent, target_is_directory=True)
    (job / "flat").mkdir()
    for i in range(50):
        (job / "flat" / f"f{i}").write_text("x")
    remove_tree(job)
    assert not job.exists() and secret.read_text() == "PRIVATE KEY"
    remove_tree(job)  # already gone: nothing to do


# --- give: a host's file handed to the job to write over (decisions/0054) -----------------------


def test_give_moves_the_file_in_and_replaces_a_link_without_writing_through(
    dirs: tuple[Path, Path], secret: Path
) -> None:
    """A job that left a link under the spare's name gets the link replaced: the file the link
    named (the host's key here) is neither written nor removed."""
    work, mine = dirs
    (work / "spare").symlink_to(secret)
    released = mine / "result"
    released.write_bytes(b"an update the job already read")
    assert give(released, work, "spare")
    assert not released.exists()
    assert (
        not (work / "spare").is_symlink()
        and (work / "spare").read_bytes() == b"an update the job already read"
    )
    assert secret.read_text() == "PRIVATE KEY"
    assert (work / "spare").stat().st_mode & 0o777 == 0o600


def test_give_to_a_name_that_is_a_folder_keeps_nothing(dirs: tuple[Path, Path]) -> None:
    """The host never keeps a file it gave up: when the job's folder cannot take it, it goes."""
    work, mine = dirs
    (work / "spare").mkdir()
    (work / "spare" / "x").write_text("job's own")
    released = mine / "result"
    released.write_bytes(b"bytes")
    assert not give(released, work, "spare")
    assert not released.exists()
    assert (work / "spare" / "x").read_text() == "job's own"
