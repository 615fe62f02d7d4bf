"""Who is on the other end of a TLS connection, read from the CA-signed peer certificate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoal.errors import ShoalError

KINDS = ("server", "site", "admin")


@dataclass(frozen=True)
class Identity:
    name: str
    org: str
    kind: str  # server | site | admin (certificate OU)
    role: str | None  # admins only: project_admin | org_admin | lead | member (certificate title)
    serial: str = ""  # the certificate's serial number (hex), for the audit log and the deny list


def identity_from_peercert(peercert: dict[str, Any]) -> Identity:
    """Map the dict ``ssl.SSLSocket.getpeercert()`` returns to an Identity.

    TLS has already verified the chain against the project CA; this only reads the subject.
    """
    fields: dict[str, str] = {}
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            fields.setdefault(key, value)
    name = fields.get("commonName")
    kind = fields.get("organizationalUnitName")
    if not name or kind not in KINDS:
        raise ShoalError("AUTH_FAILED", "the certificate does not name a shoal participant (CN and OU)")
    return Identity(
        name=name,
        org=fields.get("organizationName", ""),
        kind=kind,
        role=fields.get("title"),
        serial=str(peercert.get("serialNumber", "")),
    )
