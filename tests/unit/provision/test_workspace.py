"""Provisioning a workspace from a project file: first run, re-runs, re-issues, and refusals."""

from __future__ import annotations

import hashlib
import json
import stat
import zipfile
from pathlib import Path

import pytest
from cryptography import x509

from shoal.errors import ShoalError
from shoal.provision.project import Participant, parse_project
from shoal.provision.workspace import add_participant, participants, provision, renew, revoke
from shoal.security.identity import Identity
from shoal.server.studies import Studies

BASE = """\
api_version: 3
name: proj
certificate_days: 90
participants:
  - {name: server.fl.test, type: server, org: ops, fed_learn_port: 8443, host_names: [10.9.0.1]}
  - {name: site-1, type: client, org: h1}
  - {name: site-2, type: client, org: h2}
  - {name: admin@ops.org, type: admin, org: ops, role: project_admin}
studies:
  s1: {sites: [site-1], admins: [admin@ops.org]}
"""
MORE = BASE.replace(
    "studies:",
    "  - {name: site-3, type: client, org: h3}\n"
    "  - {name: m@h1.org, type: admin, org: h1, role: member}\n"
    "studies:",
)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` and its SHA-256 (byte for byte)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def serial(kit: Path, stem: str = "client") -> str:
    cert = x509.load_pem_x509_certificate((kit / "startup" / f"{stem}.crt").read_bytes())
    return format(cert.serial_number, "X")


def raises(code: str, fn: object, *args: object, **kwargs: object) -> ShoalError:
    with pytest.raises(ShoalError) as err:
        fn(*args, **kwargs)  # type: ignore[operator]
    assert err.value.code == code, err.value.message
    return err.value


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    provision(parse_project(BASE), ws)
    return ws


def test_first_run_writes_the_ca_a_kit_and_zip_per_participant_and_the_record(ws: Path) -> None:
    kits = ws / "kits"
    names = ["admin@ops.org", "server.fl.test", "site-1", "site-2"]
    assert sorted(p.name for p in kits.iterdir()) == sorted([*names, *(f"{n}.zip" for n in names)])
    assert stat.S_IMODE((ws / "ca" / "rootCA.key").stat().st_mode) == 0o600
    assert not list(kits.rglob("rootCA.key"))
    server = kits / "server.fl.test"
    config = json.loads((server / "startup" / "fed_server.json").read_text())
    assert config == {
        "kind": "server",
        "project": "proj",
        "name": "server.fl.test",
        "host": "server.fl.test",
        "port": 8443,
        "listen": "0.0.0.0",
        "sites": ["site-1", "site-2"],
    }
    cert = x509.load_pem_x509_certificate((server / "startup" / "server.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "server.fl.test" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.9.0.1"]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 89 < lifetime.days <= 90  # certificate_days from the file
    studies = {"s1": {"sites": ["site-1"], "admins": [{"name": "admin@ops.org", "org": "ops"}]}}
    assert json.loads((server / "local" / "studies.json").read_text()) == {"studies": studies}
    loaded = Studies.load(server / "local" / "studies.json")  # what the server reads at start
    assert loaded.may_use("s1", Identity("admin@ops.org", "ops", "admin", "member"))
    assert not loaded.may_use("s1", Identity("admin@ops.org", "elsewhere", "admin", "member"))
    site = json.loads((kits / "site-1" / "startup" / "fed_site.json").read_text())
    assert site["server"] == {"host": "server.fl.test", "port": 8443}
    # the zip is the kit: the key keeps mode 0600, the script 0755
    with zipfile.ZipFile(kits / "site-1.zip") as zf:
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in zf.infolist()}
    assert modes["site-1/startup/client.key"] == 0o600
    assert modes["site-1/startup/start.sh"] == 0o755
    assert "site-1/README.md" in modes and "site-1/startup/shoal-site.service" in modes
    record = participants(ws)
    assert [r["name"] for r in record["participants"]] == sorted(names)
    assert all(84 < r["days_left"] <= 90 for r in record["participants"])


def test_a_second_run_changes_nothing_and_new_participants_only_add(ws: Path) -> None:
    before = snapshot(ws / "kits")
    out = provision(parse_project(BASE), ws)
    assert out["issued"] == [] and snapshot(ws / "kits") == before
    out = provision(parse_project(MORE), ws)
    assert [i["name"] for i in out["issued"]] == ["site-3", "m@h1.org"]
    after = snapshot(ws / "kits")
    assert {k: v for k, v in after.items() if k in before} == before  # existing kits byte for byte
    assert {k.split("/")[0] for k in set(after) - set(before)} == {
        "site-3",
        "site-3.zip",
        "m@h1.org",
        "m@h1.org.zip",
    }


def test_force_reissues_one_kit_and_revokes_its_predecessor(ws: Path) -> None:
    kits = ws / "kits"
    old = serial(kits / "site-1")
    (kits / "site-1" / "local" / "site_policy.json").write_text('{"allow_custom_code": false}\n')
    before = snapshot(kits)
    out = provision(parse_project(BASE), ws, force=["site-1"])
    new = serial(kits / "site-1")
    assert new != old and out["revoked_serials"] == [old]
    revoked = json.loads((kits / "server.fl.test" / "local" / "revoked.json").read_text())
    assert revoked == {"serials": [old], "names": []}
    # the operator's policy survives a re-issue
    assert (kits / "site-1" / "local" / "site_policy.json").read_text() == '{"allow_custom_code": false}\n'
    after = snapshot(kits)
    changed = {k for k in after if after[k] != before.get(k)}
    assert {k.split("/")[0] for k in changed} == {
        "site-1",
        "site-1.zip",
        "server.fl.test",
        "server.fl.test.zip",
    }
    assert changed & {k for k in after if k.startswith("server.fl.test/")} == {
        "server.fl.test/local/revoked.json"
    }


def test_a_changed_participant_needs_force_and_nothing_is_written(ws: Path) -> None:
    before = snapshot(ws)
    err = raises(
        "PROVISION_WORKSPACE_INVALID",
        provision,
        parse_project(BASE.replace("role: project_admin", "role: lead")),
        ws,
    )
    assert "admin@ops.org" in err.message and "--force" in err.hint
    err = raises("PROVISION_WORKSPACE_INVALID", provision, parse_project(BASE.replace("8443", "9443")), ws)
    assert "8443" in err.message
    raises(
        "PROVISION_WORKSPACE_INVALID", provision, parse_project(BASE.replace("name: proj", "name: other")), ws
    )
    raises("PARTICIPANT_NOT_FOUND", provision, parse_project(BASE), ws, force=["nobody"])
    assert snapshot(ws) == before
    out = provision(
        parse_project(BASE.replace("role: project_admin", "role: lead")), ws, force=["admin@ops.org"]
    )
    assert [i["name"] for i in out["issued"]] == ["admin@ops.org"]


def test_a_server_name_added_under_host_names_reissues_the_server_only(ws: Path) -> None:
    kits = ws / "kits"
    old = serial(kits / "server.fl.test", "server")
    moved = BASE.replace("[10.9.0.1]", "[10.9.0.1, new.fl.test]")
    raises("PROVISION_WORKSPACE_INVALID", provision, parse_project(moved), ws)
    before = snapshot(kits)
    out = provision(parse_project(moved), ws, force=["server.fl.test"])
    assert serial(kits / "server.fl.test", "server") != old and out["revoked_serials"] == []
    after = snapshot(kits)
    assert {k.split("/")[0] for k in after if after[k] != before.get(k)} == {
        "server.fl.test",
        "server.fl.test.zip",
    }


def test_a_workspace_that_is_not_this_projects_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other"
    (other / "stuff").mkdir(parents=True)
    raises("PROVISION_WORKSPACE_INVALID", provision, parse_project(BASE), other)
    assert [p.name for p in other.iterdir()] == ["stuff"]
    foreign = tmp_path / "foreign"
    provision(parse_project(BASE.replace("name: proj", "name: theirs")), foreign)
    (foreign / "provision.json").write_text(
        (foreign / "provision.json").read_text().replace('"theirs"', '"proj"', 1)
    )
    err = raises("PROVISION_WORKSPACE_INVALID", provision, parse_project(BASE), foreign)
    assert "theirs" in err.message  # the CA itself says whose it is


def test_a_removed_participant_is_noticed_not_revoked(ws: Path) -> None:
    out = provision(parse_project(BASE.replace("  - {name: site-2, type: client, org: h2}\n", "")), ws)
    assert any("site-2" in n and "revoke" in n for n in out["notices"])
    assert not (ws / "kits" / "server.fl.test" / "local" / "revoked.json").exists()


def test_add_renew_revoke_without_the_project_file(ws: Path) -> None:
    kits = ws / "kits"
    out = add_participant(ws, Participant("site-9", "site", "h9"))
    assert [i["name"] for i in out["issued"]] == ["site-9"] and (kits / "site-9.zip").is_file()
    raises("INVALID_ARGS", add_participant, ws, Participant("SITE-9", "site", "h9"))
    old = serial(kits / "admin@ops.org")
    renew(ws, ["admin@ops.org"])
    assert serial(kits / "admin@ops.org") != old
    raises("PARTICIPANT_NOT_FOUND", renew, ws, ["ghost"])
    revoke(ws, "site-2")
    revoked = json.loads((kits / "server.fl.test" / "local" / "revoked.json").read_text())
    assert revoked == {"serials": [old], "names": ["site-2"]}
    assert [r["name"] for r in participants(ws)["participants"] if r["revoked"]] == ["site-2"]
    raises("INVALID_ARGS", revoke, ws, "server.fl.test")
    raises("PARTICIPANT_NOT_FOUND", revoke, ws, "ghost")
    raises("PROVISION_WORKSPACE_INVALID", revoke, ws.parent / "nothing-here", "site-2")
