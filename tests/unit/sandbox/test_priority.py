"""How a session's scheduling group is read from the kernel's autogroup file."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.sandbox import priority


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("/autogroup-112589 nice 7\n", 7),
        # init's session (a container's or a CI runner's processes) is the root group: the kernel
        # shows an empty file, and the root group weighs as nice 0. CI ran in it and read None.
        ("", 0),
        ("garbled\n", None),
    ],
)
def test_a_sessions_group_nice_is_read_from_its_autogroup_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, expected: int | None
) -> None:
    (tmp_path / "42").write_text(content)
    monkeypatch.setattr(priority, "AUTOGROUP", str(tmp_path / "{pid}"))
    assert priority.session_nice(42) == expected


def test_without_autogroups_there_is_no_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(priority, "AUTOGROUP", str(tmp_path / "{pid}"))  # no such file
    assert priority.session_nice(42) is None
