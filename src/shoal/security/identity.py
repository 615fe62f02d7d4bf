"""Who is on the other end of a TLS connection, read from the CA-signed peer certificate.

TLS has already checked the chain against the project CA before any of this runs, so the
subject can be trusted; this module only turns it into an :class:`Identity`. Standard
library only: the server imports it on every request, and provisioning shares its constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoal.errors import ShoalError

#: Participant kinds, carried in the certificate's OU.
KINDS = ("server", "site", "admin")
#: Admin roles, carried in the certificate's ``title``; security/policy.py maps them to rights.
ADMIN_ROLES = ("project_admin", "org_admin", "lead", "member")


@dataclass(frozen=True)
class Identity:
    name: str
    org: str
    kind: str  # server | site | admin (certificate OU)
    role: str | None  # admins only: project_admin | org_admin | lead | member (certificate title)
    serial: str = ""  # the certificate's serial number (hex), for the audit log and the deny list
    not_after: float | None = None  # when the certificate expires (epoch seconds), for warnings


def _subject_fields(peercert: dict[str, Any]) -> dict[str, str]:
    """Flatten the subject's RDNs; a repeated attribute is refused, because it has no one meaning."""
    fields: dict[str, str] = {}
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key in fields:
                raise ShoalError("AUTH_FAILED", f"the certificate subject holds {key} more than once")
            fields[key] = value
    return fields


def identity_from_peercert(peercert: dict[str, Any] | None) -> Identity:
    """Map the dict ``ssl.SSLSocket.getpeercert()`` returns to an Identity.

    A certificate without CN (name) or OU (kind) was not made by shoal provisioning, and an
    admin certificate without a role or an org (O) could not be authorized (a job's owner is
    its submitter's name and org), so these are AUTH_FAILED rather than being guessed at. Only
    admin certificates carry a role: a ``title`` on a site or server certificate is ignored so
    it can never grant admin rights.
    """
    if not peercert:
        raise ShoalError("AUTH_FAILED", "the peer presented no verified certificate")
    fields = _subject_fields(peercert)
    name = fields.get("commonName", "").strip()
    kind = fields.get("organizationalUnitName", "").strip()
    if not name or not kind:
        raise ShoalError(
            "AUTH_FAILED", "the certificate does not name a shoal participant (its CN or OU is missing)"
        )
    if kind not in KINDS:
        raise ShoalError(
            "AUTH_FAILED", f"the certificate's kind (OU) '{kind}' is not one of {', '.join(KINDS)}"
        )
    role = fields.get("title") if kind == "admin" else None
    if kind == "admin" and not role:
        raise ShoalError("AUTH_FAILED", "the admin certificate carries no role (title)")
    org = fields.get("organizationName", "")
    if kind == "admin" and not org.strip():
        raise ShoalError("AUTH_FAILED", "the admin certificate carries no organisation (O)")
    return Identity(
        name=name,
        org=org,
        kind=kind,
        role=role,
        serial=str(peercert.get("serialNumber", "")),
        not_after=_not_after(peercert),
    )


def _not_after(peercert: dict[str, Any]) -> float | None:
    """The certificate's end as epoch seconds (``ssl`` is loaded wherever a peercert exists)."""
    import ssl

    try:
        return float(ssl.cert_time_to_seconds(str(peercert["notAfter"])))
    except (KeyError, ValueError):
        return None
