"""The project CA and the certificates it signs (ECDSA P-256).

Everything shoal trusts rests on this CA: TLS accepts only certificates it signed, and the
server reads a caller's identity from the subject (CN=name, O=org, OU=kind, title=role).
Only the provisioning package imports cryptography; the CLI's hot path never does.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shoal.errors import ShoalError
from shoal.security.identity import ADMIN_ROLES, KINDS

DEFAULT_DAYS = 365
CA_DAYS = 3650  # the CA outlives the leaves it signs, so re-issuing a kit never needs a new CA
_CLOCK_SKEW = dt.timedelta(minutes=5)  # a freshly issued cert must verify on a host whose clock lags


@dataclass(frozen=True)
class CertificateAuthority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def create_ca(project: str, days: int = CA_DAYS) -> CertificateAuthority:
    """A self-signed CA named after the project (CN), allowed to sign leaves only (path length 0)."""
    if not project.strip():
        raise ShoalError("INVALID_ARGS", "the project name must not be empty")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, project)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(key, cert)


def _check_subject(name: str, org: str, kind: str, role: str | None) -> None:
    if kind not in KINDS:
        raise ShoalError("INVALID_ARGS", f"unknown participant kind {kind!r}; use one of {', '.join(KINDS)}")
    if not name.strip() or not org.strip():
        raise ShoalError("INVALID_ARGS", "a certificate needs a non-empty name and org")
    if kind == "admin" and role not in ADMIN_ROLES:
        raise ShoalError(
            "INVALID_ARGS", f"admin role {role!r} is not one of {', '.join(ADMIN_ROLES)}", role=role
        )
    if kind != "admin" and role is not None:
        raise ShoalError("INVALID_ARGS", f"only admin certificates carry a role, not {kind} ones")


def _server_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """localhost and 127.0.0.1 always (POC and tests dial those), then the given hosts, deduplicated."""
    names: list[x509.GeneralName] = []
    for host in ("localhost", "127.0.0.1", *hosts):
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            entry = x509.DNSName(host)
        if entry not in names:
            names.append(entry)
    return names


def issue_cert(
    ca: CertificateAuthority,
    *,
    name: str,
    org: str,
    kind: str,
    role: str | None = None,
    hosts: Iterable[str] = (),
    days: int = DEFAULT_DAYS,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf certificate: CN=name, O=org, OU=kind (server/site/admin), title=role for admins.

    Server certificates name their hosts (SAN) and may only authenticate servers; site and
    admin certificates may only authenticate clients, so a site key cannot pose as the server.
    ``not_before``/``not_after`` override the validity window (tests make expired certs).
    """
    _check_subject(name, org, kind, role)
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [
        x509.NameAttribute(NameOID.COMMON_NAME, name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind),
    ]
    if role is not None:
        attrs.append(x509.NameAttribute(NameOID.TITLE, role))
    now = _now()
    start = not_before or now - _CLOCK_SKEW
    end = not_after or now + dt.timedelta(days=days)
    if end <= start:
        raise ShoalError("INVALID_ARGS", "a certificate must end after it starts")
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if kind == "server":
        builder = builder.add_extension(x509.SubjectAlternativeName(_server_names(hosts)), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return key, builder.sign(ca.key, hashes.SHA256())


def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    """PEM, unencrypted (services start unattended), mode 0600 from the first byte.

    fchmod as well as the open mode: O_CREAT's mode is ignored when the file already exists.
    """
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)


def write_cert(cert: x509.Certificate, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def save_ca(ca: CertificateAuthority, folder: Path) -> None:
    """``rootCA.pem`` and ``rootCA.key``; the key stays with the provisioner, never in a kit."""
    write_cert(ca.cert, folder / "rootCA.pem")
    write_key(ca.key, folder / "rootCA.key")


def load_ca(folder: Path) -> CertificateAuthority:
    """The CA that :func:`save_ca` wrote to ``folder`` (to issue more kits later)."""
    try:
        cert = x509.load_pem_x509_certificate((folder / "rootCA.pem").read_bytes())
        key = serialization.load_pem_private_key((folder / "rootCA.key").read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ShoalError(
            "POC_NOT_PREPARED",
            f"cannot load the CA from {folder}: {exc}",
            hint="The CA files are missing or damaged; prepare the workspace again with --force.",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ShoalError("POC_NOT_PREPARED", f"the CA key in {folder} is not an EC key")
    return CertificateAuthority(key, cert)
