"""A real S3-compatible server for tests: moto's server mode in a process of its own.

It listens on an OS-chosen loopback port and speaks HTTP S3 like any bucket service would;
the code under test reaches it only through boto3 and ``AWS_ENDPOINT_URL``, as in production.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# Prints the port the OS chose, then serves until its stdin closes (the test process died or
# stopped it): a test run never leaves a server behind.
_SERVE = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""

#: Credentials the tests hand the server: distinctive, so a test can look for them in logs.
ACCESS_KEY = "AKIASHOALTESTKEY4242"
SECRET_KEY = "shoal-test-secret-Xq9vT2mLr8ZpW"


@dataclass
class S3Server:
    endpoint: str

    def env(self, bucket: str, prefix: str = "blobs") -> dict[str, str]:
        """The environment a shoal server needs to keep its blobs in ``bucket``."""
        return {
            "SHOAL_BLOBS_URL": f"s3://{bucket}/{prefix}",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def new_bucket(self) -> str:
        name = f"shoal-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=bucket)
        return sorted(obj["Key"] for obj in listed.get("Contents", []))


@contextmanager
def s3_server() -> Iterator[S3Server]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # As a context manager Popen closes its pipes (stdout too, which the port was read from)
    # and waits for the process on the way out, so neither outlives the session.
    with subprocess.Popen(
        [sys.executable, "-c", _SERVE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # a line per request
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            port = int(proc.stdout.readline().strip())
            yield S3Server(f"http://127.0.0.1:{port}")
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
