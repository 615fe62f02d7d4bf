"""A federation of server replicas for tests and the bench: two servers sharing PostgreSQL and a
bucket behind HAProxy, and two sites (tests/faults/test_replicas.py, bench/takeover.py).

Replicas A and B run from one server kit, each with a workspace of its own and a free port;
HAProxy listens on the port the kits dial (TCP mode, TLS passed through, ``balance first``), so
sites and admins reach A while it lives. Processes are started here and stopped by ``stop``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import Cli
from tests.haproxy import HAProxy
from tests.ports import free_port

REPLICAS = ("replica-a", "replica-b")


@dataclass
class Replicas:
    """The federation of this module: its CLI (through HAProxy), its processes and its store."""

    cli: Cli
    workspace: Path
    store_url: str
    env: dict[str, str]
    proxy: HAProxy | None = None
    servers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    sites: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    site_proxies: list[HAProxy] = field(default_factory=list)

    @property
    def kits(self) -> Path:
        return self.workspace / "kits"

    def start_replica(self, name: str) -> int:
        """Start replica ``name`` (its own workspace; a free port the first time, the same one
        when it is started again, as HAProxy's configuration names it); its port once it serves."""
        self.launch_replica(name)
        return self.replica_ready(name)

    def launch_replica(self, name: str) -> None:
        """Start replica ``name``'s process without waiting for it (``replica_ready`` waits):
        replicas may start together, their store's migrations run under one lock."""
        out = self.workspace / f"{name}.out"
        with out.open("wb") as sink, (self.workspace / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "shoal", "server", "start", "-k", str(self.kits / "server")),
                    *("--workspace", str(self.workspace / name), "--port", str(self.ports.get(name, 0))),
                ],
                stdout=sink,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**self.cli.env(), "SHOAL_REPLICA_ID": name},
            )
        self.servers[name] = proc

    def replica_ready(self, name: str) -> int:
        """Wait until replica ``name`` says it serves (30 s at most); its port."""
        out = self.workspace / f"{name}.out"
        proc = self.servers[name]
        deadline = time.monotonic() + 30
        while True:
            for line in out.read_text().splitlines():
                event = json.loads(line)
                if event.get("event") == "ready":
                    self.ports[name] = int(event["port"])
                    return self.ports[name]
            assert proc.poll() is None, (self.workspace / f"{name}.log").read_text()
            assert time.monotonic() < deadline, "the replica never said it was ready"
            time.sleep(0.05)

    def start_site(self, site: str, kit: Path) -> None:
        """Start ``site``'s agent from ``kit`` (stopping the one running, if any)."""
        running = self.sites.pop(site, None)
        if running is not None:
            os.killpg(running.pid, signal.SIGTERM)
            running.wait(timeout=30)
        with (self.workspace / f"{site}.log").open("ab") as log:
            self.sites[site] = subprocess.Popen(
                [sys.executable, "-m", "shoal", "site", "start", "-k", str(kit)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=self.cli.env(),
            )

    def kill(self, name: str) -> None:
        proc = self.servers.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def direct_kit(self, name: str, kit: str = "") -> Path:
        """A copy of a kit (the admin's, or site ``kit``'s) that dials replica ``name`` itself,
        not HAProxy."""
        return self.kit_to(self.ports[name], name, kit)

    def kit_to(self, port: int, label: str, kit: str = "") -> Path:
        """A copy of a kit (the admin's, or site ``kit``'s) that dials ``port`` on loopback."""
        if kit:
            source, config_name = self.kits / kit, "fed_site.json"
        else:
            source = next(p for p in self.kits.iterdir() if p.is_dir() and p.name.startswith("admin"))
            config_name = "fed_admin.json"
        copy = self.workspace / f"{source.name}-to-{label}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(source, copy)
        config = copy / "startup" / config_name
        doc = json.loads(config.read_text())
        doc["server"]["port"] = port
        config.write_text(json.dumps(doc))
        return copy

    def jobs_seen_by(self, name: str) -> list[tuple[str, str]]:
        code, doc = self.cli.json("job", "list", "--startup-kit", self.direct_kit(name))
        assert code == 0, doc
        return sorted((row["job_id"], row["status"]) for row in doc["data"])

    def stop(self) -> None:
        for proc in [*self.sites.values(), *self.servers.values()]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.sites.values(), *self.servers.values()]:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for proxy in [self.proxy, *self.site_proxies]:
            if proxy is not None:
                proxy.stop()


@contextmanager
def replica_federation(
    home: Path, env: dict[str, str], dial: dict[str, str] | None = None, first: dict[str, str] | None = None
) -> Iterator[Replicas]:
    """Prepare a POC in ``home`` and run it as two replicas behind HAProxy with two sites;
    ``env`` names the shared store and bucket (``SHOAL_STORE_URL``, ``SHOAL_BLOBS_URL``, ...);
    ``dial`` names sites that dial a replica directly instead of HAProxy (site -> replica);
    ``first`` names sites that dial a HAProxy of their own putting that replica first (so they
    sit on it while it lives, and move to the other when it dies)."""
    cli = Cli(home / "home", extra_env=env)
    ws = home / "poc"
    prepared = cli.run("poc", "prepare", "-n", "2", "--workspace", ws)
    assert prepared.returncode == 0, prepared.stderr
    fed = Replicas(cli, ws, env["SHOAL_STORE_URL"], env)
    try:
        for name in REPLICAS:  # both start at once: each start is a second of the test's wall time
            fed.launch_replica(name)
        for name in REPLICAS:
            fed.replica_ready(name)
        dialled = json.loads((ws / "poc.json").read_text())["server"]
        fed.proxy = HAProxy(
            ws / "haproxy",
            dialled["host"],
            int(dialled["port"]),
            [("127.0.0.1", fed.ports[name]) for name in REPLICAS],
        )
        for site in ("site-1", "site-2"):
            kit = fed.direct_kit(dial[site], site) if dial and site in dial else fed.kits / site
            if first and site in first:
                order = [first[site], *(name for name in REPLICAS if name != first[site])]
                proxy = HAProxy(
                    ws / f"haproxy-{site}",
                    dialled["host"],
                    free_port(),
                    [("127.0.0.1", fed.ports[name]) for name in order],
                )
                fed.site_proxies.append(proxy)
                kit = fed.kit_to(proxy.port, f"proxy-{first[site]}-first", site)
            fed.start_site(site, kit)
        deadline = time.monotonic() + 30
        while True:
            code, doc = cli.json("system", "status")
            if code == 0 and len(doc["data"]["sites"]) == 2:
                break
            assert time.monotonic() < deadline, f"the sites never connected: {doc}"
            time.sleep(0.1)
        yield fed
    finally:
        fed.stop()
