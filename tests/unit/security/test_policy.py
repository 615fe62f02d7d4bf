"""Who owns a job (shoal.security.policy): the submitter's certificate name AND organisation."""

from __future__ import annotations

import pytest

from shoal.errors import ShoalError
from shoal.security.identity import Identity
from shoal.security.policy import DEFAULT_POLICY, Policy

LEAD = Identity("lead@example.org", "example.org", "admin", "lead")
TWIN = Identity("lead@example.org", "other.org", "admin", "lead")
ORG_ADMIN = Identity("boss@example.org", "example.org", "admin", "org_admin")
OWN_RIGHTS = ("manage_job", "download_job", "clone_job", "view_logs")


def denied(who: Identity, right: str, owner: tuple[str, str]) -> bool:
    try:
        Policy(DEFAULT_POLICY).check(who, right, owner)
    except ShoalError as exc:
        assert exc.code == "NOT_AUTHORIZED"
        return True
    return False


@pytest.mark.parametrize("right", OWN_RIGHTS)
def test_the_submitter_is_name_and_org(right: str) -> None:
    assert not denied(LEAD, right, ("lead@example.org", "example.org"))
    assert denied(TWIN, right, ("lead@example.org", "example.org"))
    assert denied(LEAD, right, ("lead@example.org", "other.org"))


@pytest.mark.parametrize("right", OWN_RIGHTS)
def test_a_job_stored_without_an_org_is_nobodys_own_and_no_orgs(right: str) -> None:
    """The one rule for records whose submitter has no org: only ``any`` reaches them."""
    assert denied(LEAD, right, ("lead@example.org", ""))
    assert denied(Identity("lead@example.org", "", "admin", "lead"), right, ("lead@example.org", ""))
    assert denied(Identity("boss", "", "admin", "org_admin"), "manage_job", ("x", ""))
    assert not denied(Identity("root", "example.org", "admin", "project_admin"), right, ("x", ""))


def test_org_rights_follow_the_org_whatever_the_name() -> None:
    assert not denied(ORG_ADMIN, "manage_job", ("lead@example.org", "example.org"))
    assert denied(ORG_ADMIN, "manage_job", ("lead@example.org", "other.org"))


def test_a_listing_is_scoped_as_the_right_is() -> None:
    policy = Policy({"lead": {"view": "own"}, "org_admin": {"view": "org"}, "member": {"view": "any"}})
    assert policy.listing_scope(LEAD, "view") == ("lead@example.org", "example.org")
    assert policy.listing_scope(TWIN, "view") == ("lead@example.org", "other.org")
    assert policy.listing_scope(ORG_ADMIN, "view") == (None, "example.org")
    assert policy.listing_scope(Identity("m", "example.org", "admin", "member"), "view") == (None, None)
    with pytest.raises(ShoalError) as err:
        policy.listing_scope(Identity("x", "example.org", "admin", "auditor"), "view")
    assert err.value.code == "NOT_AUTHORIZED"
