"""A federation across hosts: network namespaces with their own addresses and host names.

Provisioned from a project file on the provisioner's machine (the test's own namespace), each
kit unpacked from its zip on its host, checked there with ``shoal preflight``, and started
with the kit's own start script. Then: a FedAvg job submitted from the admin's host finishes
while a site's link goes down and up mid-job; a site added with ``add-site`` joins the running
server; a revoked site is closed and refused; a kit that dials the server by a name its
certificate does not carry is refused by the site.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.e2e.jobs import slow_job
from tests.netns import Lab, why_no_namespaces

pytestmark = pytest.mark.e2e

PORT = 8443
PROJECT = f"""\
api_version: 3
name: netns_project
participants:
  - {{name: server.fl.test, type: server, org: ops, fed_learn_port: {PORT}}}
  - {{name: site-1, type: client, org: hospital-1}}
  - {{name: site-2, type: client, org: hospital-2}}
  - {{name: admin@ops.org, type: admin, org: ops, role: project_admin}}
builders:
  - path: nvflare.lighter.impl.cert.CertBuilder
"""
SHOAL = str(Path(sys.executable).with_name("shoal"))  # the start scripts run $SHOAL


def unpack(zip_path: Path, host_dir: Path) -> Path:
    """What a site admin does with the zip they received: unpack it, modes and all (as unzip)."""
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(host_dir)
        for info in zf.infolist():
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(host_dir / info.filename, mode)
    return host_dir / zip_path.stem


def until(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


class Hosts:
    """The lab's hosts, the services started on them, and the CLI run on them."""

    def __init__(self, lab: Lab, root: Path) -> None:
        self.lab = lab
        self.root = root
        self.cli = Cli(root / "home", extra_env={"SHOAL": SHOAL})
        self.services: dict[str, subprocess.Popen[bytes]] = {}

    def run(self, host: str, *args: str | Path, timeout: float = 120) -> tuple[int, Any]:
        """``shoal ARGS --format json`` on ``host``; (exit code, envelope)."""
        argv = self.lab.exec_args(host, sys.executable, "-m", "shoal", *map(str, args), "--format", "json")
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.cli.env(),
            stdin=subprocess.DEVNULL,
        )
        try:
            return proc.returncode, json.loads(proc.stdout)
        except ValueError as exc:
            raise AssertionError(f"{argv}: {proc.stdout!r} {proc.stderr}") from exc

    def start(self, name: str, host: str, kit: Path, *extra: str) -> subprocess.Popen[bytes]:
        """The kit's own start script, on its host, logging to <root>/logs/<name>.log."""
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                self.lab.exec_args(host, "sh", str(kit / "startup" / "start.sh"), *extra),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.cli.env(),
                stdin=subprocess.DEVNULL,
            )
        self.services[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.root / "logs" / f"{name}.log").read_text(errors="replace")

    def stop(self, name: str) -> None:
        proc = self.services.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for name in list(self.services):
            self.stop(name)

    def sites(self, admin_kit: Path) -> set[str]:
        code, doc = self.run("adm", "system", "status", "--startup-kit", admin_kit, timeout=30)
        return {s["name"] for s in doc["data"]["sites"]} if code == 0 else set()


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    problem = why_no_namespaces()
    if problem:
        pytest.fail(problem)  # never a silent skip: CI must prove the deployment path
    lab = Lab(tag=f"{os.getpid() % 10000:04d}")
    h = Hosts(lab, tmp_path)
    try:
        lab.up()
        lab.add_host("srv", 1, "server.fl.test")
        lab.add_host("s1", 11, "site-1.fl.test")
        lab.add_host("s2", 12, "site-2.fl.test")
        lab.add_host("s3", 13, "site-3.fl.test")
        lab.add_host("adm", 20, "admin.fl.test")
        lab.alias("other.fl.test", "srv")  # the server's address under a name its certificate lacks
        yield h
    finally:
        h.stop_all()
        lab.down()
        for name in ("server", "site-1", "site-2", "site-3", "misnamed"):
            path = tmp_path / "logs" / f"{name}.log"
            if path.exists():
                print(f"--- {name} ---\n{path.read_text(errors='replace')[-4000:]}")


def failed_checks(doc: dict[str, Any]) -> list[str]:
    return [c["check"] for c in doc["data"]["checks"] if c["status"] == "fail"]


def test_a_federation_across_hosts(hosts: Hosts, tmp_path: Path) -> None:
    ws = tmp_path / "provisioner"
    (tmp_path / "project.yml").write_text(PROJECT)
    code, doc = hosts.cli.json("provision", "-p", tmp_path / "project.yml", "-w", ws)
    assert code == 0, doc
    assert any("builders" in n for n in doc["data"]["notices"])  # FLARE's builders: named, not dropped
    kits = ws / "kits"
    server = unpack(kits / "server.fl.test.zip", tmp_path / "hosts" / "srv")
    site1 = unpack(kits / "site-1.zip", tmp_path / "hosts" / "s1")
    site2 = unpack(kits / "site-2.zip", tmp_path / "hosts" / "s2")
    admin = unpack(kits / "admin@ops.org.zip", tmp_path / "hosts" / "adm")
    assert stat.S_IMODE((site1 / "startup" / "client.key").stat().st_mode) == 0o600

    # The server's host: preflight, then the start script, bound to its own address only.
    code, doc = hosts.run("srv", "preflight", "--startup-kit", server)
    assert code == 0 and doc["data"]["passed"], doc
    server_ip = hosts.lab.hosts["srv"][1]
    srv = hosts.start("server", "srv", server, "--host", server_ip)
    until("the server", lambda: hosts.run("adm", "preflight", "-k", admin, timeout=30)[0] == 0)
    code, doc = hosts.run("adm", "preflight", "-k", admin)
    assert {c["check"] for c in doc["data"]["checks"]} >= {
        "resolve",
        "reachable",
        "handshake",
        "identity",
        "clock",
    }
    probe = f"import socket; socket.create_connection(('127.0.0.1', {PORT}), timeout=5)"
    refused = subprocess.run(hosts.lab.exec_args("srv", sys.executable, "-c", probe), capture_output=True)
    assert refused.returncode != 0, "--host bound the server to its address, not loopback"

    # Sites: preflight on their hosts, start, and join.
    for name, host, kit in (("site-1", "s1", site1), ("site-2", "s2", site2)):
        code, doc = hosts.run(host, "preflight", "-k", kit)
        assert code == 0, doc
        hosts.start(name, host, kit)
    until("both sites", lambda: hosts.sites(admin) == {"site-1", "site-2"})

    # A FedAvg job from the admin's host; site-1's link goes down and comes back mid-job.
    job = slow_job(tmp_path / "job", rounds=15, delay=0.3)
    code, doc = hosts.run("adm", "job", "submit", "-j", job, "--startup-kit", admin)
    assert code == 0, doc
    job_id = doc["data"]["job_id"]

    def progressed() -> bool:
        meta = hosts.run("adm", "job", "meta", job_id, "--startup-kit", admin)[1]["data"]
        # current_round is null until the first round starts, so it is read as 0 then.
        current_round = (meta.get("progress") or {}).get("current_round") or 0
        return bool(meta["status"] == "RUNNING" and current_round >= 2)

    until("the job's second round", progressed)
    hosts.lab.link("s1", "down")
    time.sleep(2)
    hosts.lab.link("s1", "up")
    code, doc = hosts.run(
        "adm", "job", "wait", job_id, "--timeout", "120", "--startup-kit", admin, timeout=150
    )
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc

    # add-site: a new site joins the running server (no restart).
    code, doc = hosts.cli.json("provision", "add-site", "site-3", "--org", "hospital-3", "-w", ws)
    assert code == 0, doc
    site3 = unpack(kits / "site-3.zip", tmp_path / "hosts" / "s3")
    hosts.start("site-3", "s3", site3)
    until("site-3", lambda: "site-3" in hosts.sites(admin))
    assert srv.poll() is None

    # revoke: the provisioner's list goes to the server's host; the running server closes the site.
    code, doc = hosts.cli.json("provision", "revoke", "site-2", "-w", ws)
    assert code == 0, doc
    shutil.copy(kits / "server.fl.test" / "local" / "revoked.json", server / "local" / "revoked.json")
    until("site-2 to be dropped", lambda: hosts.sites(admin) == {"site-1", "site-3"}, timeout=20)
    code, doc = hosts.run("s2", "preflight", "-k", site2)
    assert code == 1 and failed_checks(doc) == ["identity"], doc
    until("site-2 to say it is refused", lambda: "refuses this site's certificate" in hosts.log("site-2"), 30)
    hosts.stop("site-2")

    # A kit that dials the server by a name its certificate does not carry: refused by the site.
    misnamed = tmp_path / "hosts" / "s2" / "misnamed"
    shutil.copytree(site3, misnamed)
    config_path = misnamed / "startup" / "fed_site.json"
    config = json.loads(config_path.read_text())
    config["server"]["host"] = "other.fl.test"  # resolves to the server's address
    config_path.write_text(json.dumps(config))
    code, doc = hosts.run("s2", "preflight", "-k", misnamed)
    assert code == 1 and failed_checks(doc) == ["handshake"], doc
    hosts.start("misnamed", "s2", misnamed)
    until("the refusal", lambda: "refusing the server at https://other.fl.test" in hosts.log("misnamed"), 30)
    assert "certificate is not valid for 'other.fl.test'" in hosts.log("misnamed")
    assert hosts.sites(admin) == {"site-1", "site-3"}
