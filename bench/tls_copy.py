"""The yardstick for the 1 GB target: copy N MiB over loopback TLS with aiohttp, both ways.

``python -m bench.tls_copy [--mb 1024]`` — an aiohttp server and client in one process, the
project's own certificates (a throwaway POC), 4 MiB writes, as the server streams models. A
round of a 1 GB job moves four times that (the model down to 2 sites, 2 updates up).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from shoal.security.tls import client_ssl_context, server_ssl_context

CHUNK = 4 * 2**20


async def measure(kits: Path, mb: int) -> tuple[float, float]:
    block = b"\x01" * CHUNK
    chunks = mb * 2**20 // CHUNK

    async def down(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = chunks * CHUNK
        await response.prepare(request)
        for _ in range(chunks):
            await response.write(block)
        return response

    async def up(request: web.Request) -> web.Response:
        async for _ in request.content.iter_any():
            pass
        return web.Response(text="ok")

    app = web.Application(client_max_size=2**40)
    app.add_routes([web.get("/down", down), web.put("/up", up)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(kits / "server"))
    await site.start()
    port = runner.addresses[0][1]
    ctx = client_ssl_context(kits / "site-1")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        start = time.perf_counter()
        async with session.get(f"https://127.0.0.1:{port}/down") as resp:
            async for _ in resp.content.iter_chunked(CHUNK):
                pass
        down_s = time.perf_counter() - start

        async def body() -> object:
            for _ in range(chunks):
                yield block

        start = time.perf_counter()
        async with session.put(f"https://127.0.0.1:{port}/up", data=body()) as resp:
            await resp.read()
        up_s = time.perf_counter() - start
    await runner.cleanup()
    return down_s, up_s


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tls_copy", description=__doc__)
    parser.add_argument("--mb", type=int, default=1024)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-tls-copy-") as tmp:
        workspace = Path(tmp) / "poc"
        subprocess.run(
            [sys.executable, "-m", "shoal", "poc", "prepare", "--workspace", str(workspace)],
            check=True,
            capture_output=True,
            env={"SHOAL_HOME": str(Path(tmp) / "home"), "PATH": "/usr/bin:/bin"},
        )
        down_s, up_s = asyncio.run(measure(workspace / "kits", opts.mb))
    print(f"{opts.mb} MiB over loopback TLS (aiohttp, 4 MiB writes): down {down_s:.2f} s, up {up_s:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
