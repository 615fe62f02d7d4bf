"""The admin client's own percent-encoding agrees with urllib's (it avoids importing it)."""

from __future__ import annotations

import urllib.parse

import pytest

from shoal.api.client import _quote


@pytest.mark.parametrize(
    "value",
    ["12345", "default", "my study", "a/b?c=d&e#f", "100%", "ü-é_ß.~", "名前", "+plus", "", "\x00\x7f"],
)
def test_quote_matches_urllib(value: str) -> None:
    assert _quote(value) == urllib.parse.quote(value, safe="")
    assert urllib.parse.unquote(_quote(value)) == value
