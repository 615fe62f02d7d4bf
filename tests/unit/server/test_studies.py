"""Studies: who may use which, and what an unknown study's error tells the caller."""

from __future__ import annotations

import pytest

from shoal.errors import ShoalError
from shoal.security.identity import Identity
from shoal.server.studies import Studies

STUDIES = Studies(
    {
        "cancer": {"sites": ["site-1"], "admins": ["lead@x.org"]},
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
