"""Startup kits: one folder per participant with its certificate, key, the CA and where the server is.

<kits>/<server>/startup/{fed_server.json, server.crt, server.key, rootCA.pem, start.sh, shoal-server.service}
                local/{authorization.json, studies.json}   README.md
<kits>/<site>/startup/{fed_site.json, client.crt, client.key, rootCA.pem, start.sh, shoal-site.service}
              local/site_policy.json                       README.md
<kits>/<admin>/startup/{fed_admin.json, client.crt, client.key, rootCA.pem, start.sh}   README.md

A kit is everything one participant needs and nothing more: never the CA key. ``startup/``
is what provisioning owns and rewrites when it re-issues a kit; ``local/`` is where that
participant's operator adjusts policy, so a re-issue writes its defaults only where a file
is missing and never replaces the operator's.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from shoal.errors import ShoalError
from shoal.provision import kitdocs
from shoal.provision.ca import DEFAULT_DAYS, CertificateAuthority, issue_cert, write_cert, write_key
from shoal.security.policy import write_default_policy
from shoal.security.tls import KIT_FILES, read_kit_json

DEFAULT_HOST = "127.0.0.1"
DEFAULT_SITE_POLICY: dict[str, Any] = {
    "allow_custom_code": True,
    "allow_log_streaming": True,
    "studies": None,
}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic (temp file + os.replace): a service starting during a port rewrite never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def kit_folder(kits_dir: Path, name: str) -> Path:
    """The kit folder for a participant; its name must be one plain path component."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ShoalError("INVALID_ARGS", f"participant name {name!r} cannot be a folder name")
    return kits_dir / name


def _write_common(
    kit: Path,
    ca: CertificateAuthority,
    key: ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
    stem: str,
    local: bool = True,
) -> None:
    """Certificate, key and CA into ``startup/``; ``local/`` for the operator's policy files
    (an admin has none)."""
    startup = kit / "startup"
    write_cert(cert, startup / f"{stem}.crt")
    write_key(key, startup / f"{stem}.key")
    (startup / "rootCA.pem").write_bytes(ca.cert_pem)
    if local:
        (kit / "local").mkdir(parents=True, exist_ok=True)


def _write_docs(
    kit: Path, kind: str, name: str, project: str, host: str, port: int, description: str = ""
) -> None:
    """README.md, startup/start.sh (executable) and, for services, the systemd unit."""
    (kit / "README.md").write_text(kitdocs.readme(kind, name, project, host, port, description))
    script = kit / "startup" / "start.sh"
    script.write_text(kitdocs.start_script(kind, name))
    script.chmod(0o755)
    if kind != "admin":
        (kit / "startup" / kitdocs.unit_name(kind)).write_text(kitdocs.systemd_unit(kind, name, project))


def _write_default(path: Path, data: dict[str, Any]) -> None:
    """An operator file's default, only where the operator has none (a re-issue keeps theirs)."""
    if not path.exists():
        write_json(path, data)


def write_server_kit(
    kits_dir: Path,
    ca: CertificateAuthority,
    *,
    project: str,
    org: str,
    port: int,
    host: str = DEFAULT_HOST,
    sites: list[str] | tuple[str, ...] = (),
    name: str = "server",
    hosts: tuple[str, ...] = (),
    listen: str | None = None,
    studies: dict[str, Any] | None = None,
    days: int = DEFAULT_DAYS,
    description: str = "",
) -> Path:
    """The server's kit. ``host`` is the name sites and admins dial; the certificate names it and
    ``hosts``; ``listen`` is the address it binds (default: ``host``). ``sites`` lists the
    provisioned sites (the server reports who is missing); ``local/authorization.json`` gets
    the default role policy so operators can see and edit it, ``local/studies.json`` the
    project's studies (rewritten when they change: the project file is their source)."""
    kit = kit_folder(kits_dir, name)
    key, cert = issue_cert(ca, name=name, org=org, kind="server", hosts=(host, *hosts), days=days)
    _write_common(kit, ca, key, cert, "server")
    if not (kit / "local" / "authorization.json").exists():
        write_default_policy(kit / "local" / "authorization.json")
    if studies is not None:
        write_json(kit / "local" / "studies.json", {"studies": studies})
    config: dict[str, Any] = {
        "kind": "server",
        "project": project,
        "name": name,
        "host": host,
        "port": port,
        "sites": list(sites),
    }
    if listen is not None:
        config["listen"] = listen
    write_json(kit / "startup" / KIT_FILES["server"], config)
    _write_docs(kit, "server", name, project, host, port, description)
    return kit


def write_site_kit(
    kits_dir: Path,
    ca: CertificateAuthority,
    *,
    name: str,
    project: str,
    org: str,
    port: int,
    host: str = DEFAULT_HOST,
    days: int = DEFAULT_DAYS,
    description: str = "",
) -> Path:
    """A site's kit, with a permissive default site policy the site's operator can tighten."""
    kit = kit_folder(kits_dir, name)
    key, cert = issue_cert(ca, name=name, org=org, kind="site", days=days)
    _write_common(kit, ca, key, cert, "client")
    write_json(
        kit / "startup" / KIT_FILES["site"],
        {
            "kind": "site",
            "project": project,
            "name": name,
            "org": org,
            "server": {"host": host, "port": port},
        },
    )
    _write_default(kit / "local" / "site_policy.json", dict(DEFAULT_SITE_POLICY))
    _write_docs(kit, "site", name, project, host, port, description)
    return kit


def write_admin_kit(
    kits_dir: Path,
    ca: CertificateAuthority,
    *,
    name: str,
    role: str,
    project: str,
    org: str,
    port: int,
    host: str = DEFAULT_HOST,
    days: int = DEFAULT_DAYS,
    description: str = "",
) -> Path:
    """An admin's kit. fed_admin.json repeats name/org/role from the certificate so the CLI can
    show who it is without parsing X.509; the server trusts only the certificate."""
    kit = kit_folder(kits_dir, name)
    key, cert = issue_cert(ca, name=name, org=org, kind="admin", role=role, days=days)
    _write_common(kit, ca, key, cert, "client", local=False)
    write_json(
        kit / "startup" / KIT_FILES["admin"],
        {
            "kind": "admin",
            "project": project,
            "name": name,
            "org": org,
            "role": role,
            "server": {"host": host, "port": port},
        },
    )
    _write_docs(kit, "admin", name, project, host, port, description)
    return kit


def set_server_port(kits_dir: Path, port: int) -> list[str]:
    """Point every kit in ``kits_dir`` at a new server port (POC start, when the old one is taken).

    Folders without ``startup/`` are skipped; every kit is read before any is written, so a
    damaged kit stops the change before it is half done. Returns the kits that were rewritten.
    """
    if not 0 < port < 65536:
        raise ShoalError("INVALID_ARGS", f"port {port} is out of range")
    kits = [(kit, *read_kit_json(kit)) for kit in sorted(kits_dir.iterdir()) if (kit / "startup").is_dir()]
    for kit, kind, data in kits:
        if kind == "server":
            data["port"] = port
        else:
            data.setdefault("server", {})["port"] = port
        write_json(kit / "startup" / KIT_FILES[kind], data)
    return [kit.name for kit, _, _ in kits]
