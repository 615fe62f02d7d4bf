"""The network between a site (or an admin) and the server fails: nothing is lost."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.e2e.conftest import Federation
from tests.e2e.jobs import slow_job
from tests.netproxy import Proxy

pytestmark = pytest.mark.e2e


def server_address(fed: Federation) -> tuple[str, int]:
    poc = json.loads((fed.workspace / "poc.json").read_text())
    return poc["server"]["host"], int(poc["server"]["port"])


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
    proxy.drop_replies_after = None
    code, doc = federation.cli.json(
        "job", "submit", "-j", EXAMPLES / "hello-numpy", "--submit-token", token, "--startup-kit", kit
    )
    assert code == 0, doc
    job_id = doc["data"]["job_id"]
    code, doc = federation.cli.json("job", "list", "--submit-token", token)
    assert [r["job_id"] for r in doc["data"]] == [job_id]
    # idempotent commands give the same answer when retried
    answers = [federation.cli.json("job", "wait", job_id, "--timeout", "120")[1]["data"] for _ in range(2)]
    assert answers[0] == answers[1]


def test_site_reconnects_after_the_link_returns_and_rejoins(tmp_path: Path) -> None:
    from tests.federation import start_federation, stop_federation

    fed = start_federation(tmp_path / "home", sites=2)
    proxy = Proxy(server_address(fed))
    try:
        # route site-2 through the proxy: rewrite its kit and restart its agent
        import os
        import signal
        import subprocess
        import sys

        cfg = fed.kits / "site-2" / "startup" / "fed_site.json"
        data = json.loads(cfg.read_text())
        data["server"]["port"] = proxy.port
        cfg.write_text(json.dumps(data))
        pids = json.loads((fed.workspace / "run" / "pids.json").read_text())
        os.killpg(pids["site-2"], signal.SIGTERM)
        log = (fed.workspace / "logs" / "site-2.log").open("ab")
        agent = subprocess.Popen(
            [sys.executable, "-m", "shoal", "site", "start", "-k", fed.kits / "site-2"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=fed.cli.env(),
        )
        pids["site-2"] = agent.pid
        (fed.workspace / "run" / "pids.json").write_text(json.dumps(pids))
        wait_sites(fed, {"site-1", "site-2"})

        job = slow_job(tmp_path / "job", rounds=300, delay=0.02, meta={"min_clients": 1})
        code, doc = fed.cli.json("job", "submit", "-j", job)
        job_id = doc["data"]["job_id"]
        time.sleep(1.0)
        proxy.cut()
        wait_sites(fed, {"site-1"})
        time.sleep(0.5)
        proxy.restore()
        wait_sites(fed, {"site-1", "site-2"})
        code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "120")
        assert code == 0, doc
        code, doc = fed.cli.json("job", "download", job_id, "-o", tmp_path / "dl")
        rounds = json.loads(Path(doc["data"]["artifacts"]["metrics_summary"]).read_text())["rounds"]
        assert any(r["sites"] == ["site-1"] for r in rounds), "site-2 was never cut off"
        assert rounds[-1]["sites"] == ["site-1", "site-2"], rounds[-1]
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
    finally:
        proxy.close()
        stop_federation(fed)


def wait_sites(fed: Federation, wanted: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code, doc = fed.cli.json("system", "status")
        if code == 0 and {s["name"] for s in doc["data"]["sites"]} == wanted:
            return
        assert time.monotonic() < deadline, doc
        time.sleep(0.1)
