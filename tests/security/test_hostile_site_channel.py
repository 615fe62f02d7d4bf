"""A hostile site: a real mTLS client with a site certificate of the project's CA, speaking the
control channel's WebSocket protocol with hellos and messages of every wrong shape, while a
normal job runs on the real sites."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shoal.provision.ca import load_ca
from shoal.provision.kits import write_site_kit
from shoal.security.tls import client_ssl_context
from shoal.wire.channel import CLOSE_MALFORMED
from tests.conftest import EXAMPLES
from tests.e2e.conftest import Federation
from tests.federation import own_federation, tls_session

pytestmark = pytest.mark.e2e

INTRUDER = "site-9"

MALFORMED_HELLOS: list[str | bytes] = [
    json.dumps({"type": "hello", "policy": 5}),
    json.dumps({"type": "hello", "policy": {"studies": "default"}}),
    json.dumps({"type": "hello", "policy": {"allow_custom_code": "false"}}),
    json.dumps({"type": "hello", "jobs": 5}),
    json.dumps({"type": "hello", "jobs": [{"id": 1}]}),
    json.dumps({"type": "hello", "version": {"major": 1}}),
    json.dumps({"type": "ready", "job_id": "1"}),  # anything before a hello
    json.dumps(["hello"]),
    "not json at all",
    "[" * 100_000 + "]" * 100_000,  # deeper than the JSON parser recurses
]

MALFORMED_MESSAGES: list[str] = [
    json.dumps({"type": "metric", "job_id": 5, "key": "loss", "value": 1.0}),
    json.dumps({"type": "metric", "job_id": "1", "key": "loss", "value": "low"}),
    json.dumps({"type": "metric", "job_id": "1", "key": "loss", "value": 10**400}),
    json.dumps({"type": "metric", "job_id": "1", "key": ["loss"], "value": 1.0, "step": "one"}),
    json.dumps({"type": "failed", "job_id": "1", "error": 5}),
    json.dumps({"type": "failed", "job_id": "1", "error": {"type": {"x": 1}, "message": "m"}}),
    json.dumps({"type": "result", "job_id": "1", "task_id": {}, "data": ""}),
    json.dumps({"type": "log", "job_id": "1", "data": ["x"]}),
    json.dumps({"type": "notice", "job_id": "1" * 1000, "message": "m"}),
    json.dumps(42),
    "{",
]
#: Messages of a type the server does not take from a site (one it only sends, one nobody
#: knows, one of a newer version than it knows): each kind is said once, however often it comes.
UNKNOWN_MESSAGES: list[tuple[str, str]] = [
    ("no-such-type", json.dumps({"type": "no-such-type"})),
    ("no-such-type", json.dumps({"type": "no-such-type", "job_id": "1"})),
    ("None", json.dumps({"type": None})),
    ("deploy", json.dumps({"type": "deploy", "job_id": "1", "app": "app"})),
    ("metric", json.dumps({"type": "metric", "v": 99, "job_id": "1", "key": "loss", "value": 1.0})),
]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with own_federation(tmp_path_factory.mktemp("hostile-site")) as federation:
        yield federation


def intruder_kit(fed: Federation, dest: Path) -> Path:
    """A site kit the POC's own CA issues: the server trusts its certificate."""
    server = json.loads((fed.kits / "server" / "startup" / "fed_server.json").read_text())
    return write_site_kit(
        dest,
        load_ca(fed.workspace / "ca"),
        name=INTRUDER,
        project=server["project"],
        org="hostile.org",
        port=int(server["port"]),
        host="127.0.0.1",
    )


def channel_url(fed: Federation) -> str:
    server = json.loads((fed.kits / "site-1" / "startup" / "fed_site.json").read_text())["server"]
    return f"wss://{server['host']}:{server['port']}/site/v1/ws"


async def closed_with(ws: aiohttp.ClientWebSocketResponse, seconds: float = 10) -> int | None:
    """The close code the server ends the channel with (None: it stayed open for ``seconds``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            msg = await asyncio.wait_for(ws.receive(), deadline - time.monotonic())
        except TimeoutError:
            return None
        if msg.type == aiohttp.WSMsgType.CLOSE:
            return int(msg.data)
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return ws.close_code
    return None


def listed(fed: Federation) -> list[str]:
    code, doc = fed.cli.json("system", "status")
    assert code == 0, doc
    return [site["name"] for site in doc["data"]["sites"]]


def run_job_while(fed: Federation) -> dict[str, Any]:
    code, doc = fed.cli.json("job", "submit", "-j", EXAMPLES / "hello-numpy")
    assert code == 0, doc
    code, doc = fed.cli.json("job", "wait", doc["data"]["job_id"], "--timeout", "90", timeout=120)
    return dict(doc)


def test_malformed_hellos_are_refused_and_a_normal_job_still_finishes(
    fed: Federation, tmp_path: Path
) -> None:
    kit = intruder_kit(fed, tmp_path)
    log_file = fed.workspace / "logs" / "server.log"
    log_before = log_file.read_text()

    async def scenario() -> tuple[list[int | None], dict[str, Any]]:
        async with tls_session(client_ssl_context(kit)) as session:
            # The finding: a hello whose policy says "studies": 5 stopped every dispatch pass.
            first = await session.ws_connect(channel_url(fed))
            await first.send_str(json.dumps({"type": "hello", "version": "1", "policy": {"studies": 5}}))
            outcome = await asyncio.to_thread(run_job_while, fed)
            codes = [await closed_with(first)]
            for hello in MALFORMED_HELLOS:
                ws = await session.ws_connect(channel_url(fed))
                if isinstance(hello, bytes):
                    await ws.send_bytes(hello)
                else:
                    await ws.send_str(hello)
                codes.append(await closed_with(ws))
        return codes, outcome

    codes, outcome = asyncio.run(scenario())
    assert outcome["status"] == "ok" and outcome["data"]["status"] == "FINISHED_OK", outcome
    assert codes == [CLOSE_MALFORMED] * (1 + len(MALFORMED_HELLOS)), codes
    assert listed(fed) == ["site-1", "site-2"]
    added = log_file.read_text()[len(log_before) :]
    assert added.count(f"site {INTRUDER}: refused its channel") == 1 + len(MALFORMED_HELLOS), added
    assert "Traceback" not in added, added


def test_malformed_messages_are_ignored_and_a_second_hello_closes(fed: Federation, tmp_path: Path) -> None:
    kit = intruder_kit(fed, tmp_path)
    log_file = fed.workspace / "logs" / "server.log"
    log_before = log_file.read_text()

    async def scenario() -> tuple[list[str], int | None]:
        async with tls_session(client_ssl_context(kit)) as session:
            ws = await session.ws_connect(channel_url(fed))
            await ws.send_str(json.dumps({"type": "hello", "version": "1", "policy": {}, "jobs": []}))
            welcome = await ws.receive_json(timeout=10)
            assert welcome["type"] == "welcome", welcome
            for message in [*MALFORMED_MESSAGES, *(text for _, text in UNKNOWN_MESSAGES)]:
                await ws.send_str(message)
            await ws.send_bytes(b"\x00\x01")
            assert await closed_with(ws, 2) is None, "malformed messages after a good hello cost the channel"
            sites = await asyncio.to_thread(listed, fed)
            await ws.send_str(json.dumps({"type": "hello", "version": "1"}))
            return sites, await closed_with(ws)

    sites, code = asyncio.run(scenario())
    assert sites == ["site-1", INTRUDER, "site-2"] or sorted(sites) == sorted(["site-1", "site-2", INTRUDER])
    assert code == CLOSE_MALFORMED
    added = log_file.read_text()[len(log_before) :]
    assert added.count(f"site {INTRUDER} sent a malformed message; ignored") == len(MALFORMED_MESSAGES), added
    for kind in {kind for kind, _ in UNKNOWN_MESSAGES}:
        assert added.count(f"site {INTRUDER} sent an unknown message {kind!r}; ignored") == 1, added
    assert f"site {INTRUDER}: refused its channel, a second hello" in added
    assert "Traceback" not in added, added
    # The real sites were never disturbed: a job still runs on both.
    outcome = run_job_while(fed)
    assert outcome["status"] == "ok" and outcome["data"]["status"] == "FINISHED_OK", outcome
