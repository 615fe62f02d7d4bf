"""A real server on PostgreSQL (SHOAL_STORE_URL): hello-numpy finishes, the job outlives a server
restart in the database, the server rides out a database restart, and neither the logs nor a
refused start show the password."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import EXAMPLES, Cli
from tests.federation import own_federation

pytestmark = pytest.mark.e2e
HELLO = EXAMPLES / "hello-numpy"


def test_hello_numpy_on_postgres_survives_server_and_database_restarts(postgres: Any, tmp_path: Path) -> None:
    url = postgres.new_database()
    with own_federation(tmp_path / "home", env={"SHOAL_STORE_URL": url}) as fed:
        code, doc = fed.cli.json("job", "submit", "-j", HELLO)
        assert code == 0, doc
        job_id = doc["data"]["job_id"]
        code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "120")
        assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc

        stopped = fed.cli.run("poc", "stop", "--workspace", fed.workspace)
        assert stopped.returncode == 0, stopped.stderr
        with psycopg.connect(url) as conn:  # the job is in PostgreSQL, not in a file
            row = conn.execute("SELECT status, name FROM jobs WHERE job_id = %s", (int(job_id),)).fetchone()
        assert row == ("FINISHED_OK", "hello-numpy")
        assert not list(fed.workspace.rglob("store.db")), "no SQLite store beside a PostgreSQL one"
        started = fed.cli.run("poc", "start", "--workspace", fed.workspace)
        assert started.returncode == 0, started.stderr + started.stdout

        code, doc = fed.cli.json("job", "list")
        assert code == 0, doc
        assert [(r["job_id"], r["status"]) for r in doc["data"]] == [(job_id, "FINISHED_OK")]
        code, doc = fed.cli.json("job", "meta", job_id)
        assert code == 0 and doc["data"]["job_name"] == "hello-numpy", doc

        postgres.restart()  # the server's session ends under it: its next calls take a new one
        code, doc = fed.cli.json("job", "list")
        assert code == 0 and [r["job_id"] for r in doc["data"]] == [job_id], doc
        code, doc = fed.cli.json("job", "submit", "-j", HELLO)
        assert code == 0, doc
        code, doc = fed.cli.json("job", "wait", doc["data"]["job_id"], "--timeout", "120")
        assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc

        logs = "".join(p.read_text(errors="replace") for p in (fed.workspace / "logs").glob("*.log"))
        assert f"job store: postgresql://shoal:***@127.0.0.1:{postgres.port}/" in logs
        assert postgres.password not in logs


def test_a_server_refused_by_postgres_names_the_store_without_the_password(
    postgres: Any, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    prepared = Cli(home).run("poc", "prepare", "-n", "1", "--workspace", home / "poc")
    assert prepared.returncode == 0, prepared.stderr
    wrong = "Wrong-" + postgres.password[::-1]
    cli = Cli(home, extra_env={"SHOAL_STORE_URL": postgres.url(password=wrong)})
    proc = cli.run(
        "server", "start", "-k", home / "poc" / "kits" / "server", "--port", "0",
        "--workspace", tmp_path / "ws", "--format", "json", timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert '"STORE_UNAVAILABLE"' in proc.stdout, proc.stdout
    assert f"postgresql://shoal:***@127.0.0.1:{postgres.port}/postgres" in proc.stdout
    for secret in (wrong, postgres.password):
        assert secret not in proc.stdout + proc.stderr


def test_the_store_may_be_named_in_the_server_kits_local_storage_json(postgres: Any, tmp_path: Path) -> None:
    """Issue 17: the store's URL in the server kit (local/storage.json) instead of the environment;
    a wrongly typed value stops the start naming the key but never showing the value."""
    url = postgres.new_database()
    home = tmp_path / "home"
    cli = Cli(home)
    assert cli.run("poc", "prepare", "-n", "1", "--workspace", home / "poc").returncode == 0
    storage = home / "poc" / "kits" / "server" / "local" / "storage.json"
    storage.write_text(json.dumps({"store_url": url}))
    started = cli.run("poc", "start", "--workspace", home / "poc")
    assert started.returncode == 0, started.stderr + started.stdout
    try:
        code, doc = cli.json("job", "list")
        assert code == 0 and doc["data"] == [], doc
        assert not list((home / "poc").rglob("store.db")), "the server took the store from storage.json"
        logs = "".join(p.read_text(errors="replace") for p in (home / "poc" / "logs").glob("*.log"))
        assert f"job store: postgresql://shoal:***@127.0.0.1:{postgres.port}/" in logs
        assert postgres.password not in logs
    finally:
        cli.run("poc", "stop", "--workspace", home / "poc")
    storage.write_text(json.dumps({"store_url": 5, "blobs_url": "s3://b"}))
    proc = cli.run(
        "server",
        "start",
        "-k",
        home / "poc" / "kits" / "server",
        "--port",
        "0",
        "--format",
        "json",
        timeout=60,
    )
    assert proc.returncode == 4 and '"LOCAL_FILE_ERROR"' in proc.stdout and "store_url" in proc.stdout, (
        proc.stdout
    )
