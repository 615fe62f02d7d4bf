"""POC workspaces: prepare, refuse, replace, add an admin, clean, and what they do to the config file."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

import shoal.provision.poc as poc_module
import shoal.provision.workspace as provision_workspace
from shoal.api.config_file import config_path, load_config
from shoal.api.kits import config_add, resolve_admin_kit
from shoal.errors import ShoalError
from shoal.provision.poc import (
    add_poc_admin,
    clean_poc,
    default_poc_workspace,
    load_poc,
    prepare_poc,
)

ADMIN = "admin@example.com"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("SHOAL_HOME", str(home))
    monkeypatch.delenv("SHOAL_POC_WORKSPACE", raising=False)
    monkeypatch.delenv("SHOAL_STARTUP_KIT_DIR", raising=False)
    return home


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return tmp_path / "poc"


def config_toml() -> dict[str, Any]:
    return tomllib.loads(Path(config_path()).read_text())


def raises(code: str, fn: Any, *args: Any, **kwargs: Any) -> ShoalError:
    with pytest.raises(ShoalError) as err:
        fn(*args, **kwargs)
    assert err.value.code == code, err.value.message
    return err.value


# --- where the workspace is ---


def test_default_workspace_is_under_shoal_home(home: Path) -> None:
    assert default_poc_workspace() == home / "poc"


def test_default_workspace_comes_from_the_config_file_after_prepare(ws: Path) -> None:
    prepare_poc(ws, n_sites=1)
    assert default_poc_workspace() == ws.resolve()


def test_env_overrides_the_config_file(ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepare_poc(ws, n_sites=1)
    monkeypatch.setenv("SHOAL_POC_WORKSPACE", str(tmp_path / "elsewhere"))
    assert default_poc_workspace() == (tmp_path / "elsewhere").resolve()
    monkeypatch.setenv("SHOAL_POC_WORKSPACE", "  ")
    assert default_poc_workspace() == ws.resolve()


# --- prepare ---


def test_prepare_builds_the_workspace(ws: Path) -> None:
    out = prepare_poc(ws, n_sites=3)
    ws = ws.resolve()
    kits = ws / "kits"
    assert sorted(p.name for p in ws.iterdir()) == ["ca", "kits", "logs", "poc.json", "provision.json"]
    assert sorted(p.name for p in (ws / "ca").iterdir()) == ["rootCA.key", "rootCA.pem"]
    folders = [ADMIN, "server", "site-1", "site-2", "site-3"]
    assert sorted(p.name for p in kits.iterdir()) == sorted([*folders, *(f"{f}.zip" for f in folders)])
    assert not list(kits.rglob("rootCA.key"))

    poc = load_poc(ws)
    port = poc["server"]["port"]
    assert isinstance(port, int) and 0 < port < 65536
    assert poc == {
        "project": "example_project",
        "server": {"host": "127.0.0.1", "port": port},
        "sites": ["site-1", "site-2", "site-3"],
        "admin": ADMIN,
        "kits_dir": str(kits),
        "created": poc["created"],
    }
    assert poc["created"].endswith("+00:00")
    assert out == {
        "workspace": str(ws),
        "server": {"host": "127.0.0.1", "port": port},
        "sites": ["site-1", "site-2", "site-3"],
        "admin_kit": str(kits / ADMIN),
        "startup_kit": {"prior_active": None, "active": ADMIN, "changed": True},
    }
    for kit, name in (("server", "fed_server.json"), ("site-2", "fed_site.json"), (ADMIN, "fed_admin.json")):
        text = (kits / kit / "startup" / name).read_text()
        assert str(port) in text


def test_prepare_uses_an_os_chosen_port(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(poc_module, "free_port", lambda host="127.0.0.1": 45678)
    out = prepare_poc(ws, n_sites=1)
    assert out["server"]["port"] == 45678
    assert json.loads((ws / "kits/site-1/startup/fed_site.json").read_text())["server"]["port"] == 45678


def test_free_port_is_bindable() -> None:
    import socket

    port = poc_module.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_prepare_registers_and_activates_the_admin_kit(ws: Path) -> None:
    prepare_poc(ws, n_sites=1)
    data = config_toml()
    assert data["startup_kits"] == {"active": ADMIN, "entries": {ADMIN: str(ws.resolve() / "kits" / ADMIN)}}
    assert data["poc"] == {"workspace": str(ws.resolve())}
    kit = resolve_admin_kit(None, None)
    assert (kit.name, kit.role, kit.org, kit.project, kit.source) == (
        ADMIN,
        "project_admin",
        "example.org",
        "example_project",
        "active",
    )


def test_prepare_reports_the_prior_active_kit(ws: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    prepare_poc(other, n_sites=1)
    config_add("mine", str(other / "kits" / ADMIN))
    from shoal.api.kits import config_use

    config_use("mine")
    out = prepare_poc(ws, n_sites=1)
    assert out["startup_kit"] == {"prior_active": "mine", "active": ADMIN, "changed": True}
    assert load_config().kits["mine"] == str((other / "kits" / ADMIN).resolve())


def test_prepare_refuses_an_existing_workspace_without_force_and_changes_nothing(ws: Path) -> None:
    prepare_poc(ws, n_sites=1)
    before = (ws / "poc.json").read_text(), Path(config_path()).read_text()
    err = raises("POC_WORKSPACE_EXISTS", prepare_poc, ws, n_sites=2)
    assert str(ws.resolve()) in err.message
    assert err.exit_code == 4
    assert ((ws / "poc.json").read_text(), Path(config_path()).read_text()) == before


def test_prepare_with_force_replaces_the_workspace_and_its_ca(ws: Path) -> None:
    prepare_poc(ws, n_sites=1)
    old_ca = (ws / "ca/rootCA.pem").read_bytes()
    add_poc_admin(ws, "lead@example.org", "lead")
    config_add("lead", str(ws / "kits" / "lead@example.org"))
    out = prepare_poc(ws, n_sites=2, force=True)
    assert (ws / "ca/rootCA.pem").read_bytes() != old_ca
    assert out["sites"] == ["site-1", "site-2"]
    assert out["startup_kit"] == {"prior_active": ADMIN, "active": ADMIN, "changed": False}
    assert not (ws / "kits" / "lead@example.org").exists()
    assert set(load_config().kits) == {ADMIN}, "registrations of the replaced workspace are dropped"


def test_prepare_with_force_never_deletes_a_folder_that_is_not_a_poc(ws: Path) -> None:
    ws.mkdir()
    (ws / "precious.txt").write_text("data")
    err = raises("POC_WORKSPACE_EXISTS", prepare_poc, ws, force=True)
    assert "not a POC workspace" in err.message
    assert (ws / "precious.txt").read_text() == "data"


def test_prepare_accepts_an_empty_existing_folder(ws: Path) -> None:
    ws.mkdir()
    prepare_poc(ws, n_sites=1)
    assert (ws / "poc.json").exists()


def test_prepare_refuses_a_file(ws: Path) -> None:
    ws.write_text("x")
    raises("POC_WORKSPACE_EXISTS", prepare_poc, ws, force=True)
    assert ws.read_text() == "x"


def test_prepare_needs_a_site(ws: Path) -> None:
    raises("INVALID_ARGS", prepare_poc, ws, n_sites=0)
    assert not ws.exists()


def test_prepare_with_an_unreadable_config_changes_nothing(ws: Path) -> None:
    Path(config_path()).parent.mkdir(parents=True)
    Path(config_path()).write_text("this is = = not toml")
    err = raises("STARTUP_KIT_MISSING", prepare_poc, ws)
    assert "cannot parse" in err.message
    assert not ws.exists()


def test_a_failure_half_way_leaves_no_workspace(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Path:
        raise OSError("disk full")

    monkeypatch.setattr(provision_workspace, "write_admin_kit", boom)  # the POC provisions through it
    with pytest.raises(OSError):
        prepare_poc(ws)
    assert not ws.exists()
    assert not Path(config_path()).exists()


# --- add an admin ---


def test_add_poc_admin_issues_an_unregistered_kit_with_the_role(ws: Path) -> None:
    prepare_poc(ws, n_sites=1)
    kit = add_poc_admin(ws, "member@hospital.org", "member", org="hospital.org")
    assert kit == ws.resolve() / "kits" / "member@hospital.org"
    data = json.loads((kit / "startup/fed_admin.json").read_text())
    assert (data["name"], data["role"], data["org"]) == ("member@hospital.org", "member", "hospital.org")
    assert data["server"] == load_poc(ws)["server"]
    cert = x509.load_pem_x509_certificate((kit / "startup/client.crt").read_bytes())
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.TITLE)] == ["member"]
    assert (kit / "startup/rootCA.pem").read_bytes() == (ws / "ca/rootCA.pem").read_bytes()
    assert "member@hospital.org" not in load_config().kits
    loaded = resolve_admin_kit(None, str(kit))
    assert (loaded.role, loaded.source) == ("member", "startup-kit")


def test_add_poc_admin_never_silently_replaces_a_kit(ws: Path) -> None:
    prepare_poc(ws, n_sites=1)
    before = (ws / "kits" / ADMIN / "startup/client.crt").read_bytes()
    raises("INVALID_ARGS", add_poc_admin, ws, ADMIN, "member")
    raises("INVALID_ARGS", add_poc_admin, ws, "server", "member")
    assert (ws / "kits" / ADMIN / "startup/client.crt").read_bytes() == before
    add_poc_admin(ws, "lead@example.org", "lead")
    kit = add_poc_admin(ws, "lead@example.org", "member", force=True)
    assert json.loads((kit / "startup/fed_admin.json").read_text())["role"] == "member"


@pytest.mark.parametrize("name", ["server", "site-1", "site-2"])
def test_add_poc_admin_never_takes_a_participants_name_even_with_force(ws: Path, name: str) -> None:
    """Its certificate, key and fed_admin.json would land in the server's or a site's kit."""
    prepare_poc(ws, n_sites=2)
    startup = ws / "kits" / name / "startup"
    before = {p.name: p.read_bytes() for p in startup.iterdir()}
    err = raises("INVALID_ARGS", add_poc_admin, ws, name, "lead", force=True)
    assert "participant" in err.message and "--force" not in err.hint
    assert {p.name: p.read_bytes() for p in startup.iterdir()} == before


def test_add_poc_admin_checks_the_role_and_the_workspace(ws: Path, tmp_path: Path) -> None:
    raises("POC_NOT_PREPARED", add_poc_admin, tmp_path / "nowhere", "a@b.org", "lead")
    prepare_poc(ws, n_sites=1)
    raises("INVALID_ARGS", add_poc_admin, ws, "a@b.org", "superuser")
    assert not (ws / "kits" / "a@b.org" / "startup" / "fed_admin.json").exists()


# --- clean ---


def test_clean_removes_the_workspace_and_its_config_entries_only(ws: Path, tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    prepare_poc(keep, n_sites=1)
    config_add("kept", str(keep / "kits" / ADMIN))
    prepare_poc(ws, n_sites=1)
    add_poc_admin(ws, "lead@example.org", "lead")
    config_add("lead", str(ws / "kits" / "lead@example.org" / "startup"))

    out = clean_poc(ws)
    assert out == {"workspace": str(ws.resolve()), "status": "removed"}
    assert not ws.exists()
    data = config_toml()
    assert data["startup_kits"].get("active") is None
    assert data["startup_kits"]["entries"] == {"kept": str((keep / "kits" / ADMIN).resolve())}
    assert "poc" not in data
    assert keep.exists()


def test_clean_keeps_the_poc_setting_when_it_names_another_workspace(ws: Path, tmp_path: Path) -> None:
    prepare_poc(ws, n_sites=1)
    prepare_poc(tmp_path / "second", n_sites=1)
    clean_poc(ws)
    assert load_config().poc_workspace == str((tmp_path / "second").resolve())
    assert load_config().active == ADMIN


def test_clean_refuses_a_folder_without_poc_json(ws: Path) -> None:
    ws.mkdir()
    (ws / "precious.txt").write_text("data")
    raises("POC_NOT_PREPARED", clean_poc, ws)
    assert (ws / "precious.txt").read_text() == "data"


def test_clean_of_a_missing_workspace_is_not_prepared(ws: Path) -> None:
    raises("POC_NOT_PREPARED", clean_poc, ws)


def test_load_poc_reports_missing_and_damaged_files(ws: Path) -> None:
    raises("POC_NOT_PREPARED", load_poc, ws)
    ws.mkdir()
    (ws / "poc.json").write_text("{nope")
    err = raises("POC_NOT_PREPARED", load_poc, ws)
    assert "cannot read" in err.message
