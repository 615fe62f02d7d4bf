"""A full store refuses submits with a clear error and damages nothing already stored."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.e2e.conftest import Federation, start_federation, stop_federation
from tests.e2e.jobs import copy_hello

pytestmark = pytest.mark.e2e


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Federation]:
    # room for about one hello-numpy archive (~3 KB zipped)
    federation = start_federation(tmp_path / "home", server_local={"limits.json": {"max_store_bytes": 6000}})
    try:
        yield federation
    finally:
        stop_federation(federation)


def test_submit_is_refused_when_the_store_is_full(fed: Federation, tmp_path: Path) -> None:
    code, doc = fed.cli.json("job", "submit", "-j", EXAMPLES / "hello-numpy", "--wait", "--timeout", "120")
    assert code == 0, doc
    first = doc["data"]["job_id"]
    bigger = copy_hello(tmp_path / "bigger")
    (bigger / "app" / "custom" / "notes.bin").write_bytes(os.urandom(8000))
    code, doc = fed.cli.json("job", "submit", "-j", bigger)
    assert code == 1 and doc["error_code"] == "STORE_FULL" and doc["hint"], doc
    code, listed = fed.cli.json("job", "list")
    assert [r["job_id"] for r in listed["data"]] == [first]
    code, doc = fed.cli.json("job", "download", first, "-o", tmp_path / "dl")
    assert code == 0 and doc["data"]["missing_artifacts"] == []
    # the same content again takes no new room (content-addressed), so it is accepted
    code, doc = fed.cli.json("job", "submit", "-j", EXAMPLES / "hello-numpy")
    assert code == 0, doc
    db = fed.kits / "server" / "workspace" / "store.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert json.loads((fed.kits / "server" / "local" / "limits.json").read_text())["max_store_bytes"] == 6000


def test_submit_is_refused_when_the_disk_under_the_store_is_nearly_full(tmp_path: Path) -> None:
    """The free-space floor (``min_free_bytes``) set above what the disk has: every submit is
    refused STORE_FULL before anything is written, as on a disk that really filled up."""
    floor = shutil.disk_usage(tmp_path).total * 4
    fed = start_federation(tmp_path / "home", server_local={"limits.json": {"min_free_bytes": floor}})
    try:
        blobs = fed.kits / "server" / "workspace" / "blobs"
        before = sorted(blobs.rglob("*")) if blobs.exists() else []
        code, doc = fed.cli.json("job", "submit", "-j", EXAMPLES / "hello-numpy")
        assert code == 1 and doc["error_code"] == "STORE_FULL" and "nearly full" in doc["message"], doc
        assert fed.cli.json("job", "list")[1]["data"] == []
        assert (sorted(blobs.rglob("*")) if blobs.exists() else []) == before
    finally:
        stop_federation(fed)
