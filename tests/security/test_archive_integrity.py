"""A job archive altered where it is stored (a bucket others can write, a disk that rots): the
sites check what they fetch against the server's record of it (its SHA-256, the blob's name)
and run nothing of an archive that does not match."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.jobs import copy_hello
from tests.federation import own_federation
from tests.security.hostile_site import stop_site_agent

pytestmark = pytest.mark.e2e

TAMPERED = "print('TAMPERED CODE RAN', flush=True)\nraise SystemExit(0)\n"


def test_a_site_runs_nothing_of_an_archive_altered_in_the_store(tmp_path: Path) -> None:
    with own_federation(tmp_path / "home") as fed:
        for site in ("site-1", "site-2"):
            stop_site_agent(fed, site)  # the job waits, stored, for its sites
        code, doc = fed.cli.json("job", "submit", "-j", copy_hello(tmp_path / "job"))
        assert code == 0, doc
        job_id = doc["data"]["job_id"]
        root = fed.kits / "server" / "workspace" / "blobs"
        blobs = [p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "tmp"]
        assert len(blobs) == 1, blobs
        other = copy_hello(tmp_path / "other")
        (other / "app" / "custom" / "client.py").write_text(TAMPERED)
        altered = tmp_path / "altered.zip"
        subprocess.run(
            ["python3", "-m", "zipfile", "-c", str(altered), *map(str, sorted(other.iterdir()))], check=True
        )
        blobs[0].write_bytes(altered.read_bytes())  # same name (the server's record), other content

        agents = []
        for site in ("site-1", "site-2"):
            with (fed.workspace / "logs" / f"{site}.log").open("ab") as log:  # the agent has its own
                agents.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "shoal", "site", "start", "-k", fed.kits / site],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        env=fed.cli.env(),
                    )
                )
        try:
            code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "60")
            assert code == 1 and doc["data"]["status"] == "FAILED", doc
            code, meta = fed.cli.json("job", "meta", job_id)
            error = meta["data"]["first_error"]
            assert "does not match the server's record" in error["message"], error
            for site in ("site-1", "site-2"):
                jobs = fed.kits / site / "workspace" / "jobs" / job_id
                assert not (jobs / "job").exists() and not (jobs / "job.zip").exists()
                logs = "".join(p.read_text(errors="replace") for p in jobs.rglob("log.txt"))
                assert "TAMPERED CODE RAN" not in logs
        finally:
            for agent in agents:
                os.killpg(agent.pid, signal.SIGTERM)
                agent.wait(10)
        assert json.loads((fed.workspace / "poc.json").read_text())  # the POC is still there to stop
