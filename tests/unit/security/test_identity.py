"""Identity from the dict ``ssl.SSLSocket.getpeercert()`` returns (the real handshake is in test_tls.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from shoal.errors import ShoalError
from shoal.security.identity import Identity, identity_from_peercert


def peercert(*pairs: tuple[str, str], serial: str = "1A2B") -> dict[str, Any]:
    """The shape getpeercert() produces: one single-attribute RDN per field."""
    return {
        "subject": tuple(((key, value),) for key, value in pairs),
        "issuer": ((("commonName", "example_project"),),),
        "serialNumber": serial,
        "notAfter": "Nov 22 00:00:00 2027 GMT",
    }


def test_admin_identity_has_name_org_kind_role_and_serial() -> None:
    who = identity_from_peercert(
        peercert(
            ("commonName", "lead@example.org"),
            ("organizationName", "example.org"),
            ("organizationalUnitName", "admin"),
            ("title", "lead"),
        )
    )
    assert who == Identity(
        name="lead@example.org",
        org="example.org",
        kind="admin",
        role="lead",
        serial="1A2B",
        not_after=1826841600.0,  # the peercert's notAfter, for expiry warnings
    )


def test_site_identity_has_no_role_even_if_the_certificate_carries_a_title() -> None:
    who = identity_from_peercert(
        peercert(
            ("commonName", "site-1"),
            ("organizationName", "hospital.org"),
            ("organizationalUnitName", "site"),
            ("title", "project_admin"),
        )
    )
    assert (who.name, who.org, who.kind, who.role) == ("site-1", "hospital.org", "site", None)


def test_attributes_in_one_multi_valued_rdn_are_read_too() -> None:
    cert = {"subject": ((("commonName", "server"), ("organizationalUnitName", "server")),)}
    assert identity_from_peercert(cert) == Identity("server", "", "server", None)


def test_identity_is_frozen() -> None:
    who = Identity("a", "o", "site", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        who.name = "b"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("cert", "needle"),
    [
        (None, "no verified certificate"),
        ({}, "no verified certificate"),
        (peercert(("organizationalUnitName", "site")), "CN or OU"),
        (peercert(("commonName", "site-1")), "CN or OU"),
        (peercert(("commonName", " "), ("organizationalUnitName", "site")), "CN or OU"),
        (peercert(("commonName", "x"), ("organizationalUnitName", "robot")), "'robot'"),
        (peercert(("commonName", "x"), ("organizationalUnitName", "admin")), "no role"),
        (
            peercert(("commonName", "x"), ("commonName", "y"), ("organizationalUnitName", "site")),
            "commonName more than once",
        ),
    ],
)
def test_certificates_that_do_not_name_a_participant_fail_authentication(
    cert: dict[str, Any] | None, needle: str
) -> None:
    with pytest.raises(ShoalError) as err:
        identity_from_peercert(cert)
    assert err.value.code == "AUTH_FAILED"
    assert err.value.exit_code == 2
    assert needle in err.value.message


@pytest.mark.parametrize("org", [None, "", "  "], ids=repr)
def test_an_admin_certificate_without_an_org_is_refused(org: str | None) -> None:
    """A job's owner is its submitter's name and org: an admin without an org cannot be one."""
    pairs = [("commonName", "lead@example.org"), ("organizationalUnitName", "admin"), ("title", "lead")]
    if org is not None:
        pairs.append(("organizationName", org))
    with pytest.raises(ShoalError) as caught:
        identity_from_peercert(peercert(*pairs))
    assert caught.value.code == "AUTH_FAILED"
