"""The server as an operator runs it: one server per workspace, one channel per site, revocation
of a connected site, and logs uploaded side by side. Real server and site processes throughout."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shoal.security.tls import client_ssl_context
from shoal.server.app import REVOCATION_CHECK
from tests.conftest import Cli
from tests.e2e.conftest import Federation
from tests.e2e.jobs import slow_job
from tests.federation import own_federation, tls_session

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with own_federation(tmp_path_factory.mktemp("ops")) as federation:
        yield federation


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


def listed_sites(fed: Federation) -> list[str]:
    code, doc = fed.cli.json("system", "status")
    assert code == 0, doc
    return [site["name"] for site in doc["data"]["sites"]]


def status_of(fed: Federation, job_id: str) -> str:
    code, doc = fed.cli.json("job", "meta", job_id)
    assert code == 0, doc
    return str(doc["data"]["status"])


def start_slow_job(fed: Federation, tmp_path: Path) -> str:
    code, doc = fed.cli.json("job", "submit", "-j", slow_job(tmp_path / "slow", delay=0.2))
    assert code == 0, doc
    job_id = str(doc["data"]["job_id"])
    eventually(lambda: status_of(fed, job_id) == "RUNNING", 60, f"job {job_id} running")
    return job_id


def test_a_second_server_on_a_live_workspace_is_refused(fed: Federation, tmp_path: Path) -> None:
    job_id = start_slow_job(fed, tmp_path)
    try:
        code, doc = fed.cli.json("server", "start", "-k", fed.kits / "server", "--port", "0", timeout=60)
        assert code == 4 and doc["error_code"] == "LOCAL_FILE_ERROR", doc
        pids = json.loads((fed.workspace / "run" / "pids.json").read_text())
        assert f"pid {pids['server']}" in doc["message"] and f"pid {pids['server']}" in doc["hint"]
        assert status_of(fed, job_id) == "RUNNING", "the running server's job was not touched"
    finally:
        fed.cli.json("job", "abort", job_id, "--force")


def test_a_duplicate_site_agent_does_not_take_the_site_offline(fed: Federation, tmp_path: Path) -> None:
    """A newer connection of a site closes the older one (CLOSE_REPLACED), whose agent comes back
    after its longest backoff: the site is never left connected but unlisted, and two agents of
    one kit take turns every several seconds rather than many times a second."""
    server_log = fed.workspace / "logs" / "server.log"
    replaced = "connected again; closing its older connection"
    before = server_log.read_text().count(replaced)
    duplicate = subprocess.Popen(
        [sys.executable, "-m", "shoal", "site", "start", "-k", fed.kits / "site-2", "--workspace", tmp_path],
        env=fed.cli.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        eventually(lambda: server_log.read_text().count(replaced) > before, 60, "the duplicate connected")
        # The agent it replaced waits its longest backoff (10 s, jittered to at least 5 s): over
        # the next 4 s no second replacement may come, where ping-pong made several a second.
        # A window, not a wait for an event: what it checks is that nothing happens.
        time.sleep(4)
        assert server_log.read_text().count(replaced) - before == 1  # no ping-pong
    finally:
        os.killpg(duplicate.pid, signal.SIGTERM)
        duplicate.wait(timeout=30)
    # The original agent's channel was closed when the duplicate replaced it; it reconnects.
    eventually(lambda: listed_sites(fed) == ["site-1", "site-2"], 30, "site-2 listed again")


async def _put_logs_side_by_side(fed: Federation, job_id: str) -> tuple[int, int]:
    """log.txt starts, log.json arrives whole while log.txt is half sent, then log.txt ends."""
    server = json.loads((fed.kits / "site-1" / "startup" / "fed_site.json").read_text())["server"]
    url = f"https://{server['host']}:{server['port']}/site/v1/jobs/{job_id}/log"
    halfway = asyncio.Event()
    json_done = asyncio.Event()

    first_half = b"first half of the text log\n" * 20000

    async def text_body() -> AsyncIterator[bytes]:
        yield first_half
        halfway.set()
        await json_done.wait()
        yield b"second half\n"

    async with tls_session(client_ssl_context(fed.kits / "site-1")) as session:

        async def put_text() -> int:
            async with session.put(url, params={"file": "log.txt"}, data=text_body()) as resp:
                return resp.status

        async def put_json() -> int:
            await halfway.wait()
            # until the server has written the text log's first half into its temporary file
            jobs = fed.kits / "server" / "workspace" / "jobs" / job_id
            deadline = time.monotonic() + 30
            while sum(p.stat().st_size for p in jobs.rglob("log.txt.part")) < len(first_half):
                assert time.monotonic() < deadline, "the text log's first half never reached the server"
                await asyncio.sleep(0.02)
            body = json.dumps({"msg": "the json log"}).encode()
            async with session.put(url, params={"file": "log.json"}, data=body) as resp:
                json_done.set()
                return resp.status

        text_status, json_status = await asyncio.gather(put_text(), put_json())
    return text_status, json_status


def test_a_sites_two_log_uploads_do_not_share_a_file(fed: Federation, tmp_path: Path) -> None:
    job_id = start_slow_job(fed, tmp_path)
    try:
        assert asyncio.run(_put_logs_side_by_side(fed, job_id)) == (200, 200)
        site_dir = next((fed.kits / "server" / "workspace" / "jobs" / job_id).rglob("site-1/log.txt")).parent
        assert (
            site_dir / "log.txt"
        ).read_bytes() == b"first half of the text log\n" * 20000 + b"second half\n"
        assert json.loads((site_dir / "log.json").read_text()) == {"msg": "the json log"}
    finally:
        fed.cli.json("job", "abort", job_id, "--force")


def test_a_revoked_site_is_closed_unlisted_and_kept_out(fed: Federation, tmp_path: Path) -> None:
    revoked = fed.kits / "server" / "local" / "revoked.json"
    server_log = fed.workspace / "logs" / "server.log"
    closing = "closing the channel of site site-1"
    before = server_log.read_text().count(closing)
    written = time.time()
    revoked.write_text(json.dumps({"names": ["site-1"]}))
    try:
        eventually(lambda: listed_sites(fed) == ["site-2"], 10, "site-1 unlisted")
        # When the server closed it, by its own log's clock: at its next look at the file
        # (REVOCATION_CHECK, every second), plus what a loaded machine may add.
        [line] = [ln for ln in server_log.read_text().splitlines() if closing in ln][before:]
        closed = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
        assert -0.01 <= closed - written < REVOCATION_CHECK + 1.0, (line, written)
        # A damaged list, then a wrongly typed one, while running: the last good list holds.
        site_log = fed.workspace / "logs" / "site-1.log"
        refused = "the server refuses this site's certificate"  # its agent tried, and was refused
        for damaged in ('{"names": ["si', json.dumps({"names": "site-1"})):
            tries = site_log.read_text().count(refused)
            revoked.write_text(damaged)

            # site-1's agent tried again after the list was damaged (its backoff is up to 15 s)
            def tried_again(n: int = tries) -> bool:
                return site_log.read_text().count(refused) > n

            eventually(tried_again, 40, "site-1 tried again")
            assert listed_sites(fed) == ["site-2"], damaged
        code, doc = fed.cli.json(
            "job", "submit", "-j", slow_job(tmp_path / "one", rounds=1, meta={"min_clients": 1})
        )
        assert code == 0, doc
        code, doc = fed.cli.json("job", "wait", doc["data"]["job_id"], "--timeout", "120")
        assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
        code, doc = fed.cli.json("job", "meta", doc["data"]["job_id"])
        assert "site-1" not in json.dumps(doc["data"].get("sites", doc["data"])), doc
    finally:
        revoked.unlink()
    eventually(lambda: listed_sites(fed) == ["site-1", "site-2"], 30, "site-1 back once un-revoked")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    """A POC that is prepared, never started: each start-up case works on a copy of its kit."""
    home = tmp_path_factory.mktemp("prepared")
    cli = Cli(home)
    proc = cli.run("poc", "prepare", "-n", "1", "--workspace", home / "poc")
    assert proc.returncode == 0, proc.stderr
    return Federation(cli, home / "poc")


def start_refused(prepared: Federation, kit: Path, *args: str | Path) -> tuple[int, dict[str, str]]:
    """``server start`` on ``kit``; it must refuse at once (a server that starts would time out)."""
    code, doc = prepared.cli.json("server", "start", "-k", kit, "--port", "0", *args, timeout=30)
    assert doc["status"] == "error", doc
    return code, doc


def kit_copy(prepared: Federation, tmp_path: Path) -> Path:
    kit = tmp_path / "server"
    shutil.copytree(prepared.kits / "server", kit)
    return kit


@pytest.mark.parametrize(
    ("name", "content", "named"),
    [
        ("authorization.json", "{bad", "is not valid JSON"),
        ("authorization.json", '{"roles": {"lead": {"view": ["any"]}}}', "lead"),
        ("authorization.json", '{"roles": ["lead"]}', "'roles'"),
        ("studies.json", '{"studies": {"x": {"sites": [', "is not valid JSON"),
        ("studies.json", '{"studies": {"x": {"admins": "lead@x.org"}}}', "'studies.x.admins'"),
        (
            "studies.json",
            '{"studies": {"x": {"admins": ["lead@x.org"]}}}',
            "'studies.x.admins[0]' is a bare name",
        ),
        ("studies.json", '{"studies": {"x": {"admin": ["lead@x.org"]}}}', "unknown key(s) admin"),
        ("studies.json", '{"studies": "x"}', "'studies'"),
        ("limits.json", '{"max_upload_bytes": "lots"}', "'max_upload_bytes'"),
        ("limits.json", '{"min_free_bytes": true}', "'min_free_bytes'"),
        ("limits.json", '{"reject_non_finite_updates": "false"}', "'reject_non_finite_updates'"),
        ("limits.json", '{"max_num_examples": -1}', "'max_num_examples'"),
        ("limits.json", '{"tls_handshake_timeout": 0}', "'tls_handshake_timeout'"),
        ("limits.json", '{"request_head_timeout": "30"}', "'request_head_timeout'"),
        ("limits.json", '{"max_connections_per_ip": 1.5}', "'max_connections_per_ip'"),
        ("revoked.json", '{"names": ["admin@ex', "is not valid JSON"),
        ("revoked.json", '{"names": "admin@example.com"}', "'names'"),
        ("revoked.json", '{"serials": [42]}', "'serials'"),
    ],
)
def test_a_damaged_operator_file_stops_the_start_naming_it(
    prepared: Federation, tmp_path: Path, name: str, content: str, named: str
) -> None:
    kit = kit_copy(prepared, tmp_path)
    (kit / "local" / name).write_text(content)
    code, doc = start_refused(prepared, kit, "--workspace", tmp_path / "ws")
    assert code == 4 and doc["error_code"] == "LOCAL_FILE_ERROR", doc
    assert str(kit / "local" / name) in doc["message"] and named in doc["message"], doc
    assert not (tmp_path / "ws").exists(), "a refused start writes nothing"


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_a_port_out_of_range_is_invalid_args(prepared: Federation, tmp_path: Path, port: str) -> None:
    code, doc = prepared.cli.json(
        "server", "start", "-k", prepared.kits / "server", "--workspace", tmp_path, "--port", port, timeout=30
    )
    assert code == 4 and doc["error_code"] == "INVALID_ARGS" and port in doc["message"], doc


def test_a_port_in_use_is_named_with_a_fitting_hint(prepared: Federation, tmp_path: Path) -> None:
    """It was a LOCAL_FILE_ERROR whose hint spoke of paths and permissions."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        code, doc = prepared.cli.json(
            "server",
            "start",
            "-k",
            prepared.kits / "server",
            "--workspace",
            tmp_path,
            "--port",
            port,
            timeout=30,
        )
    assert code == 4 and doc["error_code"] == "LOCAL_FILE_ERROR", doc
    assert f"127.0.0.1:{port}" in doc["message"] and "--port" in doc["hint"], doc


def test_a_workspace_that_cannot_be_used_is_local_file_error(prepared: Federation, tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    code, doc = start_refused(prepared, prepared.kits / "server", "--workspace", not_a_folder)
    assert code == 4 and doc["error_code"] == "LOCAL_FILE_ERROR" and str(not_a_folder) in doc["message"], doc
    (tmp_path / "ws" / "store.db").mkdir(parents=True)  # sqlite: "unable to open database file"
    code, doc = start_refused(prepared, prepared.kits / "server", "--workspace", tmp_path / "ws")
    assert code == 4 and doc["error_code"] == "LOCAL_FILE_ERROR" and "store.db" in doc["message"], doc


@pytest.mark.parametrize(
    ("description", "named"),
    [({"kind": "server"}, "'project'"), ({"kind": "server", "project": "p", "sites": "site-1"}, "'sites'")],
)
def test_a_server_kit_without_its_project_is_refused(
    prepared: Federation, tmp_path: Path, description: dict[str, object], named: str
) -> None:
    kit = kit_copy(prepared, tmp_path)
    (kit / "startup" / "fed_server.json").write_text(json.dumps(description))
    code, doc = start_refused(prepared, kit, "--workspace", tmp_path / "ws")
    assert code == 2 and doc["error_code"] == "STARTUP_KIT_MISSING" and named in doc["message"], doc


def test_a_server_that_cannot_confine_job_code_as_required_is_refused(
    prepared: Federation, tmp_path: Path
) -> None:
    """SHOAL_SANDBOX=required on a kernel without Landlock (SHOAL_LANDLOCK_MAX_ABI=0 plays one):
    the server refuses to start, before its workspace is written; a bad SHOAL_SANDBOX too."""
    kit = kit_copy(prepared, tmp_path)
    env = {**prepared.cli.env(), "SHOAL_SANDBOX": "required", "SHOAL_LANDLOCK_MAX_ABI": "0"}
    code, doc = prepared.cli.json("server", "start", "-k", kit, "--port", "0", timeout=30, env=env)
    assert code == 4 and doc["error_code"] == "SANDBOX_UNAVAILABLE", doc
    assert not (kit / "workspace" / "store.db").exists()
    env["SHOAL_SANDBOX"] = "sometimes"
    code, doc = prepared.cli.json("server", "start", "-k", kit, "--port", "0", timeout=30, env=env)
    assert code == 4 and doc["error_code"] == "INVALID_ARGS" and "SHOAL_SANDBOX" in doc["message"], doc
