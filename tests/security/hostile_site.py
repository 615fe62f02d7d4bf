"""A hostile site for tests: a real site's certificate, speaking the site API as it likes.

It takes the place of a site whose agent the test stopped: it says hello on the control
channel (WebSocket), is deployed jobs like any site, sees their tasks, and sends whatever the
test wants, in the channel or by HTTP, with the site's own TLS identity.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from yarl import URL

from shoal.security.tls import client_ssl_context
from tests.federation import Federation, tls_session


def stop_site_agent(fed: Federation, site: str) -> None:
    """Kill the real agent of ``site`` (a process this federation's ``poc start`` started)."""
    pids = json.loads((fed.workspace / "run" / "pids.json").read_text())
    os.killpg(pids[site], signal.SIGKILL)


def safetensors_bytes(name: str = "w", floats: int = 2) -> bytes:
    """A valid safetensors file of one float64 vector of zeros."""
    header = json.dumps({name: {"dtype": "F64", "shape": [floats], "data_offsets": [0, 8 * floats]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + bytes(8 * floats)


def safetensors_head(floats: int) -> bytes:
    """The start of a valid safetensors file of ``floats`` float64 zeros (the zeros follow)."""
    return safetensors_bytes(floats=floats)[: -8 * floats]


class WithKits(Protocol):
    """A federation of the tests (tests/federation.py, tests/replicas.py): where its kits are."""

    @property
    def kits(self) -> Path: ...


class HostileSite:
    def __init__(self, fed: WithKits, site: str, kit: Path | None = None) -> None:
        """The site ``site`` of ``fed``, dialling the server its kit names (``kit``: a copy of
        it that dials elsewhere, a replica say)."""
        self.fed = fed
        self.site = site
        self.kit = kit or fed.kits / site
        server = json.loads((self.kit / "startup" / "fed_site.json").read_text())["server"]
        self.host, self.port = str(server["host"]), int(server["port"])
        self.base = f"https://{self.host}:{self.port}"
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._session: aiohttp.ClientSession | None = None
        self._closing = contextlib.AsyncExitStack()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def ssl(self) -> Any:
        return client_ssl_context(self.kit)

    async def __aenter__(self) -> HostileSite:
        self._session = await self._closing.enter_async_context(tls_session(self.ssl))
        deadline = time.monotonic() + 60
        while True:  # the server may still hold the killed agent's channel for a moment
            self._ws = await self._session.ws_connect(self.base + "/site/v1/ws")
            await self._ws.send_json({"type": "hello", "version": "0", "policy": {}, "jobs": []})
            msg = await self._ws.receive(timeout=10)
            if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data).get("type") == "welcome":
                break
            assert time.monotonic() < deadline, msg
            await asyncio.sleep(0.5)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        await self._closing.aclose()

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                if data.get("type") == "deploy":  # a site that joins every job it is given
                    await self.send({"type": "ready", "job_id": data["job_id"]})
                elif data.get("type") in ("end", "abort"):  # ... and leaves it when told
                    await self.send({"type": "ended", "job_id": data["job_id"]})
                await self.messages.put(data)

    async def send(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_json(message)

    async def next(self, kind: str, job_id: str, timeout: float = 60) -> dict[str, Any]:
        """The next message of type ``kind`` about ``job_id`` (others are dropped)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.messages.get()
                if msg.get("type") == kind and msg.get("job_id") == job_id:
                    return msg

    async def inline_result(
        self, job_id: str, task_id: str, body: bytes, header: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A result sent in the control channel, and the server's answer to it."""
        if header is None:
            header = {"num_examples": 1, "metrics": {}, "meta": {}}
        data = base64.b64encode(body).decode()
        message = {"type": "result", "job_id": job_id, "task_id": task_id, "header": header, "data": data}
        await self.send(message)
        ack = await self.next("result_ack", job_id, timeout=30)
        assert ack["task_id"] == task_id, ack
        return ack

    def result_url(self, job_id: str, task_id: str) -> str:
        return f"{self.base}/site/v1/jobs/{job_id}/tasks/{task_id}/result"

    async def put(
        self,
        url: str,
        body: bytes | AsyncIterator[bytes],
        headers: dict[str, str] | None = None,
        offset: int = 0,
        answered: asyncio.Event | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """PUT ``body``; ``answered`` is set when the server's answer begins (its headers)."""
        assert self._session is not None
        send = {"X-Shoal-Result": json.dumps({"num_examples": 1}), **(headers or {})}
        async with self._session.put(
            URL(url + f"?offset={offset}", encoded=True), data=body, headers=send
        ) as resp:
            if answered is not None:
                answered.set()
            return resp.status, await resp.json(content_type=None)

    async def get(self, url: str) -> tuple[int, dict[str, Any]]:
        assert self._session is not None
        async with self._session.get(URL(url, encoded=True)) as resp:
            return resp.status, await resp.json(content_type=None)

    async def put_cut_off(self, job_id: str, task_id: str, total: int, sent: bytes) -> None:
        """Start an upload of ``total`` bytes, send ``sent`` of them, and drop the connection
        (as a broken link would): what arrived is the server's to keep for a resume."""
        reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl)
        head = (
            f"PUT /site/v1/jobs/{job_id}/tasks/{task_id}/result?offset=0 HTTP/1.1\r\n"
            f"Host: {self.host}\r\nContent-Length: {total}\r\nX-Shoal-Total: {total}\r\n"
            f'X-Shoal-Result: {{"num_examples": 1}}\r\n\r\n'
        )
        writer.write(head.encode() + sent)
        await writer.drain()
        await asyncio.sleep(0.5)  # the server has read it
        writer.transport.abort()


def server_job_dir(fed: Federation, job_id: str) -> Path:
    return fed.kits / "server" / "workspace" / "jobs" / job_id


def result_files(fed: Federation, job_id: str) -> list[str]:
    results = server_job_dir(fed, job_id) / "results"
    return sorted(p.name for p in results.iterdir()) if results.is_dir() else []


def workflow_pid(fed: Federation, job_id: str) -> int:
    """The job's workflow process: the one whose working folder is the job's run folder."""
    run = (server_job_dir(fed, job_id) / "run").resolve()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")) == run:
                return int(entry.name)
        except OSError:  # gone, or not ours to read
            continue
    raise AssertionError(f"no process works in {run}")
