"""A real shoal server keeping its blobs in an S3-compatible bucket (moto's server mode, a
process of its own): a hello-numpy job is submitted, runs, downloads and is deleted, and what
it left in the bucket goes with it. The bucket's credentials reach no log and no error."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.conftest import EXAMPLES
from tests.e2e.jobs import slow_job
from tests.e2e.test_federation import expected_fedavg
from tests.federation import own_federation, start_federation
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server

pytestmark = pytest.mark.e2e


def _no_credentials_under(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".log", ".txt", ".json"):
            text = path.read_text(errors="replace")
            assert ACCESS_KEY not in text and SECRET_KEY not in text, path


def test_a_job_lives_in_the_bucket_from_submit_to_delete(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    with own_federation(tmp_path / "fed", env=s3.env(bucket, "prod/shoal")) as fed:
        code, doc = fed.cli.json("job", "submit", "-j", EXAMPLES / "hello-numpy")
        assert code == 0, doc
        job_id = doc["data"]["job_id"]
        keys = s3.keys(bucket)
        assert len(keys) == 1 and keys[0].startswith("prod/shoal/"), keys
        [server_ws] = [db.parent for db in fed.workspace.rglob("store.db")]
        assert not (server_ws / "blobs").exists()  # nothing went to the folder store

        code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "120")
        assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc

        # the job's result went to the bucket when it ended, and left the server's disk
        kept = [k for k in s3.keys(bucket) if k.startswith(f"prod/shoal/jobs/{job_id}/")]
        for name in (
            "FL_global_model.safetensors",
            "metrics_summary.json",
            "server/log.txt",
            "site-1/log.txt",
        ):
            assert f"prod/shoal/jobs/{job_id}/workspace/{name}" in kept, kept
        assert not (server_ws / "jobs" / job_id / "workspace").exists()
        code, doc = fed.cli.json("job", "logs", job_id, "--site", "all")
        assert code == 0 and set(doc["data"]["logs"]) == {"server", "site-1", "site-2"}, doc
        assert doc["data"]["logs"]["site-1"], doc  # read back from the bucket

        code, doc = fed.cli.json("job", "download", job_id, "-o", tmp_path / "dl")
        assert code == 0, doc
        assert f"prod/shoal/jobs/{job_id}/result.zip" in s3.keys(bucket)  # built once, kept there
        artifacts = doc["data"]["artifacts"]
        got = load_file(artifacts["global_model"])
        want = expected_fedavg(["site-1", "site-2"], rounds=5, lr=0.05, epochs=10)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12)
        # the job's own files came out of the bucket's archive into the result
        metas = [json.loads(p.read_text()) for p in (tmp_path / "dl" / job_id).rglob("job/meta.json")]
        assert [m.get("name") for m in metas] == ["hello-numpy"], metas

        code, doc = fed.cli.json("job", "delete", job_id, "--force")
        assert code == 0, doc
        assert s3.keys(bucket) == []  # the archive's object went with the job

        s3.client().delete_bucket(Bucket=bucket)  # the bucket goes away under the running server
        refused = fed.cli.run("job", "submit", "-j", EXAMPLES / "hello-numpy", "--format", "json")
        doc = json.loads(refused.stdout)
        assert refused.returncode == 2 and doc["error_code"] == "BLOB_STORE_UNAVAILABLE", doc
        assert ACCESS_KEY not in refused.stdout + refused.stderr
        assert SECRET_KEY not in refused.stdout + refused.stderr
        code, doc = fed.cli.json("job", "list")
        assert code == 0 and doc["data"] == [], doc  # the refused submit left no job
        code, doc = fed.cli.json("system", "status")  # how an operator finds out: it still answers
        assert code == 0 and doc["data"]["server"]["store_bytes"] > 0, doc
        _no_credentials_under(fed.workspace)


def test_a_server_whose_bucket_is_missing_refuses_to_start_and_names_no_credential(
    s3: S3Server, tmp_path: Path
) -> None:
    env = s3.env("no-such-bucket-for-shoal")
    with pytest.raises(AssertionError) as refused:
        start_federation(tmp_path / "fed", env=env)
    said = str(refused.value)
    logs = tmp_path / "fed" / "poc" / "logs"
    server_log = (logs / "server.log").read_text()
    assert "BLOB_STORE_UNAVAILABLE" in server_log + said, server_log + said
    assert ACCESS_KEY not in said + server_log and SECRET_KEY not in said + server_log
    _no_credentials_under(tmp_path / "fed")


def test_a_job_the_server_left_running_is_kept_in_the_bucket_at_the_next_start(
    s3: S3Server, tmp_path: Path
) -> None:
    """A server stopped under a running job leaves its files (the logs so far) on local disk;
    the next start settles the job and puts them where the blob store keeps files."""
    bucket = s3.new_bucket()
    with own_federation(tmp_path / "fed", env=s3.env(bucket, "p")) as fed:
        code, doc = fed.cli.json("job", "submit", "-j", slow_job(tmp_path / "slow"))
        assert code == 0, doc
        job_id = doc["data"]["job_id"]
        [server_ws] = [db.parent for db in fed.workspace.rglob("store.db")]
        local = server_ws / "jobs" / job_id / "workspace"
        deadline = time.monotonic() + 60
        log = local / "server" / "log.txt"
        # Its first line, not only the file: a server stopped between the two left an empty log
        # (a loaded machine did), and an empty log reads back as an empty text.
        while not (log.is_file() and log.stat().st_size > 0) and time.monotonic() < deadline:
            time.sleep(0.2)
        stopped = fed.cli.run("poc", "stop", "--workspace", fed.workspace)
        assert stopped.returncode == 0, stopped.stderr
        assert (local / "server" / "log.txt").is_file()  # left on disk by the stopped server
        assert not [k for k in s3.keys(bucket) if k.startswith(f"p/jobs/{job_id}/")]

        started = fed.cli.run("poc", "start", "--workspace", fed.workspace)
        assert started.returncode == 0, started.stderr + started.stdout
        key = f"p/jobs/{job_id}/workspace/server/log.txt"
        deadline = time.monotonic() + 60
        while key not in s3.keys(bucket) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert key in s3.keys(bucket), s3.keys(bucket)
        while local.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not local.exists()  # uploaded, then gone from the server's disk
        code, doc = fed.cli.json("job", "meta", job_id)
        assert code == 0 and doc["data"]["status"] == "ABANDONED", doc
        code, doc = fed.cli.json("job", "logs", job_id)
        assert code == 0 and doc["data"]["logs"]["server"], doc  # read back from the bucket
