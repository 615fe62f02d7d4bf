"""SSL contexts built from a startup kit. Standard library only: the CLI uses this."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

KIT_FILES = {"server": "fed_server.json", "site": "fed_site.json", "admin": "fed_admin.json"}


def read_kit_json(kit_dir: Path) -> tuple[str, dict[str, Any]]:
    """(kind, config) of a kit: whichever ``startup/fed_*.json`` it holds."""
    for kind, name in KIT_FILES.items():
        path = Path(kit_dir) / "startup" / name
        if path.exists():
            data: dict[str, Any] = json.loads(path.read_text())
            return kind, data
    raise FileNotFoundError(f"{kit_dir} holds no startup/fed_server.json, fed_site.json or fed_admin.json")


def server_ssl_context(kit_dir: Path) -> ssl.SSLContext:
    """TLS 1.2+, and every client must present a certificate signed by the project CA."""
    startup = Path(kit_dir) / "startup"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(startup / "rootCA.pem"))
    ctx.load_cert_chain(str(startup / "server.crt"), str(startup / "server.key"))
    return ctx


def client_ssl_context(kit_dir: Path) -> ssl.SSLContext:
    """Present the kit's certificate and trust only a server signed by the project CA."""
    startup = Path(kit_dir) / "startup"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(startup / "rootCA.pem"))
    ctx.load_cert_chain(str(startup / "client.crt"), str(startup / "client.key"))
    return ctx
