"""A throwaway PostgreSQL server for the tests: Debian's initdb and pg_ctl in a temporary folder.

One per test session (``postgres`` fixture in tests/conftest.py), on a free loopback port with
password authentication, shared by the store contract suite and the end-to-end tests; each
test asks it for a database of its own. initdb refuses to run as root, so as root the server
runs as ``nobody`` in a folder that user owns. A missing PostgreSQL fails the tests loudly:
.ci/run installs it, and a skipped store would be a store nobody tested.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from tests.ports import free_port

BIN_GLOB = "/usr/lib/postgresql/*/bin"
USER = "shoal"


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin folder (AssertionError saying how to install it)."""
    found = sorted(
        (Path(p) for p in glob.glob(BIN_GLOB) if (Path(p) / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        raise AssertionError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/initdb): "
            "apt-get install postgresql (.ci/run does this)"
        )
    return found[-1]


class PostgresServer:
    """A running PostgreSQL cluster owned by the test session."""

    def __init__(self, *, durable: bool = False) -> None:
        """``durable``: keep fsync on (benchmarks); tests turn it off, nothing outlives them."""
        self.bin = postgres_bin()
        self.password = "pw-" + secrets.token_hex(12)
        # /tmp itself, not pytest's 0700 tmp folder: the server's user must reach its data.
        self.folder = Path(tempfile.mkdtemp(prefix="shoal-pg-"))
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "nobody", "--"]
            shutil.chown(self.folder, "nobody", "nogroup")
        self.data = self.folder / "data"
        self.port = 0
        self._options = ""
        self._count = 0
        self._lock = threading.Lock()
        self._admin: Any = None  # a connection to the "shoal" database, once new_schema made it
        pwfile = self.folder / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_user:
            shutil.chown(pwfile, "nobody", "nogroup")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
            "--no-instructions",
        )
        pwfile.unlink()
        for _attempt in range(3):  # the free port may be taken between our look and the bind
            self.port = free_port()
            options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c max_connections=200"
            if not durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            started = self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.folder / "log"),
                "-w",
                "-o",
                options,
                "start",
                check=False,
            )
            if started.returncode == 0:
                self._options = options
                return
        raise AssertionError(f"PostgreSQL did not start: {started.stderr}\n{self.log()}")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self._as_user, str(self.bin / tool), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.folder,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{tool} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def log(self) -> str:
        try:
            return (self.folder / "log").read_text(errors="replace")
        except OSError:
            return ""

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        pw = self.password if password is None else password
        return f"postgresql://{USER}:{pw}@127.0.0.1:{self.port}/{database}"

    def _new_name(self) -> str:
        with self._lock:
            self._count += 1
            return f"t{self._count}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL (a whole database: ~8 MB of files, for a server)."""
        import psycopg

        name = self._new_name()
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}".encode())
        return self.url(name)

    def new_schema(self) -> str:
        """A URL whose connections see only a fresh, empty schema of the shared ``shoal``
        database (``search_path`` set through libpq's ``options``): the contract suite's
        hundred stores, at a millisecond each instead of a database's copy."""
        import psycopg

        name = self._new_name()
        with self._lock:
            if self._admin is None:
                with psycopg.connect(self.url(), autocommit=True) as conn:
                    conn.execute(b"CREATE DATABASE shoal")
            if self._admin is None or self._admin.closed or self._admin.broken:
                self._admin = psycopg.connect(self.url("shoal"), autocommit=True)
            self._admin.execute(f"CREATE SCHEMA {name}".encode())
        return self.url("shoal") + f"?options=-csearch_path%3D{name}"

    def restart(self) -> None:
        """Stop the server (ending every session, as an operator's restart or a failover
        would) and start it again on the same port and data."""
        if self._admin is not None:
            self._admin.close()
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-w", "-o", self._options, "start"
        )

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)
