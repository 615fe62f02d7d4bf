"""Startup kits through the CLI: shoal config add/use/list/remove and the resolution order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.e2e.conftest import Federation

pytestmark = pytest.mark.e2e


def test_config_commands_and_resolution_order(federation: Federation, tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    admin = federation.kits / "admin@example.com"

    code, doc = cli.json("config", "list")
    assert code == 0 and doc["data"] == []
    assert "No startup kits registered." in cli.run("config", "list").stdout

    code, doc = cli.json("job", "list")
    assert code == 2 and doc["error_code"] == "STARTUP_KIT_MISSING"

    code, doc = cli.json("config", "add", "ops", admin)
    assert code == 0 and doc["data"]["registered_startup_kit"] == "ops"
    assert doc["data"]["next_step"] == "shoal config use ops"
    code, doc = cli.json("config", "add", "ops", admin)
    assert code == 4 and doc["error_code"] == "KIT_EXISTS"
    code, doc = cli.json("config", "add", "ops", admin / "startup", "--force")
    assert code == 0 and doc["data"]["path"] == str(admin)

    code, doc = cli.json("config", "add", "site", federation.kits / "site-1")
    assert code != 0 and doc["error_code"] == "STARTUP_KIT_MISSING" and "admin" in doc["message"]

    # registered but not active: --kit-id works, plain commands do not
    code, doc = cli.json("job", "list", "--kit-id", "ops")
    assert code == 0
    code, doc = cli.json("job", "list")
    assert code == 2 and doc["error_code"] == "STARTUP_KIT_MISSING"

    code, doc = cli.json("config", "use", "ops")
    assert code == 0 and doc["data"]["identity"]["role"] == "project_admin"
    code, doc = cli.json("job", "list")
    assert code == 0
    code, doc = cli.json("config", "list")
    assert [(r["active"], r["id"], r["status"]) for r in doc["data"]] == [("*", "ops", "ok")]

    # the environment variable beats the active kit; --kit-id and --startup-kit beat both
    env = {**cli.env(), "SHOAL_STARTUP_KIT_DIR": str(tmp_path / "missing")}
    code, doc = cli.json("job", "list", env=env)
    assert (
        code == 2 and doc["error_code"] == "STARTUP_KIT_MISSING" and "SHOAL_STARTUP_KIT_DIR" in doc["message"]
    )
    assert cli.json("job", "list", "--kit-id", "ops", env=env)[0] == 0
    assert cli.json("job", "list", "--startup-kit", admin, env=env)[0] == 0
    code, doc = cli.json("job", "list", "--kit-id", "ops", "--startup-kit", admin)
    assert code == 4 and doc["error_code"] == "INVALID_ARGS"

    code, doc = cli.json("config", "remove", "ops")
    assert code == 0 and doc["data"]["removed_startup_kit"] == "ops" and doc["data"].get("warning")
    code, doc = cli.json("job", "list")
    assert code == 2 and doc["error_code"] == "STARTUP_KIT_MISSING"
    assert (tmp_path / "home" / "config.toml").stat().st_mode & 0o777 == 0o600


def test_two_poc_workspaces_run_side_by_side(federation: Federation, tmp_path: Path) -> None:
    from tests.federation import start_federation, stop_federation

    second = start_federation(tmp_path / "second")
    try:
        for fed in (federation, second):
            code, doc = fed.cli.json("system", "status")
            assert code == 0 and len(doc["data"]["sites"]) == 2
        ports = {
            json.loads((f.workspace / "poc.json").read_text())["server"]["port"] for f in (federation, second)
        }
        assert len(ports) == 2, "each POC chose its own free port"
    finally:
        stop_federation(second)
    code, doc = second.cli.json("system", "status")
    assert code == 2 and doc["error_code"] == "CONNECTION_FAILED"
