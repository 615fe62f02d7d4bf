"""Startup kit layout and contents, and rewriting the server port in every kit."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from shoal.errors import ShoalError
from shoal.provision.ca import CertificateAuthority, create_ca
from shoal.provision.kits import set_server_port, write_admin_kit, write_server_kit, write_site_kit

PROJECT, ORG, PORT = "example_project", "example.org", 47123


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return create_ca(PROJECT)


@pytest.fixture
def kits(tmp_path: Path, ca: CertificateAuthority) -> Path:
    kits = tmp_path / "kits"
    write_server_kit(kits, ca, project=PROJECT, org=ORG, port=PORT, sites=["site-1"])
    write_site_kit(kits, ca, name="site-1", project=PROJECT, org=ORG, port=PORT)
    write_admin_kit(
        kits, ca, name="admin@example.com", role="project_admin", project=PROJECT, org=ORG, port=PORT
    )
    return kits


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def read(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_text())
    return data


def cert_field(path: Path, oid: x509.ObjectIdentifier) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(oid)]


def test_layout_is_exactly_one_folder_per_participant(kits: Path) -> None:
    assert files(kits) == {
        "server",
        "server/startup",
        "server/startup/fed_server.json",
        "server/startup/server.crt",
        "server/startup/server.key",
        "server/startup/rootCA.pem",
        "server/startup/start.sh",
        "server/startup/shoal-server.service",
        "server/README.md",
        "server/local",
        "server/local/authorization.json",
        "site-1",
        "site-1/startup",
        "site-1/startup/fed_site.json",
        "site-1/startup/client.crt",
        "site-1/startup/client.key",
        "site-1/startup/rootCA.pem",
        "site-1/startup/start.sh",
        "site-1/startup/shoal-site.service",
        "site-1/README.md",
        "site-1/local",
        "site-1/local/site_policy.json",
        "admin@example.com",
        "admin@example.com/startup",
        "admin@example.com/startup/fed_admin.json",
        "admin@example.com/startup/client.crt",
        "admin@example.com/startup/client.key",
        "admin@example.com/startup/rootCA.pem",
        "admin@example.com/startup/start.sh",
        "admin@example.com/README.md",
    }


def test_kit_descriptions(kits: Path) -> None:
    server = {"host": "127.0.0.1", "port": PORT}
    assert read(kits / "server/startup/fed_server.json") == {
        "kind": "server",
        "project": PROJECT,
        "name": "server",
        **server,
        "sites": ["site-1"],
    }
    assert read(kits / "site-1/startup/fed_site.json") == {
        "kind": "site",
        "project": PROJECT,
        "name": "site-1",
        "org": ORG,
        "server": server,
    }
    assert read(kits / "admin@example.com/startup/fed_admin.json") == {
        "kind": "admin",
        "project": PROJECT,
        "name": "admin@example.com",
        "org": ORG,
        "role": "project_admin",
        "server": server,
    }
    assert read(kits / "site-1/local/site_policy.json") == {
        "allow_custom_code": True,
        "allow_log_streaming": True,
        "studies": None,
    }
    assert "project_admin" in json.dumps(read(kits / "server/local/authorization.json"))


def test_every_kit_carries_the_ca_but_never_its_key(kits: Path, ca: CertificateAuthority) -> None:
    for kit in ("server", "site-1", "admin@example.com"):
        assert (kits / kit / "startup/rootCA.pem").read_bytes() == ca.cert_pem
    assert not [p for p in kits.rglob("*") if "rootCA.key" in p.name]
    for key in kits.rglob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert b"ENCRYPTED" not in key.read_bytes()


def test_certificates_match_their_kits(kits: Path) -> None:
    assert cert_field(kits / "server/startup/server.crt", NameOID.ORGANIZATIONAL_UNIT_NAME) == ["server"]
    assert cert_field(kits / "site-1/startup/client.crt", NameOID.COMMON_NAME) == ["site-1"]
    assert cert_field(kits / "site-1/startup/client.crt", NameOID.ORGANIZATIONAL_UNIT_NAME) == ["site"]
    admin = kits / "admin@example.com/startup/client.crt"
    assert cert_field(admin, NameOID.COMMON_NAME) == ["admin@example.com"]
    assert cert_field(admin, NameOID.TITLE) == ["project_admin"]
    assert cert_field(admin, NameOID.ORGANIZATION_NAME) == [ORG]


def test_set_server_port_rewrites_every_kit_and_skips_other_folders(kits: Path) -> None:
    (kits / "notes").mkdir()
    (kits / "README").write_text("not a kit")
    changed = set_server_port(kits, 50001)
    assert sorted(changed) == ["admin@example.com", "server", "site-1"]
    assert read(kits / "server/startup/fed_server.json")["port"] == 50001
    for kit, name in (("site-1", "fed_site.json"), ("admin@example.com", "fed_admin.json")):
        data = read(kits / kit / "startup" / name)
        assert data["server"] == {"host": "127.0.0.1", "port": 50001}
        assert data["kind"] in ("site", "admin")
    assert not [p for p in kits.rglob(".*")], "no temporary files are left behind"


def test_set_server_port_changes_nothing_when_a_kit_is_damaged(kits: Path) -> None:
    (kits / "site-1/startup/fed_site.json").write_text("{broken")
    with pytest.raises(ShoalError) as err:
        set_server_port(kits, 50002)
    assert err.value.code == "STARTUP_KIT_MISSING"
    assert read(kits / "server/startup/fed_server.json")["port"] == PORT


def test_set_server_port_refuses_a_port_out_of_range(kits: Path) -> None:
    with pytest.raises(ShoalError) as err:
        set_server_port(kits, 70000)
    assert err.value.code == "INVALID_ARGS"


@pytest.mark.parametrize("name", ["", ".", "..", "../escape", "a/b"])
def test_participant_names_must_be_plain_folder_names(
    tmp_path: Path, ca: CertificateAuthority, name: str
) -> None:
    with pytest.raises(ShoalError) as err:
        write_site_kit(tmp_path / "kits", ca, name=name, project=PROJECT, org=ORG, port=PORT)
    assert err.value.code == "INVALID_ARGS"
    assert not (tmp_path / "escape").exists()
