"""How a site cuts a training script's long output lines into log.json records."""

from __future__ import annotations

import pytest

from shoal.site.job_logs import RECORD_MAX, _pieces, _utf8_boundary


@pytest.mark.parametrize("line", [b"x" * 100_000, ("é" * 70_000).encode(), ("a€" * 30_000).encode(), b""])
def test_a_line_is_cut_into_whole_characters_of_at_most_record_max(line: bytes) -> None:
    """Complete lines are cut too (only the unfinished tail was: a 100 KB line that arrived with
    its newline became one record)."""
    pieces = _pieces(line)
    assert b"".join(pieces) == line
    assert all(len(p) <= RECORD_MAX for p in pieces)
    for piece in pieces:
        piece.decode("utf-8")  # no character split between two records


@pytest.mark.parametrize(("text", "keeps"), [("ab", 2), ("aé", 3), ("a€", 4), ("a😀", 5)])
def test_a_cut_never_splits_a_character(text: str, keeps: int) -> None:
    data = text.encode()
    for end in range(1, len(data) + 1):
        cut = _utf8_boundary(data[:end])
        data[:cut].decode("utf-8")
        assert cut == end or end < keeps
