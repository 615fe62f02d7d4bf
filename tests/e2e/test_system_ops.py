"""``shoal system``: what an operator sees of the server and its sites, and does to them."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shoal import __version__
from tests.federation import Federation, own_federation

pytestmark = pytest.mark.e2e


def sites(fed: Federation) -> dict[str, dict[str, Any]]:
    code, doc = fed.cli.json("system", "sites")
    assert code == 0, doc
    return {s["name"]: s for s in doc["data"]["sites"]}


def until(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False


def test_an_operator_lists_restarts_stops_and_removes_sites(tmp_path: Path) -> None:
    with own_federation(tmp_path / "home") as fed:
        code, doc = fed.cli.json("system", "status")
        assert code == 0, doc
        server = doc["data"]["server"]
        assert server["version"] == __version__ and server["uptime_s"] >= 0 and server["store_bytes"] > 0
        listed = sites(fed)
        assert set(listed) == {"site-1", "site-2"}
        assert all(
            s["connected"] and s["version"] == __version__ and s["idle_s"] < 60 for s in listed.values()
        )

        # a member may look, not operate
        code, doc = fed.cli.json("poc", "add-user", "member", "m@example.org", "--workspace", fed.workspace)
        assert code == 0, doc
        member = doc["data"]["startup_kit"]
        code, doc = fed.cli.json("system", "sites", "--startup-kit", member)
        assert code == 0, doc
        code, doc = fed.cli.json("system", "restart-site", "site-1", "--startup-kit", member)
        assert code == 2 and doc["error_code"] == "NOT_AUTHORIZED", doc

        # restart: the same process (re-executed) comes back with a new connection
        pids = json.loads((fed.workspace / "run" / "pids.json").read_text())
        before = listed["site-1"]["connected_at"]
        code, doc = fed.cli.json("system", "restart-site", "site-1")
        assert code == 0 and doc["data"]["sent"], doc
        until("site-1 to come back", lambda: sites(fed)["site-1"].get("connected_at", before) > before)
        assert alive(pids["site-1"])

        # shutdown: the agent exits and the site is listed as away
        code, doc = fed.cli.json("system", "shutdown-site", "site-2")
        assert code == 4 and doc["error_code"] == "CONFIRMATION_REQUIRED", doc  # no terminal, no --force
        code, doc = fed.cli.json("system", "shutdown-site", "site-2", "--force")
        assert code == 0, doc
        until("site-2's agent to exit", lambda: not alive(pids["site-2"]))
        until("site-2 to be away", lambda: not sites(fed)["site-2"]["connected"], timeout=15)

        # remove: unlisted, named in revoked.json, and its connection closed
        code, doc = fed.cli.json("system", "remove-site", "site-1", "--force")
        assert code == 0 and doc["data"]["removed"], doc
        revoked = json.loads((fed.kits / "server" / "local" / "revoked.json").read_text())
        assert revoked["names"] == ["site-1"]
        until("site-1 to be gone", lambda: "site-1" not in sites(fed), timeout=15)
        code, doc = fed.cli.json("system", "restart-site", "ghost")
        assert code == 1 and doc["error_code"] == "SITE_NOT_FOUND", doc
        code, doc = fed.cli.json("system", "remove-site", "../x", "--force")
        assert code in (1, 4) and doc["error_code"] in ("INVALID_ARGS", "SITE_NOT_FOUND"), doc
        assert os.path.exists(fed.kits / "server" / "local" / "revoked.json")
