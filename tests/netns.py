"""Hosts for tests: Linux network namespaces on one private switch, each with an address and names.

Every host is a namespace with a veth link to a bridge that lives in a namespace of its own
(the machine's own network is never touched), and ``/etc/netns/<ns>/hosts`` (which ``ip netns
exec`` mounts over ``/etc/hosts``) makes the federation's host names resolve inside each host.
Needs root and iproute2; the tests fail, loudly, when namespaces cannot be made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

NETNS_ETC = Path("/etc/netns")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def why_no_namespaces() -> str | None:
    """Why this machine cannot run the namespace tests, or None."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    if shutil.which("ip") is None:
        return "network namespace tests need iproute2 ('ip'); .ci/run installs it"
    return None


@dataclass
class Lab:
    """A switch and hosts; ``hosts`` maps a host's short name to (namespace, address, veth)."""

    tag: str
    subnet: str = "10.77.0"
    hosts: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # host name -> address, for every hosts file

    @property
    def switch(self) -> str:
        return f"shl{self.tag}sw"

    def up(self) -> None:
        ip("netns", "del", self.switch, check=False)  # left by a run that was killed (same tag)
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")

    def add_host(self, short: str, octet: int, *host_names: str) -> str:
        """A namespace with address <subnet>.<octet>/24 on the switch; its host names resolve everywhere."""
        ns = f"shl{self.tag}{short}"
        veth, peer = f"v{self.tag}{short}"[:15], f"p{self.tag}{short}"[:15]
        address = f"{self.subnet}.{octet}"
        ip("netns", "del", ns, check=False)
        ip("netns", "add", ns)
        self.hosts[short] = (ns, address, veth)
        ip("link", "del", veth, check=False)  # half made by a run that was killed
        ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        ip("link", "set", veth, "netns", ns)
        ip("link", "set", peer, "netns", self.switch)
        ip("-n", self.switch, "link", "set", peer, "master", "br0")
        ip("-n", self.switch, "link", "set", peer, "up")
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", veth)
        ip("-n", ns, "link", "set", veth, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        for name in host_names:
            self.names[name] = address
        self.write_hosts()
        return ns

    def alias(self, name: str, short: str) -> None:
        """One more name for a host's address (in every host's /etc/hosts)."""
        self.names[name] = self.hosts[short][1]
        self.write_hosts()

    def write_hosts(self) -> None:
        text = "127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in sorted(self.names.items()))
        for ns, _, _ in self.hosts.values():
            folder = NETNS_ETC / ns
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts").write_text(text)

    def link(self, short: str, state: str) -> None:
        """Set a host's only link down or up (its processes see the network vanish, not close)."""
        ns, _, veth = self.hosts[short]
        ip("-n", ns, "link", "set", veth, state)

    def exec_args(self, short: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[short][0], *argv]

    def down(self) -> None:
        """Remove every namespace and hosts file this lab made (processes must be gone first)."""
        for ns, _, _ in self.hosts.values():
            ip("netns", "del", ns, check=False)
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        ip("netns", "del", self.switch, check=False)
