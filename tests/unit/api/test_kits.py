"""Admin startup-kit resolution (every branch and the order) and the ``shoal config`` operations.

Resolution never parses a certificate, so these kits hold placeholder PEM files: only the
layout and fed_admin.json matter here (real certificates are tested in provision/ and security/).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shoal.api.config_file import ShoalConfig, config_path, load_config, save_config
from shoal.api.kits import (
    AdminKit,
    config_add,
    config_list,
    config_remove,
    config_use,
    resolve_admin_kit,
)
from shoal.errors import ShoalError

ENV = "SHOAL_STARTUP_KIT_DIR"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("SHOAL_HOME", str(home))
    monkeypatch.delenv(ENV, raising=False)
    return home


def make_kit(path: Path, kind: str = "admin", **fields: Any) -> Path:
    """A kit folder of ``kind`` with placeholder PEM files and a fed_*.json built from ``fields``."""
    startup = path / "startup"
    startup.mkdir(parents=True)
    (path / "local").mkdir()
    stem = "server" if kind == "server" else "client"
    for name in (f"{stem}.crt", f"{stem}.key", "rootCA.pem"):
        (startup / name).write_text("-----BEGIN PLACEHOLDER-----\n")
    data: dict[str, Any] = {
        "kind": kind,
        "project": "example_project",
        "name": path.name,
        "org": "example.org",
        "server": {"host": "127.0.0.1", "port": 8443},
    }
    if kind == "admin":
        data["role"] = "lead"
    data.update(fields)
    (startup / f"fed_{kind}.json").write_text(json.dumps(data))
    return path


def register(**kits: Path | str) -> None:
    config = load_config()
    config.kits.update({k: str(v) for k, v in kits.items()})
    save_config(config)


def activate(kit_id: str) -> None:
    config = load_config()
    config.active = kit_id
    save_config(config)


def failure(kit_id: str | None = None, startup_kit: str | Path | None = None) -> ShoalError:
    with pytest.raises(ShoalError) as err:
        resolve_admin_kit(kit_id, None if startup_kit is None else str(startup_kit))
    assert err.value.code == "STARTUP_KIT_MISSING"
    assert err.value.exit_code == 2
    return err.value


# --- the kit object ---


def test_admin_kit_holds_everything_a_client_needs(tmp_path: Path) -> None:
    kit_dir = make_kit(
        tmp_path / "lead@example.org", server={"host": "127.0.0.1", "port": 9001}, org="hospital.org"
    )
    kit = resolve_admin_kit(None, str(kit_dir))
    assert kit == AdminKit(
        path=str(kit_dir.resolve()),
        name="lead@example.org",
        org="hospital.org",
        role="lead",
        project="example_project",
        host="127.0.0.1",
        port=9001,
        source="startup-kit",
    )
    assert kit.cert == str(kit_dir.resolve() / "startup/client.crt")
    assert kit.key == str(kit_dir.resolve() / "startup/client.key")
    assert kit.ca == str(kit_dir.resolve() / "startup/rootCA.pem")
    assert "lead@example.org" in repr(kit)
    assert hash(kit) == hash(resolve_admin_kit(None, str(kit_dir)))


def test_admin_kit_is_immutable(tmp_path: Path) -> None:
    kit = resolve_admin_kit(None, str(make_kit(tmp_path / "a")))
    with pytest.raises(AttributeError):
        kit.role = "project_admin"
    with pytest.raises(AttributeError):
        del kit.port


def test_the_startup_subfolder_stands_for_the_kit(tmp_path: Path) -> None:
    kit_dir = make_kit(tmp_path / "a")
    assert resolve_admin_kit(None, str(kit_dir / "startup")).path == str(kit_dir.resolve())


# --- resolution order ---


@pytest.fixture
def four_kits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """One kit per source, each with its own name, all configured at once."""
    kits = {
        src: make_kit(tmp_path / f"{src}@example.org") for src in ("kit-id", "startup-kit", "env", "active")
    }
    register(by_id=kits["kit-id"], current=kits["active"])
    activate("current")
    monkeypatch.setenv(ENV, str(kits["env"]))
    return kits


def test_kit_id_comes_first(four_kits: dict[str, Path]) -> None:
    kit = resolve_admin_kit("by_id", str(four_kits["startup-kit"]))
    assert (kit.name, kit.source) == ("kit-id@example.org", "kit-id")


def test_then_startup_kit(four_kits: dict[str, Path]) -> None:
    kit = resolve_admin_kit(None, str(four_kits["startup-kit"]))
    assert (kit.name, kit.source) == ("startup-kit@example.org", "startup-kit")


def test_then_the_environment(four_kits: dict[str, Path]) -> None:
    kit = resolve_admin_kit(None, None)
    assert (kit.name, kit.source) == ("env@example.org", "env")


@pytest.mark.parametrize("blank", ["", "   "])
def test_then_the_active_kit_when_the_environment_is_blank(
    four_kits: dict[str, Path], monkeypatch: pytest.MonkeyPatch, blank: str
) -> None:
    monkeypatch.setenv(ENV, blank)
    kit = resolve_admin_kit(None, None)
    assert (kit.name, kit.source) == ("active@example.org", "active")


def test_selectors_never_change_the_config_file(four_kits: dict[str, Path]) -> None:
    before = Path(config_path()).read_text()
    resolve_admin_kit("by_id", None)
    resolve_admin_kit(None, str(four_kits["startup-kit"]))
    resolve_admin_kit(None, None)
    assert Path(config_path()).read_text() == before


def test_a_bad_selector_is_an_error_not_a_fall_through(four_kits: dict[str, Path], tmp_path: Path) -> None:
    assert "not registered" in failure("nope").message
    assert "does not exist" in failure(None, tmp_path / "nowhere").message


# --- every failure, each with its own detail and hint ---


def test_every_failure_has_its_own_detail_and_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = make_kit(tmp_path / "site-1", kind="site")
    server = make_kit(tmp_path / "server", kind="server")
    not_a_kit = tmp_path / "photos"
    not_a_kit.mkdir()
    gone = tmp_path / "gone"
    seen: dict[str, tuple[str, str]] = {}

    def record(label: str, err: ShoalError, *needles: str) -> None:
        for needle in needles:
            assert needle in err.message, (label, err.message)
        seen[label] = (err.message, err.hint)

    register(lost=gone, wrong=site)
    record("kit-id unknown", failure("nope"), "startup kit id 'nope' is not registered")
    record("kit-id path gone", failure("lost"), "registered for 'lost' does not exist", str(gone))
    record("kit-id not admin", failure("wrong"), "registered for 'wrong' is not a valid admin startup kit")

    record("--startup-kit missing", failure(None, gone), "startup kit path does not exist", str(gone))
    record("--startup-kit not a kit", failure(None, not_a_kit), "path is not a valid startup kit")
    record("--startup-kit site", failure(None, site), "path is not an admin startup kit", "site kit")
    record("--startup-kit server", failure(None, server), "path is not an admin startup kit", "server kit")

    monkeypatch.setenv(ENV, str(gone))
    record("env missing", failure(), f"{ENV} points to a path that does not exist")
    monkeypatch.setenv(ENV, str(site))
    record("env invalid", failure(), f"{ENV} does not point to an admin startup kit")
    monkeypatch.delenv(ENV)

    record("no active", failure(), "no active startup kit is configured")
    activate("ghost")
    record("active not registered", failure(), "active startup kit 'ghost' is not registered")
    activate("lost")
    record("active missing", failure(), "active startup kit 'lost' points to a path that does not exist")
    activate("wrong")
    record("active invalid", failure(), "active startup kit 'wrong' is not a valid admin startup kit")

    messages = [message for message, _ in seen.values()]
    assert len(set(messages)) == len(messages) == 13
    hints = {label: hint for label, (_, hint) in seen.items()}
    assert "shoal config list" in hints["kit-id unknown"]
    assert "shoal poc prepare" in hints["no active"]
    assert ENV in hints["env missing"]
    assert "shoal config remove lost" in hints["active missing"]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda k: (k / "startup/client.key").unlink(), "lacks startup/client.key"),
        (lambda k: (k / "startup/rootCA.pem").unlink(), "lacks startup/rootCA.pem"),
        (lambda k: (k / "startup/fed_admin.json").write_text("{oops"), "not valid JSON"),
        (lambda k: (k / "startup/fed_admin.json").write_text('{"kind": "site"}'), '"kind": "admin"'),
        (
            lambda k: (k / "startup/fed_admin.json").write_text(
                '{"kind": "admin", "name": "a", "role": "lead", "server": {"port": "8443"}}'
            ),
            "no valid server port",
        ),
        (
            lambda k: (k / "startup/fed_admin.json").write_text(
                '{"kind": "admin", "name": "a", "server": {"port": 8443}}'
            ),
            "name or role",
        ),
    ],
)
def test_a_damaged_admin_kit_is_not_a_valid_kit(tmp_path: Path, damage: Any, reason: str) -> None:
    kit = make_kit(tmp_path / "a")
    damage(kit)
    err = failure(None, kit)
    assert "not a valid startup kit" in err.message and reason in err.message


def test_a_damaged_kit_is_not_told_to_pass_the_kit_instead_of_its_parent(tmp_path: Path) -> None:
    """A corrupt fed_admin.json or a lost key got "Pass the kit folder ..., not its parent";
    that hint is for a folder holding none of a kit's files, such as the kits' parent."""
    parent = tmp_path / "kits"
    make_kit(parent / "a")
    assert "not its parent" in failure(None, parent).hint
    corrupt = make_kit(tmp_path / "corrupt")
    (corrupt / "startup/fed_admin.json").write_text("{oops")
    incomplete = make_kit(tmp_path / "incomplete")
    (incomplete / "startup/client.key").unlink()
    for kit in (corrupt, incomplete):
        hint = failure(None, kit).hint
        assert "parent" not in hint and "damaged" in hint, hint


def test_a_damaged_config_file_stops_resolution(tmp_path: Path) -> None:
    Path(config_path()).parent.mkdir(parents=True)
    Path(config_path()).write_text("[[[")
    err = failure()
    assert "cannot parse" in err.message
    # an explicit path does not need the config file
    assert resolve_admin_kit(None, str(make_kit(tmp_path / "a"))).source == "startup-kit"


# --- shoal config ---


def test_config_add_registers_without_activating(tmp_path: Path) -> None:
    kit = make_kit(tmp_path / "lead@example.org")
    out = config_add(" lead ", str(kit / "startup"))
    assert out == {
        "registered_startup_kit": "lead",
        "path": str(kit.resolve()),
        "next_step": "shoal config use lead",
    }
    config = load_config()
    assert config.kits == {"lead": str(kit.resolve())}
    assert config.active is None


def test_config_add_refuses_to_replace_without_force(tmp_path: Path) -> None:
    first, second = make_kit(tmp_path / "a"), make_kit(tmp_path / "b")
    config_add("k", str(first))
    with pytest.raises(ShoalError) as err:
        config_add("k", str(second))
    assert err.value.code == "KIT_EXISTS"
    assert load_config().kits["k"] == str(first.resolve())
    config_add("k", str(second), force=True)
    assert load_config().kits["k"] == str(second.resolve())


def test_config_add_validates_the_kit_and_the_id(tmp_path: Path) -> None:
    with pytest.raises(ShoalError) as err:
        config_add("s", str(make_kit(tmp_path / "site-1", kind="site")))
    assert err.value.code == "STARTUP_KIT_MISSING"
    assert "path is not an admin startup kit" in err.value.message
    with pytest.raises(ShoalError) as err:
        config_add("  ", str(make_kit(tmp_path / "a")))
    assert err.value.code == "INVALID_ARGS"
    assert load_config().kits == {}


def test_config_use_activates_a_valid_registered_kit(tmp_path: Path) -> None:
    kit = make_kit(tmp_path / "lead@example.org", org="hospital.org")
    config_add("lead", str(kit))
    out = config_use("lead")
    assert out == {
        "startup_kit": {"source": "active", "id": "lead", "path": str(kit.resolve())},
        "identity": {"name": "lead@example.org", "org": "hospital.org", "role": "lead"},
        "project": "example_project",
    }
    assert load_config().active == "lead"
    assert resolve_admin_kit(None, None).source == "active"


def test_config_use_refuses_unknown_and_broken_kits(tmp_path: Path) -> None:
    with pytest.raises(ShoalError) as err:
        config_use("nope")
    assert err.value.code == "KIT_NOT_REGISTERED"
    assert err.value.exit_code == 1
    register(gone=tmp_path / "gone")
    with pytest.raises(ShoalError) as err:
        config_use("gone")
    assert err.value.code == "STARTUP_KIT_MISSING"
    assert load_config().active is None


def test_config_list_reports_every_row_and_never_fails(tmp_path: Path) -> None:
    good = make_kit(tmp_path / "lead@example.org")
    broken = make_kit(tmp_path / "broken")
    (broken / "startup/fed_admin.json").write_text("{oops")
    register(good=good, gone=tmp_path / "gone", broken=broken, site=make_kit(tmp_path / "s", kind="site"))
    activate("good")
    rows = {row["id"]: row for row in config_list()}
    assert list(rows) == ["broken", "gone", "good", "site"]
    assert rows["good"] == {
        "active": "*",
        "id": "good",
        "status": "ok",
        "identity": "lead@example.org",
        "role": "lead",
        "path": str(good),
        "org": "example.org",
        "project": "example_project",
    }
    assert (rows["gone"]["status"], rows["gone"]["active"], rows["gone"]["identity"]) == ("missing", "", None)
    assert rows["broken"]["status"] == "invalid"
    assert rows["site"]["status"] == "invalid"


def test_config_list_of_nothing_is_empty() -> None:
    assert config_list() == []


def test_config_remove_forgets_and_clears_the_active_kit(tmp_path: Path) -> None:
    kit = make_kit(tmp_path / "a")
    config_add("a", str(kit))
    config_add("b", str(kit))
    config_use("a")
    assert config_remove("b") == {"removed_startup_kit": "b"}
    out = config_remove("a")
    assert out["removed_startup_kit"] == "a"
    assert "active" in out["warning"]
    assert load_config().active is None and load_config().kits == {}
    assert kit.exists(), "removing a registration never deletes files"
    with pytest.raises(ShoalError) as err:
        config_remove("a")
    assert err.value.code == "KIT_NOT_REGISTERED"


def test_the_same_path_may_be_registered_under_several_ids(tmp_path: Path) -> None:
    kit = make_kit(tmp_path / "a")
    config_add("one", str(kit))
    config_add("two", str(kit))
    assert load_config().kits == {"one": str(kit.resolve()), "two": str(kit.resolve())}


def test_existing_config_keeps_its_poc_setting_through_config_commands(tmp_path: Path) -> None:
    save_config(ShoalConfig(poc_workspace="/somewhere/poc"))
    config_add("a", str(make_kit(tmp_path / "a")))
    config_use("a")
    config_remove("a")
    assert load_config().poc_workspace == "/somewhere/poc"


# --- start-up cost ---


def test_resolution_imports_nothing_heavy() -> None:
    """The CLI resolves a kit on every command: no cryptography, no dataclasses (decisions/0004)."""
    code = (
        "import sys, shoal.api.kits, shoal.security.tls; "
        "print(','.join(m for m in ('cryptography', 'dataclasses', 'aiohttp', 'numpy') if m in sys.modules))"
    )
    src = str(Path(__file__).resolve().parents[3] / "src")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": src}, check=True
    )
    assert out.stdout.strip() == ""
