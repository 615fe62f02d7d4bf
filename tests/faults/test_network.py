"""The network between a site (or an admin) and the server fails: nothing is lost."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.e2e.conftest import Federation
from tests.e2e.jobs import slow_job
from tests.e2e.test_site_metrics import site_url, value
from tests.faults.test_site_killed import running_round
from tests.federation import server_address
from tests.netproxy import Proxy
from tests.prometheus import scrape_url

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.e2e

IDLE = 3  # seconds without a byte before a transfer counts as stalled, in the routed federation


def kit_through(fed: Federation, proxy: Proxy, tmp_path: Path) -> Path:
    import shutil

    kit = tmp_path / "kit-via-proxy"
    shutil.copytree(fed.kits / "admin@example.com", kit)
    cfg = kit / "startup" / "fed_admin.json"
    data = json.loads(cfg.read_text())
    data["server"]["port"] = proxy.port
    cfg.write_text(json.dumps(data))
    return kit


@pytest.fixture
def proxy(federation: Federation) -> Iterator[Proxy]:
    p = Proxy(server_address(federation))
    try:
        yield p
    finally:
        p.close()


def test_lost_submit_reply_retried_with_its_token_makes_one_job(
    federation: Federation, proxy: Proxy, tmp_path: Path
) -> None:
    kit = kit_through(federation, proxy, tmp_path)
    token = f"lost-reply-{time.time_ns()}"
    proxy.drop_replies_after = 2000  # past the TLS handshake: the upload reaches the server
    code, doc = federation.cli.json(
        "job", "submit", "-j", EXAMPLES / "hello-numpy", "--submit-token", token, "--startup-kit", kit
    )
    assert code == 2 and doc["error_code"] == "CONNECTION_FAILED", doc
    # The fault was the one intended: the request arrived and was stored, only its answer was lost.
    code, doc = federation.cli.json("job", "list", "--submit-token", token)
    assert code == 0 and len(doc["data"]) == 1, doc
    stored = doc["data"][0]["job_id"]
    proxy.drop_replies_after = None
    code, doc = federation.cli.json(
        "job", "submit", "-j", EXAMPLES / "hello-numpy", "--submit-token", token, "--startup-kit", kit
    )
    assert code == 0, doc
    job_id = doc["data"]["job_id"]
    assert job_id == stored
    code, doc = federation.cli.json("job", "list", "--submit-token", token)
    assert [r["job_id"] for r in doc["data"]] == [job_id]
    # idempotent commands give the same answer when retried
    answers = [federation.cli.json("job", "wait", job_id, "--timeout", "120")[1]["data"] for _ in range(2)]
    assert answers[0] == answers[1]


@pytest.fixture
def routed(tmp_path: Path) -> Iterator[tuple[Federation, Proxy]]:
    """A federation whose site-2 reaches the server only through a proxy the test controls."""
    import os
    import signal
    import subprocess
    import sys

    from tests.federation import start_federation, stop_federation

    # Transfers that move nothing for 3 s count as stalled (60 s by default), on every process.
    fed = start_federation(
        tmp_path / "home",
        sites=2,
        env={"SHOAL_TRANSFER_IDLE_TIMEOUT": str(IDLE)},
        site_local={"site-2": {"metrics.json": {"port": 0}}},  # its own /metrics counts reconnects
    )
    proxy = Proxy(server_address(fed))
    cfg = fed.kits / "site-2" / "startup" / "fed_site.json"
    data = json.loads(cfg.read_text())
    data["server"]["port"] = proxy.port
    cfg.write_text(json.dumps(data))
    pids_file = fed.workspace / "run" / "pids.json"
    pids = json.loads(pids_file.read_text())
    os.killpg(pids["site-2"], signal.SIGTERM)
    with (fed.workspace / "logs" / "site-2.log").open("ab") as log:  # the child keeps its own copy
        agent = subprocess.Popen(
            [sys.executable, "-m", "shoal", "site", "start", "-k", fed.kits / "site-2"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=fed.cli.env(),
        )
    pids.pop("site-2")
    pids_file.write_text(json.dumps(pids))
    try:
        wait_sites(fed, {"site-1", "site-2"})
        yield fed, proxy
    finally:
        proxy.close()
        os.killpg(agent.pid, signal.SIGTERM)
        agent.wait(timeout=30)
        stop_federation(fed)


def test_site_rides_out_a_short_link_cut(routed: tuple[Federation, Proxy], tmp_path: Path) -> None:
    """A cut shorter than the reconnect grace costs nothing: the site reconnects, what the server
    said meanwhile is delivered, and every round includes it."""
    fed, proxy = routed
    # Enough rounds that the cut lands mid-job by far: it comes a moment after round 2, while
    # the rounds after the site's return only run the job out.
    rounds = 60
    job = slow_job(tmp_path / "job", rounds=rounds, delay=0.02, meta={"min_clients": 2})
    code, doc = fed.cli.json("job", "submit", "-j", job)
    job_id = doc["data"]["job_id"]
    cut_at = running_round(fed, job_id, at_least=2)  # rounds are going, with both sites
    site_metrics = site_url(fed, "site-2")
    before = scrape_url(site_metrics)
    assert value(before, "shoal_site_connected") == 1 and value(before, "shoal_site_reconnects_total") == 0
    proxy.cut()
    wait_sites(fed, {"site-1"})
    # Every round needs site-2: while it is away none closes, so a round (its task or its
    # result) is in flight across the cut. The cut is kept short (restored as soon as it is
    # seen) so the site's backoff never races its grace.
    away = [running_round(fed, job_id) for _ in range(2)]
    assert away[0] == away[1] and cut_at <= away[0] < rounds - 1, (cut_at, away)
    proxy.restore()
    wait_sites(fed, {"site-1", "site-2"})
    back = scrape_url(site_metrics)  # the site says so too: connected again, once
    assert value(back, "shoal_site_connected") == 1 and value(back, "shoal_site_reconnects_total") == 1
    code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "120")
    meta = fed.cli.json("job", "meta", job_id)[1]["data"]
    assert code == 0, json.dumps({k: meta.get(k) for k in ("status_reason", "first_error")})
    summary = json.loads(
        (
            fed.kits / "server" / "workspace" / "jobs" / job_id / "workspace" / "metrics_summary.json"
        ).read_text()
    )
    assert len(summary["rounds"]) == rounds, summary["rounds"]
    assert all(r["sites"] == ["site-1", "site-2"] for r in summary["rounds"]), summary["rounds"]


FAILS_ON_CUE = """
import os, time
import numpy as np
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
model = flare.receive()
if os.environ["SHOAL_SITE_NAME"] == "site-2":  # cues in its own folder, the one it may write
    open("got-task", "w").close()
    while not os.path.exists("fail-now"):
        time.sleep(0.05)
    raise SystemExit("site-2 gives up")
flare.send(FLModel(params={"w": np.zeros(2)}, num_examples=1))
flare.receive()
"""


def test_a_failure_during_a_short_link_cut_still_reaches_the_server(
    routed: tuple[Federation, Proxy], tmp_path: Path
) -> None:
    """A site whose script fails while its link is down reports it once it is back: the report
    used to be dropped, the server (which kept the site through its grace) then waited for a
    result that could not come, for ever with no round deadline."""
    fed, proxy = routed
    job = tmp_path / "job"
    import shutil

    shutil.copytree(EXAMPLES / "hello-numpy", job, ignore=shutil.ignore_patterns("__pycache__"))
    (job / "app" / "custom" / "client.py").write_text(FAILS_ON_CUE)
    code, doc = fed.cli.json("job", "submit", "-j", job)
    job_id = doc["data"]["job_id"]
    cue = fed.kits / "site-2" / "workspace" / "jobs" / job_id / "work"  # the script's working folder
    deadline = time.monotonic() + 60
    while not (cue / "got-task").exists():
        assert time.monotonic() < deadline, "site-2 never got its task"
        time.sleep(0.05)
    proxy.cut()
    wait_sites(fed, {"site-1"})
    site_log = fed.workspace / "logs" / "site-2.log"
    kept = f"not connected: the failed report of job {job_id} waits for the server"
    (cue / "fail-now").touch()
    deadline = time.monotonic() + 30  # the script exits and the site reports it into a dead link
    while kept not in site_log.read_text():
        assert time.monotonic() < deadline, "site-2 never kept its failure report"
        time.sleep(0.05)
    proxy.restore()
    code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "30")
    assert code == 1 and doc["data"]["status"] == "FAILED", doc
    error = fed.cli.json("job", "meta", job_id)[1]["data"]["first_error"]
    assert error["site"] == "site-2" and "site-2 gives up" in error["message"], error


def run_16mb_job(fed: Federation, tmp_path: Path) -> str:
    """Submit the bench's large-model job with a 16 MB model, wait until it finishes OK, and
    check that site-2 (the routed one) answered every round; return the job id."""
    import shutil

    job = tmp_path / "big"
    shutil.copytree(BENCH / "jobs" / "big", job)
    (job / "app" / "config" / "config_fed_client.json").write_text(
        json.dumps({"script": "client.py", "args": "--mb 16"})
    )
    code, doc = fed.cli.json("job", "submit", "-j", job)
    job_id = str(doc["data"]["job_id"])
    code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "120")
    assert code == 0, doc
    rounds = json.loads(
        (
            fed.kits / "server" / "workspace" / "jobs" / job_id / "workspace" / "metrics_summary.json"
        ).read_text()
    )["rounds"]
    assert all(r["sites"] == ["site-1", "site-2"] for r in rounds)
    return job_id


def test_broken_transfers_resume(routed: tuple[Federation, Proxy], tmp_path: Path) -> None:
    """A model download and a result upload cut in the middle resume where they stopped."""
    fed, proxy = routed
    proxy.cut_once_after_reply_bytes = 6 * 2**20  # the global model on its way down to site-2
    proxy.cut_once_after_request_bytes = 6 * 2**20  # site-2's update on its way up
    job_id = run_16mb_job(fed, tmp_path)
    assert proxy.cuts == 2
    site_log = (fed.workspace / "logs" / "site-2.log").read_text()
    assert "resuming download" in site_log and "(HTTP 206)" in site_log
    # the cut upload went on from what the server held, not from its first byte (and every
    # round had site-2's update, which run_16mb_job checked)
    assert_upload_resumed(site_log, job_id)


def test_stalled_transfers_are_dropped_and_resumed(routed: tuple[Federation, Proxy], tmp_path: Path) -> None:
    """A model download and a result upload whose path silently stops moving (no reset, no
    close: a dropped flow) are dropped after the idle timeout and resumed; no round loses
    site-2, and nothing waited on a wall-clock limit."""
    fed, proxy = routed
    proxy.stall_once_after_reply_bytes = 6 * 2**20  # the global model on its way down to site-2
    proxy.stall_once_after_request_bytes = 6 * 2**20  # site-2's update on its way up
    job_id = run_16mb_job(fed, tmp_path)
    assert proxy.stalls == 2
    site_log = (fed.workspace / "logs" / "site-2.log").read_text()
    assert f"download of /site/v1/jobs/{job_id}/" in site_log
    assert f"no data moved for {IDLE} s" in site_log, site_log[-3000:]  # the download's stall
    assert "resuming download" in site_log
    # the upload's stall: whichever end noticed first (the site's watch, or the server's, whose
    # 504 TIMEOUT reaches the site on the path that still moves), the site resumed it
    assert f"upload to /site/v1/jobs/{job_id}/" in site_log, site_log[-3000:]
    assert_upload_resumed(site_log, job_id)  # what arrived before the stall stayed on the server


def test_the_server_drops_an_upload_that_stops_moving(routed: tuple[Federation, Proxy]) -> None:
    """A body that stops arriving (the sender vanished without closing) is answered TIMEOUT
    after the idle timeout instead of holding the request open forever; nothing is stored."""
    from shoal.api import tls
    from shoal.api.http import Connection
    from shoal.api.kits import resolve_admin_kit

    fed, _ = routed
    before = fed.cli.json("job", "list")[1]["data"]
    kit = resolve_admin_kit(None, str(fed.kits / "admin@example.com"))
    conn = Connection(kit.host, kit.port, tls.client_context(kit.path), timeout=5)
    conn.connect()
    conn.settimeout(IDLE + 20)
    started = time.monotonic()
    head = "POST /api/v1/jobs?study=default HTTP/1.1\r\nHost: x\r\nContent-Type: application/zip\r\n"
    conn._sock.sendall((head + "Content-Length: 100000\r\n\r\n").encode() + b"PK" * 50)  # type: ignore[union-attr]
    response = conn._read_response()
    waited = time.monotonic() - started
    body = json.loads(response.read())
    conn.close()
    assert response.status == 504 and body["error_code"] == "TIMEOUT", body
    assert IDLE - 0.5 <= waited < IDLE + 10, waited
    assert fed.cli.json("job", "list")[1]["data"] == before


def test_the_server_drops_a_download_nobody_reads(routed: tuple[Federation, Proxy], tmp_path: Path) -> None:
    """A reader that stops taking bytes (a frozen process keeps its connection open with a zero
    window) is cut off after the idle timeout instead of holding the server's handler forever."""
    from shoal.api import tls
    from shoal.api.http import Connection, ProtocolError
    from shoal.api.kits import resolve_admin_kit

    fed, _ = routed
    job_id = run_16mb_job(fed, tmp_path)  # its result holds the 16 MB model, stored uncompressed
    kit = resolve_admin_kit(None, str(fed.kits / "admin@example.com"))
    conn = Connection(kit.host, kit.port, tls.client_context(kit.path), timeout=5)
    conn.connect()
    request = f"GET /api/v1/jobs/{job_id}/result?study=default HTTP/1.1\r\nHost: x\r\n\r\n"
    conn._sock.sendall(request.encode())  # type: ignore[union-attr]
    time.sleep(IDLE + 3)  # take nothing: the socket buffers fill and the server's writes block
    conn.settimeout(10)
    response = conn._read_response()
    assert response.status == 200
    length = int(response.headers["content-length"])
    got = 0
    with pytest.raises((ProtocolError, OSError)):  # what was buffered, then the connection ends
        for piece in response.iter_body():
            got += len(piece)
    conn.close()
    assert 0 < got < length, (got, length)
    server_log = (fed.workspace / "logs" / "server.log").read_text()
    assert f"the reader took nothing for {IDLE:g} s" in server_log
    assert fed.cli.json("job", "meta", job_id)[0] == 0  # and the server carries on


def assert_upload_resumed(site_log: str, job_id: str) -> None:
    """The site log shows a result upload of the job resumed past its first byte and short of
    its end: the server kept what arrived before the fault, and only the rest was sent."""
    pattern = rf"resuming upload to /site/v1/jobs/{job_id}/\S+ at byte (\d+) of (\d+)"
    resumed = [(int(a), int(b)) for a, b in re.findall(pattern, site_log)]
    assert any(0 < at < size for at, size in resumed), (resumed, site_log[-3000:])


def wait_sites(fed: Federation, wanted: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code, doc = fed.cli.json("system", "status")
        if code == 0 and {s["name"] for s in doc["data"]["sites"]} == wanted:
            return
        assert time.monotonic() < deadline, doc
        time.sleep(0.1)
