"""Numbers in request paths, queries and headers (shoal.server.context.small_number)."""

from __future__ import annotations

import pytest

from shoal.server.context import small_number


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0", 0), ("42", 42), ("1234567890123456", 1234567890123456), ("007", 7)],
)
def test_ascii_digits_within_the_length_are_numbers(raw: str, expected: int) -> None:
    assert small_number(raw, 16) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "-1", "+1", " 1", "1.0", "1e3", "\u0663", "\u00b9", "1" * 17, "9" * 5000, "0x10"],
    ids=repr,
)
def test_anything_else_is_none_without_converting_it(raw: str) -> None:
    """Thousands of digits would make int() raise (Python's limit on digit strings)."""
    assert small_number(raw, 16) is None
