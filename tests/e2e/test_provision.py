"""``shoal provision`` through the real CLI, and a re-issued certificate refused by a running server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.federation import own_federation

pytestmark = pytest.mark.e2e


def test_init_then_provision_then_bad_files_change_nothing(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    project = tmp_path / "project.yml"
    code, doc = cli.json("provision", "init", "-o", project)
    assert code == 0 and project.is_file(), doc
    code, doc = cli.json("provision", "init", "-o", project)
    assert code == 4 and doc["error_code"] == "INVALID_ARGS"  # never overwritten without --force
    ws = tmp_path / "ws"
    code, doc = cli.json("provision", "-p", project, "-w", ws)
    assert code == 0, doc
    assert sorted(i["name"] for i in doc["data"]["issued"]) == [
        "admin@example.org",
        "hospital-a",
        "hospital-b",
        "lead@hospital-a.org",
        "server.example.org",
    ]
    before = sorted((p.relative_to(ws), p.stat().st_mtime_ns) for p in ws.rglob("*"))
    for text, code_expected in (
        (project.read_text().replace("role: lead", "role: boss"), "PROJECT_FILE_INVALID"),
        (project.read_text() + "  - {name: hospital-a, type: client, org: x}\n", "PROJECT_FILE_INVALID"),
        (
            project.read_text().replace("name: example_project", "name: another"),
            "PROVISION_WORKSPACE_INVALID",
        ),
    ):
        bad = tmp_path / "bad.yml"
        bad.write_text(text)
        code, doc = cli.json("provision", "-p", bad, "-w", ws)
        assert code == 4 and doc["error_code"] == code_expected, doc
        assert "bad.yml" in doc["message"] or code_expected != "PROJECT_FILE_INVALID"
    assert sorted((p.relative_to(ws), p.stat().st_mtime_ns) for p in ws.rglob("*")) == before
    code, doc = cli.json("provision", "add-site", "bad@site", "--org", "x", "-w", ws)
    assert code == 4 and doc["error_code"] == "INVALID_ARGS", doc
    code, doc = cli.json("provision", "renew", "ghost", "-w", ws)
    assert code == 4 and doc["error_code"] == "PARTICIPANT_NOT_FOUND", doc
    code, doc = cli.json("provision", "list", "-w", ws)
    assert code == 0 and len(doc["data"]["participants"]) == 5


def test_a_reissued_certificate_is_refused_by_the_running_server(tmp_path: Path) -> None:
    """Issue 13, item 10: re-issuing a kit used to leave the old certificate working. Now the
    predecessor's serial goes on the server's revocation list, honoured without a restart."""
    with own_federation(tmp_path / "home") as fed:
        admin = fed.kits / "admin@example.com"
        old_admin = tmp_path / "old-admin"
        shutil.copytree(admin, old_admin)
        code, doc = fed.cli.json("system", "status", "--startup-kit", old_admin)
        assert code == 0, doc
        code, doc = fed.cli.json("provision", "renew", "admin@example.com", "site-1", "-w", fed.workspace)
        assert code == 0 and len(doc["data"]["revoked_serials"]) == 2, doc
        revoked = json.loads((fed.kits / "server" / "local" / "revoked.json").read_text())
        assert revoked["serials"] == doc["data"]["revoked_serials"]
        code, doc = fed.cli.json("system", "status", "--startup-kit", old_admin)
        assert code == 2 and doc["error_code"] == "AUTH_FAILED", doc  # the old key stops working
        # the renewed kit (same folder, same identity) works at once; the site still running
        # on its old certificate is closed and unlisted within a second or so
        deadline = time.monotonic() + 15
        while True:
            code, doc = fed.cli.json("system", "status", "--startup-kit", admin)
            assert code == 0, doc
            if {s["name"] for s in doc["data"]["sites"]} == {"site-2"}:
                break
            assert time.monotonic() < deadline, doc
            time.sleep(0.2)


SHORT_LIVED = """\
name: short
certificate_days: 10
participants:
  - {{name: localhost, type: server, org: ops, port: {port}, listen: 127.0.0.1}}
  - {{name: site-1, type: client, org: h1}}
  - {{name: admin@ops.org, type: admin, org: ops, role: member}}
"""


def test_certificates_near_their_end_are_warned_by_status_and_preflight(tmp_path: Path) -> None:
    from shoal.provision.poc import free_port

    cli = Cli(tmp_path / "home")
    (tmp_path / "project.yml").write_text(SHORT_LIVED.format(port=free_port()))
    code, doc = cli.json("provision", "-p", tmp_path / "project.yml", "-w", tmp_path / "ws")
    assert code == 0, doc
    kits = tmp_path / "ws" / "kits"
    code, doc = cli.json("preflight", "-k", kits / "localhost")
    assert code == 0 and doc["data"]["warnings"] == ["certificate validity"], doc
    key = kits / "site-1" / "startup" / "client.key"
    key.chmod(0o644)
    code, doc = cli.json("preflight", "-k", kits / "site-1")
    assert code == 1 and doc["data"]["failed"] == ["key permissions"], doc
    assert f"chmod 600 {key}" in doc["data"]["checks"][-1]["hint"]
    key.chmod(0o600)
    env = cli.env()
    server = subprocess.Popen(
        [sys.executable, "-m", "shoal", "server", "start", "-k", kits / "localhost"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    site = None
    try:
        assert server.stdout is not None and b'"ready"' in server.stdout.readline()
        code, doc = cli.json("preflight", "-k", kits / "localhost")
        assert code == 1 and doc["data"]["failed"] == ["port"], doc  # the running server holds it
        site = subprocess.Popen(
            [sys.executable, "-m", "shoal", "site", "start", "-k", kits / "site-1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        code, doc = cli.json("preflight", "-k", kits / "site-1")
        assert code == 0 and doc["data"]["warnings"] == ["certificate validity"], doc
        deadline = time.monotonic() + 30
        while True:
            code, doc = cli.json("system", "status", "--startup-kit", kits / "admin@ops.org")
            assert code == 0, doc
            if doc["data"]["sites"]:
                break
            assert time.monotonic() < deadline, doc
            time.sleep(0.2)
        expiring = {(c["kind"], c["name"], c["days_left"]) for c in doc["data"]["expiring"]}
        assert expiring == {("server", "localhost", 9), ("admin", "admin@ops.org", 9), ("site", "site-1", 9)}
        text = cli.run("system", "status", "--startup-kit", kits / "admin@ops.org").stdout
        assert "warning: the site certificate of site-1 expires" in text, text
    finally:
        for proc in (site, server):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()  # the pipe "ready" was read from
