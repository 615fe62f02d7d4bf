"""The route body that sends a stored blob (a site's job archive) over real HTTP, from the folder
and from a bucket on a real S3 server: whole, or its tail for ``Range: bytes=N-`` (206), so a
cut download resumes with either store; a blob that is not there is an error before any byte."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from tests.s3server import S3Server

from shoal.errors import ShoalError
from shoal.server.streaming import stream_blob
from shoal.store.blobs import Blobs, BlobStore
from shoal.store.s3blobs import S3BlobStore


@pytest.fixture(params=["folder", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Blobs:
    if request.param == "folder":
        return BlobStore(tmp_path / "blobs")
    s3: S3Server = request.getfixturevalue("s3")
    bucket = s3.new_bucket()
    for name, value in s3.env(bucket).items():
        monkeypatch.setenv(name, value)
    return S3BlobStore(bucket, "b", spool=tmp_path / "spool")


def _fetch(blobs: Blobs, sha: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await stream_blob(request, blobs, sha)
        except (FileNotFoundError, ShoalError):
            raise web.HTTPNotFound() from None

    async def main() -> tuple[int, dict[str, str], bytes]:
        app = web.Application()
        app.router.add_get("/blob", handler)
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/blob", headers=headers)
            return response.status, dict(response.headers), await response.read()

    return asyncio.run(main())


def test_a_blob_streams_whole_and_from_an_offset(blobs: Blobs) -> None:
    data = hashlib.sha256(b"archive").digest() * 300_000  # 9.6 MB: a few 4 MiB chunks
    sha = blobs.put_bytes(data)
    status, _, body = _fetch(blobs, sha, {})
    assert status == 200 and body == data
    status, headers, body = _fetch(blobs, sha, {"Range": "bytes=5000000-"})
    assert status == 206 and body == data[5_000_000:]
    assert headers["Content-Range"] == f"bytes 5000000-{len(data) - 1}/{len(data)}"


def test_a_missing_blob_is_an_error_before_any_byte(blobs: Blobs) -> None:
    status, _, _ = _fetch(blobs, "0" * 64, {})
    assert status == 404
