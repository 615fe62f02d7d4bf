"""Startup kits: one folder per participant with its certificate, key, the CA and where the server is.

<kits>/server/startup/{fed_server.json, server.crt, server.key, rootCA.pem}
<kits>/<site>/startup/{fed_site.json, client.crt, client.key, rootCA.pem}   local/site_policy.json
<kits>/<admin>/startup/{fed_admin.json, client.crt, client.key, rootCA.pem}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shoal.provision.ca import CertificateAuthority, issue_cert, write_cert, write_key
from shoal.security.policy import write_default_policy
from shoal.security.tls import KIT_FILES, read_kit_json

DEFAULT_SITE_POLICY = {"allow_custom_code": True, "allow_log_streaming": True, "studies": None}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _write_common(kit: Path, ca: CertificateAuthority, key: Any, cert: Any, cert_name: str) -> None:
    startup = kit / "startup"
    write_cert(cert, startup / f"{cert_name}.crt")
    write_key(key, startup / f"{cert_name}.key")
    (startup / "rootCA.pem").write_bytes(ca.cert_pem)
    (kit / "local").mkdir(parents=True, exist_ok=True)


def write_server_kit(
    kits_dir: Path,
    ca: CertificateAuthority,
    *,
    project: str,
    org: str,
    host: str,
    port: int,
    sites: list[str],
) -> Path:
    kit = kits_dir / "server"
    key, cert = issue_cert(ca, name="server", org=org, kind="server", hosts=(host,))
    _write_common(kit, ca, key, cert, "server")
    write_default_policy(kit / "local" / "authorization.json")
    _write_json(
        kit / "startup" / "fed_server.json",
        {"kind": "server", "project": project, "name": "server", "host": host, "port": port, "sites": sites},
    )
    return kit


def write_site_kit(
    kits_dir: Path, ca: CertificateAuthority, *, name: str, project: str, org: str, host: str, port: int
) -> Path:
    kit = kits_dir / name
    key, cert = issue_cert(ca, name=name, org=org, kind="site")
    _write_common(kit, ca, key, cert, "client")
    _write_json(
        kit / "startup" / "fed_site.json",
        {
            "kind": "site",
            "project": project,
            "name": name,
            "org": org,
            "server": {"host": host, "port": port},
        },
    )
    _write_json(kit / "local" / "site_policy.json", dict(DEFAULT_SITE_POLICY))
    return kit


def write_admin_kit(
    kits_dir: Path,
    ca: CertificateAuthority,
    *,
    name: str,
    role: str,
    project: str,
    org: str,
    host: str,
    port: int,
) -> Path:
    kit = kits_dir / name
    key, cert = issue_cert(ca, name=name, org=org, kind="admin", role=role)
    _write_common(kit, ca, key, cert, "client")
    _write_json(
        kit / "startup" / "fed_admin.json",
        {
            "kind": "admin",
            "project": project,
            "name": name,
            "org": org,
            "role": role,
            "server": {"host": host, "port": port},
        },
    )
    return kit


def set_server_port(kits_dir: Path, port: int) -> None:
    """Point every kit in ``kits_dir`` at a new server port (POC start, when the old one is taken)."""
    for kit in sorted(p for p in kits_dir.iterdir() if p.is_dir()):
        try:
            kind, data = read_kit_json(kit)
        except FileNotFoundError:
            continue
        if kind == "server":
            data["port"] = port
        else:
            data["server"]["port"] = port
        _write_json(kit / "startup" / KIT_FILES[kind], data)
