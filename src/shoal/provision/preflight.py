"""``shoal preflight``: can this kit work here? Every check a participant's host can make alone.

For any kit: its files are there with safe permissions, the certificate chains to the kit's
CA, belongs to the kit's key and names the kit's participant, and is valid (warning within
``EXPIRY_WARNING_DAYS``). A site or admin kit then dials the server as it will for real: the
host name resolves, the port answers, a mutual-TLS handshake verifies the server's certificate
for that host name, the server accepts this identity, and its clock is within
``MAX_CLOCK_SKEW`` of ours. A server kit: its policy files load, its port is free, its store
is writable. Each check is ok, warn or fail, with a hint that says what to fix.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import json
import os
import socket
import ssl
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from shoal.errors import ShoalError
from shoal.security.tls import KIT_FILES, client_ssl_context, read_kit_json
from shoal.wire import routes

EXPIRY_WARNING_DAYS = 30
MAX_CLOCK_SKEW = 300.0  # seconds: certificates start 5 minutes before they are issued
TIMEOUT = 10.0


@dataclass
class Check:
    check: str
    status: str  # ok | warn | fail
    detail: str
    hint: str = ""


def days_left(cert: x509.Certificate, now: dt.datetime | None = None) -> float:
    now = now or dt.datetime.now(dt.UTC)
    return (cert.not_valid_after_utc - now).total_seconds() / 86400


def validity(cert: x509.Certificate, what: str, renew_hint: str) -> Check:
    """ok, warn within EXPIRY_WARNING_DAYS of the end, fail outside the certificate's window."""
    now = dt.datetime.now(dt.UTC)
    end = cert.not_valid_after_utc.isoformat(timespec="seconds")
    if now < cert.not_valid_before_utc:
        return Check(
            f"{what} validity",
            "fail",
            f"not valid before {cert.not_valid_before_utc.isoformat(timespec='seconds')}",
            "This host's clock is behind: set it right (NTP).",
        )
    left = days_left(cert, now)
    if left <= 0:
        return Check(f"{what} validity", "fail", f"expired {end}", renew_hint)
    if left < EXPIRY_WARNING_DAYS:
        return Check(f"{what} validity", "warn", f"expires {end}, in {left:.0f} days", renew_hint)
    return Check(f"{what} validity", "ok", f"valid until {end} ({left:.0f} days)")


class Preflight:
    def __init__(self, kit: Path, workspace: Path | None = None) -> None:
        self.kit = kit
        self.workspace = workspace
        self.checks: list[Check] = []

    def add(self, check: str, status: str, detail: str, hint: str = "") -> bool:
        self.checks.append(Check(check, status, detail, hint))
        return status != "fail"

    def run(self) -> dict[str, Any]:
        try:
            kind, config = read_kit_json(self.kit)
        except ShoalError as err:
            self.add("kit", "fail", err.detail or err.message, err.hint)
            return self.result("unknown")
        self.add("kit", "ok", f"{kind} kit of '{config.get('name')}' in project '{config.get('project')}'")
        stem = "server" if kind == "server" else "client"
        if self.files(kind, stem) and self.certificate(kind, stem, config):
            if kind == "server":
                self.server(config)
            else:
                self.dial(kind, config)
        return self.result(kind)

    def result(self, kind: str) -> dict[str, Any]:
        failed = [c.check for c in self.checks if c.status == "fail"]
        return {
            "kit": str(self.kit),
            "kind": kind,
            "passed": not failed,
            "failed": failed,
            "warnings": [c.check for c in self.checks if c.status == "warn"],
            "checks": [asdict(c) for c in self.checks],
        }

    def files(self, kind: str, stem: str) -> bool:
        startup = self.kit / "startup"
        names = [KIT_FILES[kind], "rootCA.pem", f"{stem}.crt", f"{stem}.key"]
        missing = [n for n in names if not os.access(startup / n, os.R_OK)]
        if missing:
            return self.add(
                "files",
                "fail",
                f"missing or unreadable in {startup}: {', '.join(missing)}",
                "Unpack the whole kit again, readable by the user that runs shoal.",
            )
        self.add("files", "ok", f"{', '.join(names)} present and readable")
        key = startup / f"{stem}.key"
        mode = stat.S_IMODE(key.stat().st_mode)
        if mode & 0o077:
            return self.add(
                "key permissions",
                "fail",
                f"{key} has mode {mode:04o}: others may read this participant's secret key",
                f"chmod 600 {key}",
            )
        return self.add("key permissions", "ok", f"{key.name} mode {mode:04o}")

    def certificate(self, kind: str, stem: str, config: dict[str, Any]) -> bool:
        startup = self.kit / "startup"
        try:
            ca = x509.load_pem_x509_certificate((startup / "rootCA.pem").read_bytes())
            cert = x509.load_pem_x509_certificate((startup / f"{stem}.crt").read_bytes())
            key = load_pem_private_key((startup / f"{stem}.key").read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            detail = f"cannot load the kit's PEM files: {exc}"
            return self.add("chain", "fail", detail, "Use a fresh copy of the kit.")
        problem = _chain_problem(ca, cert, key)
        if problem:
            hint = "The kit's files do not belong together: use a fresh copy."
            return self.add("chain", "fail", problem, hint)
        cn = _subject(cert, x509.NameOID.COMMON_NAME)
        ou = _subject(cert, x509.NameOID.ORGANIZATIONAL_UNIT_NAME)
        if cn != [config.get("name")] or ou != [kind]:
            return self.add(
                "chain",
                "fail",
                f"the certificate is {cn}/{ou}, but fed_{kind}.json says {kind} '{config.get('name')}'",
                "Use the kit as provisioning made it.",
            )
        self.add("chain", "ok", f"{kind} '{cn[0]}' of org '{_org(cert)}', signed by the project CA")
        renew = f"Ask the project admin for a renewed kit (shoal provision renew {config.get('name')})."
        ok = self._add_check(validity(cert, "certificate", renew))
        return self._add_check(validity(ca, "CA", "The project's CA must be replaced: re-provision.")) and ok

    def _add_check(self, check: Check) -> bool:
        self.checks.append(check)
        return check.status != "fail"

    # --- a server kit ---

    def server(self, config: dict[str, Any]) -> None:
        from shoal.server.app import read_local_files

        try:
            read_local_files(self.kit)
            self.add("policy files", "ok", "local/ authorization, studies, limits and revocation files load")
        except ShoalError as err:
            self.add("policy files", "fail", err.detail or err.message, err.hint)
        cert = x509.load_pem_x509_certificate((self.kit / "startup" / "server.crt").read_bytes())
        names = _san(cert)
        host = str(config.get("host", ""))
        if host in names:
            self.add("host name", "ok", f"the certificate names {', '.join(names)}")
        else:
            self.add(
                "host name",
                "fail",
                f"sites dial '{host}' but the certificate names only {', '.join(names)}",
                "Re-issue the server kit with that name: shoal provision --force <server>.",
            )
        self.port_free(str(config.get("listen") or host), int(config.get("port", 0)))
        self.store_writable(self.workspace or self.kit / "workspace")

    def port_free(self, listen: str, port: int) -> None:
        try:
            infos = socket.getaddrinfo(listen, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            detail = f"cannot resolve the listen address {listen}: {exc}"
            self.add("port", "fail", detail, "Fix 'listen' in fed_server.json or pass --host.")
            return
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
            except OSError as exc:
                self.add(
                    "port",
                    "fail",
                    f"cannot bind {listen}:{port}: {exc.strerror or exc}",
                    "Another process holds the port (the server already running?), or the address is "
                    "not this host's: stop it, or start with --host / --port.",
                )
                return
        self.add("port", "ok", f"{listen}:{port} is free")

    def store_writable(self, workspace: Path) -> None:
        probe = workspace
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if probe.is_dir() and os.access(probe, os.W_OK | os.X_OK):
            self.add("store", "ok", f"{workspace} is writable")
        else:
            self.add(
                "store",
                "fail",
                f"{workspace} cannot be written ({probe} is not a writable folder)",
                "Give the service's user a writable workspace, or pass --workspace.",
            )

    # --- a site or admin kit ---

    def dial(self, kind: str, config: dict[str, Any]) -> None:
        server = config.get("server") or {}
        host, port = str(server.get("host", "")), int(server.get("port", 0))
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = sorted({str(i[4][0]) for i in infos})
        except OSError as exc:
            self.add(
                "resolve",
                "fail",
                f"the server's name '{host}' does not resolve: {exc}",
                "Add it to DNS or /etc/hosts on this host.",
            )
            return
        self.add("resolve", "ok", f"{host} is {', '.join(addresses)}")
        try:
            socket.create_connection((host, port), timeout=TIMEOUT).close()
        except OSError as exc:
            self.add(
                "reachable",
                "fail",
                f"cannot open TCP {host}:{port}: {exc.strerror or exc}",
                "Is the server running? Does a firewall let this host dial out to that port?",
            )
            return
        self.add("reachable", "ok", f"TCP {host}:{port} answers")
        self.handshake(kind, host, port)

    def handshake(self, kind: str, host: str, port: int) -> None:
        conn = http.client.HTTPSConnection(host, port, context=client_ssl_context(self.kit), timeout=TIMEOUT)
        path = routes.SITE_HEALTH if kind == "site" else routes.HEALTH
        try:
            conn.connect()
            self.add("handshake", "ok", f"the server's certificate is the project's and names {host}")
        except ssl.SSLCertVerificationError as exc:
            self.add(
                "handshake",
                "fail",
                f"the server at {host}:{port} is not trusted: {exc.verify_message or exc}",
                f"This kit dials '{host}': the server's certificate must name it (a server of another "
                "project, or a kit that names another host). Ask the project admin.",
            )
            return
        except (ssl.SSLError, OSError) as exc:
            self.add("handshake", "fail", f"TLS with {host}:{port} failed: {exc}", "Ask the project admin.")
            return
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            response = conn.getresponse()
            body = response.read()
            date = response.getheader("Date")
        except (ssl.SSLError, OSError, http.client.HTTPException) as exc:
            self.add(
                "identity",
                "fail",
                f"the server dropped the connection: {exc} (it does not accept this kit's certificate)",
                "The kit is from another project or its CA was replaced: ask the project admin.",
            )
            return
        finally:
            conn.close()
        if response.status != 200:
            try:
                answer = json.loads(body)
                reason = f"{answer.get('error_code')}: {answer.get('message')}"
            except ValueError:
                reason = f"HTTP {response.status}"
            self.add(
                "identity",
                "fail",
                f"the server refused this kit: {reason}",
                "The certificate may be revoked or replaced by a re-issued kit: ask the project admin.",
            )
            return
        self.add("identity", "ok", f"the server accepts this {kind} kit")
        self.clock(date)

    def clock(self, date: str | None) -> None:
        if not date:
            self.add("clock", "warn", "the server sent no Date header", "")
            return
        theirs = email.utils.parsedate_to_datetime(date).timestamp()
        skew = dt.datetime.now(dt.UTC).timestamp() - theirs
        if abs(skew) > MAX_CLOCK_SKEW:
            self.add(
                "clock",
                "fail",
                f"this host's clock is {skew:+.0f} s off the server's (at most {MAX_CLOCK_SKEW:.0f} s)",
                "Synchronise the clocks (NTP): certificates and logs depend on them.",
            )
        else:
            self.add("clock", "ok", f"within {abs(skew):.0f} s of the server's")


def _subject(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(oid)]


def _org(cert: x509.Certificate) -> str:
    orgs = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    return str(orgs[0].value) if orgs else ""


def _san(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return [*san.get_values_for_type(x509.DNSName), *ips]


def _chain_problem(ca: x509.Certificate, cert: x509.Certificate, key: Any) -> str | None:
    """Why ``cert`` is not the project CA's certificate for ``key``, or None."""
    ca_key = ca.public_key()
    if not isinstance(ca_key, ec.EllipticCurvePublicKey) or cert.signature_hash_algorithm is None:
        return "the CA is not a shoal project CA (ECDSA)"
    if cert.issuer != ca.subject:
        return f"the certificate was issued by {cert.issuer.rfc4514_string()}, not the kit's CA"
    try:
        ca_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    except InvalidSignature:
        return "the certificate's signature does not verify with the kit's CA"
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return "the key is not the certificate's key"
    return None


def preflight(kit: Path, workspace: Path | None = None) -> dict[str, Any]:
    return Preflight(kit, workspace).run()
