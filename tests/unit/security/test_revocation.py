"""The deny list: strict at start, and while running a damaged file never un-revokes anyone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.errors import ShoalError
from shoal.security.identity import Identity
from shoal.security.revocation import DenyList

LEAD = Identity("lead@x.org", "x.org", "admin", "lead", serial="0A1B")


def test_a_damaged_list_is_refused_at_start_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "revoked.json"
    path.write_text(json.dumps({"names": "lead@x.org"}))  # a string: iterated, it revokes nobody
    with pytest.raises(ShoalError) as caught:
        DenyList(path).load()
    assert caught.value.code == "LOCAL_FILE_ERROR" and "'names'" in caught.value.message


@pytest.mark.parametrize("damaged", ['{"names": ["lead@', "", json.dumps({"names": "lead@x.org"}), "[]"])
def test_a_list_damaged_while_running_keeps_the_last_good_one(tmp_path: Path, damaged: str) -> None:
    path = tmp_path / "revoked.json"
    path.write_text(json.dumps({"names": ["lead@x.org"], "serials": ["1b"]}))
    deny = DenyList(path)
    deny.load()
    assert deny.reason(LEAD) is not None
    path.write_text(damaged)
    assert deny.reason(LEAD) is not None, "still revoked"
    assert deny.reason(Identity("lead@x.org", "x.org", "admin", "lead", serial="0A1B")) is not None
    path.write_text(json.dumps({"names": []}))
    assert deny.reason(LEAD) is None, "a good list takes effect again"


def test_serials_match_without_leading_zeros_or_case(tmp_path: Path) -> None:
    path = tmp_path / "revoked.json"
    path.write_text(json.dumps({"serials": ["00a1b"]}))
    deny = DenyList(path)
    deny.load()
    assert deny.reason(LEAD) == "certificate 0A1B is revoked"
