"""Studies: who may use which, and what an unknown study's error tells the caller."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.errors import ShoalError
from shoal.security.identity import Identity
from shoal.server.studies import Studies

STUDIES = Studies(
    {
        "cancer": {"sites": ["site-1"], "admins": [("lead@x.org", "x.org")]},
        "secret-trial": {"sites": ["site-2"], "orgs": ["other.org"]},
    }
)
LEAD = Identity("lead@x.org", "x.org", "admin", "lead")
PROJECT_ADMIN = Identity("admin@x.org", "x.org", "admin", "project_admin")


def _not_found(who: Identity) -> str:
    with pytest.raises(ShoalError) as caught:
        STUDIES.require("nope", who)
    assert caught.value.code == "STUDY_NOT_FOUND"
    return caught.value.message


def test_an_unknown_study_names_only_studies_the_caller_may_use() -> None:
    message = _not_found(LEAD)
    assert "cancer" in message and "default" in message and "secret-trial" not in message
    assert "secret-trial" in _not_found(PROJECT_ADMIN)


def test_membership_is_by_exact_name_or_org() -> None:
    assert STUDIES.require("cancer", LEAD) == "cancer"
    with pytest.raises(ShoalError) as caught:
        STUDIES.require("secret-trial", LEAD)
    assert caught.value.code == "NOT_AUTHORIZED"


def test_an_admin_is_a_name_and_an_org() -> None:
    """A same-named admin of another org is not the study's admin."""
    twin = Identity("lead@x.org", "other.org", "admin", "lead")
    with pytest.raises(ShoalError) as caught:
        STUDIES.require("cancer", twin)
    assert caught.value.code == "NOT_AUTHORIZED"


@pytest.mark.parametrize(
    ("admins", "says"),
    [
        (["lead@x.org"], "bare name"),
        ([{"name": "lead@x.org"}], "two non-empty strings"),
        ([{"name": "lead@x.org", "org": ""}], "two non-empty strings"),
        ([{"name": "lead@x.org", "org": "x.org", "role": "lead"}], "two non-empty strings"),
        ("lead@x.org", "must be a list"),
    ],
)
def test_admins_that_name_no_org_stop_the_server_naming_the_entry(
    tmp_path: Path, admins: object, says: str
) -> None:
    path = tmp_path / "studies.json"
    path.write_text(json.dumps({"studies": {"cancer": {"admins": admins}}}))
    with pytest.raises(ShoalError) as caught:
        Studies.load(path)
    assert caught.value.code == "LOCAL_FILE_ERROR" and says in caught.value.message
    assert "'studies.cancer.admins" in caught.value.message


def test_admins_with_their_org_are_read(tmp_path: Path) -> None:
    path = tmp_path / "studies.json"
    admins = [{"name": "lead@x.org", "org": "x.org"}]
    path.write_text(json.dumps({"studies": {"cancer": {"admins": admins}}}))
    studies = Studies.load(path)
    assert studies.require("cancer", LEAD) == "cancer"
    assert not studies.may_use("cancer", Identity("lead@x.org", "other.org", "admin", "lead"))
