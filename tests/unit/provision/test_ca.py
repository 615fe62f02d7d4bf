"""The project CA and the leaf certificates it issues: subject fields, extensions, chain, key files."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shoal.errors import ShoalError
from shoal.provision.ca import (
    CertificateAuthority,
    create_ca,
    issue_cert,
    load_ca,
    save_ca,
    write_cert,
    write_key,
)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return create_ca("example_project")


def subject(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(oid)]


def eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def client_verifier(store: verification.Store) -> verification.ClientVerifier:
    """Web-PKI client rules, except that SAN is optional: shoal identifies clients by subject, as OpenSSL
    (the TLS stack that actually checks them) allows."""
    ee = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
    )
    builder = verification.PolicyBuilder().store(store)
    builder = builder.extension_policies(
        ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee
    )
    return builder.build_client_verifier()


def test_ca_is_self_signed_p256_and_may_only_sign_certificates(ca: CertificateAuthority) -> None:
    cert = ca.cert
    assert subject(cert, NameOID.COMMON_NAME) == ["example_project"]
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    assert isinstance(ca.key.curve, ec.SECP256R1)
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is True
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert ca.cert_pem.startswith(b"-----BEGIN CERTIFICATE-----")


def test_server_cert_names_loopback_and_given_hosts_and_is_for_servers(ca: CertificateAuthority) -> None:
    key, cert = issue_cert(
        ca, name="server", org="example.org", kind="server", hosts=("fl.example.org", "10.0.0.7", "localhost")
    )
    assert subject(cert, NameOID.COMMON_NAME) == ["server"]
    assert subject(cert, NameOID.ORGANIZATION_NAME) == ["example.org"]
    assert subject(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) == ["server"]
    assert subject(cert, NameOID.TITLE) == []
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "fl.example.org"]  # no duplicate
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.7"),
    ]
    assert eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert isinstance(key.curve, ec.SECP256R1)
    assert cert.public_key() == key.public_key()


@pytest.mark.parametrize("role", ["project_admin", "org_admin", "lead", "member"])
def test_admin_cert_carries_its_role_as_title_and_is_for_clients(ca: CertificateAuthority, role: str) -> None:
    _, cert = issue_cert(ca, name="lead@example.org", org="example.org", kind="admin", role=role)
    assert subject(cert, NameOID.COMMON_NAME) == ["lead@example.org"]
    assert subject(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) == ["admin"]
    assert subject(cert, NameOID.TITLE) == [role]
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_site_cert_is_for_clients_without_role(ca: CertificateAuthority) -> None:
    _, cert = issue_cert(ca, name="site-1", org="hospital.org", kind="site")
    assert subject(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) == ["site"]
    assert subject(cert, NameOID.ORGANIZATION_NAME) == ["hospital.org"]
    assert subject(cert, NameOID.TITLE) == []
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_chain_verifies_with_cryptography_and_fails_against_another_ca(ca: CertificateAuthority) -> None:
    _, server = issue_cert(ca, name="server", org="example.org", kind="server")
    _, site = issue_cert(ca, name="site-1", org="example.org", kind="site")
    store = verification.Store([ca.cert])
    server_verifier = (
        verification.PolicyBuilder().store(store).build_server_verifier(x509.DNSName("localhost"))
    )
    chain = server_verifier.verify(server, [])
    assert chain[-1] == ca.cert
    assert client_verifier(store).verify(site, []).chain[-1] == ca.cert

    other = create_ca("someone_else")
    with pytest.raises(verification.VerificationError):
        client_verifier(verification.Store([other.cert])).verify(site, [])
    with pytest.raises(Exception):  # noqa: B017 - the signature check itself must fail
        site.verify_directly_issued_by(other.cert)


def test_default_validity_is_a_year_and_can_be_overridden(ca: CertificateAuthority) -> None:
    _, cert = issue_cert(ca, name="site-1", org="o", kind="site")
    life = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=364) < life <= dt.timedelta(days=365)
    assert cert.not_valid_before_utc <= dt.datetime.now(dt.UTC)

    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    _, expired = issue_cert(
        ca, name="site-1", org="o", kind="site", not_before=past - dt.timedelta(days=1), not_after=past
    )
    assert expired.not_valid_after_utc < dt.datetime.now(dt.UTC)
    with pytest.raises(verification.VerificationError):
        client_verifier(verification.Store([ca.cert])).verify(expired, [])


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"kind": "robot"}, "unknown participant kind"),
        ({"kind": "admin"}, "admin role None"),
        ({"kind": "admin", "role": "superuser"}, "admin role 'superuser'"),
        ({"kind": "site", "role": "lead"}, "only admin certificates carry a role"),
        ({"kind": "site", "name": " "}, "non-empty name and org"),
    ],
)
def test_bad_subjects_are_invalid_args(ca: CertificateAuthority, kwargs: dict[str, str], needle: str) -> None:
    args = {"name": "x", "org": "o", **kwargs}
    with pytest.raises(ShoalError) as err:
        issue_cert(ca, **args)  # type: ignore[arg-type]
    assert err.value.code == "INVALID_ARGS"
    assert needle in err.value.message


def test_window_that_ends_before_it_starts_is_refused(ca: CertificateAuthority) -> None:
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(ShoalError) as err:
        issue_cert(ca, name="x", org="o", kind="site", not_before=now, not_after=now - dt.timedelta(days=1))
    assert err.value.code == "INVALID_ARGS"


def test_empty_project_name_is_refused() -> None:
    with pytest.raises(ShoalError) as err:
        create_ca("  ")
    assert err.value.code == "INVALID_ARGS"


def test_keys_are_unencrypted_pem_with_mode_0600_even_over_an_existing_file(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    key, cert = issue_cert(ca, name="site-1", org="o", kind="site")
    target = tmp_path / "deep" / "client.key"
    target.parent.mkdir()
    target.write_text("old")
    target.chmod(0o644)
    write_key(key, target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    loaded = serialization.load_pem_private_key(target.read_bytes(), password=None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.public_key() == key.public_key()
    write_cert(cert, tmp_path / "client.crt")
    assert x509.load_pem_x509_certificate((tmp_path / "client.crt").read_bytes()) == cert


def test_save_and_load_ca_round_trip(ca: CertificateAuthority, tmp_path: Path) -> None:
    save_ca(ca, tmp_path / "ca")
    assert stat.S_IMODE((tmp_path / "ca" / "rootCA.key").stat().st_mode) == 0o600
    again = load_ca(tmp_path / "ca")
    assert again.cert == ca.cert
    _, cert = issue_cert(again, name="site-9", org="o", kind="site")
    cert.verify_directly_issued_by(ca.cert)


def test_load_ca_from_a_folder_without_one_is_a_shoal_error(tmp_path: Path) -> None:
    with pytest.raises(ShoalError) as err:
        load_ca(tmp_path)
    assert err.value.code == "POC_NOT_PREPARED"
