"""SSL contexts from kits, and real in-process TLS handshakes on 127.0.0.1 (stdlib ssl + socket threads).

Only a client holding a certificate from the project CA gets through; the server's identity
check reads the real ``getpeercert()`` dict.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shoal.errors import ShoalError
from shoal.provision.ca import CertificateAuthority, create_ca, issue_cert, write_cert, write_key
from shoal.provision.kits import write_admin_kit, write_server_kit, write_site_kit
from shoal.security.identity import Identity, identity_from_peercert
from shoal.security.tls import client_ssl_context, read_kit_json, server_ssl_context

PROJECT, ORG = "example_project", "example.org"
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return create_ca(PROJECT)


@pytest.fixture(scope="module")
def kits(tmp_path_factory: pytest.TempPathFactory, ca: CertificateAuthority) -> Path:
    kits = tmp_path_factory.mktemp("kits")
    write_server_kit(kits, ca, project=PROJECT, org=ORG, port=1, sites=["site-1"])
    write_site_kit(kits, ca, name="site-1", project=PROJECT, org=ORG, port=1)
    write_admin_kit(
        kits, ca, name="admin@example.com", role="project_admin", project=PROJECT, org=ORG, port=1
    )
    return kits


@dataclass
class Outcome:
    """What the server side of one handshake saw."""

    peer: dict[str, Any] | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


def serve_once(ctx: ssl.SSLContext) -> tuple[int, Outcome, threading.Thread]:
    """Accept one connection on an OS-chosen loopback port, handshake, record the peer, say hello."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    outcome = Outcome()

    def run() -> None:
        try:
            with listener:
                conn, _ = listener.accept()
                conn.settimeout(TIMEOUT)
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    outcome.peer = tls.getpeercert()
                    tls.sendall(b"hello")
        except (ssl.SSLError, OSError) as exc:
            outcome.error = exc
        finally:
            outcome.done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], outcome, thread


def dial(ctx: ssl.SSLContext, port: int, hostname: str = "127.0.0.1") -> bytes | BaseException:
    """Client side: the server's first bytes, or the error the client saw."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
            with ctx.wrap_socket(raw, server_hostname=hostname) as tls:
                return tls.recv(5)
    except (ssl.SSLError, OSError) as exc:
        return exc


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, hostname: str = "127.0.0.1"
) -> tuple[bytes | BaseException, Outcome]:
    port, outcome, thread = serve_once(server)
    got = dial(client, port, hostname)
    thread.join(TIMEOUT)
    assert outcome.done.is_set()
    return got, outcome


def client_context(trust: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A hand-made client (not from a kit), to present foreign or no certificates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(trust))
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def stray_cert(ca: CertificateAuthority, folder: Path, **overrides: Any) -> tuple[Path, Path]:
    args: dict[str, Any] = {
        "name": "mallory@example.org",
        "org": ORG,
        "kind": "admin",
        "role": "project_admin",
    }
    key, cert = issue_cert(ca, **{**args, **overrides})
    write_cert(cert, folder / "client.crt")
    write_key(key, folder / "client.key")
    return folder / "client.crt", folder / "client.key"


# --- handshakes ---


@pytest.mark.parametrize(
    ("kit", "expected"),
    [
        ("site-1", Identity("site-1", ORG, "site", None)),
        ("admin@example.com", Identity("admin@example.com", ORG, "admin", "project_admin")),
    ],
)
def test_a_kit_from_the_same_ca_gets_in_and_is_identified(kits: Path, kit: str, expected: Identity) -> None:
    got, outcome = handshake(server_ssl_context(kits / "server"), client_ssl_context(kits / kit))
    assert got == b"hello", got
    assert outcome.error is None
    who = identity_from_peercert(outcome.peer)
    assert (who.name, who.org, who.kind, who.role) == (
        expected.name,
        expected.org,
        expected.kind,
        expected.role,
    )
    assert who.serial


def test_the_server_answers_to_localhost_too(kits: Path) -> None:
    got, _ = handshake(server_ssl_context(kits / "server"), client_ssl_context(kits / "site-1"), "localhost")
    assert got == b"hello"


def test_a_certificate_from_another_ca_is_refused_at_the_handshake(kits: Path, tmp_path: Path) -> None:
    cert, key = stray_cert(create_ca("someone_else"), tmp_path)
    client = client_context(kits / "site-1/startup/rootCA.pem", cert, key)
    got, outcome = handshake(server_ssl_context(kits / "server"), client)
    assert got != b"hello"
    assert isinstance(outcome.error, ssl.SSLCertVerificationError), outcome.error
    assert outcome.peer is None


def test_a_client_without_a_certificate_is_refused(kits: Path) -> None:
    client = client_context(kits / "site-1/startup/rootCA.pem")
    got, outcome = handshake(server_ssl_context(kits / "server"), client)
    assert got != b"hello"
    assert isinstance(outcome.error, ssl.SSLError), outcome.error
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in str(outcome.error)
    assert outcome.peer is None


def test_an_expired_certificate_from_the_project_ca_is_refused(
    kits: Path, ca: CertificateAuthority, tmp_path: Path
) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    cert, key = stray_cert(ca, tmp_path, not_before=past - dt.timedelta(days=1), not_after=past)
    got, outcome = handshake(
        server_ssl_context(kits / "server"), client_context(kits / "site-1/startup/rootCA.pem", cert, key)
    )
    assert got != b"hello"
    assert isinstance(outcome.error, ssl.SSLCertVerificationError), outcome.error
    assert "expired" in str(outcome.error)


def test_a_client_refuses_a_server_from_another_ca(kits: Path, tmp_path: Path) -> None:
    write_server_kit(tmp_path, create_ca("impostor"), project=PROJECT, org=ORG, port=1)
    got, outcome = handshake(server_ssl_context(tmp_path / "server"), client_ssl_context(kits / "site-1"))
    assert isinstance(got, ssl.SSLCertVerificationError), got
    assert outcome.peer is None


def test_a_client_refuses_a_server_that_does_not_name_the_dialled_host(kits: Path) -> None:
    got, _ = handshake(
        server_ssl_context(kits / "server"), client_ssl_context(kits / "site-1"), "fl.example.org"
    )
    assert isinstance(got, ssl.SSLCertVerificationError), got
    assert "fl.example.org" in str(got) or "match" in str(got)


# --- contexts and kit files ---


def test_contexts_insist_on_modern_verified_tls(kits: Path) -> None:
    server = server_ssl_context(kits / "server")
    assert server.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert server.verify_mode == ssl.CERT_REQUIRED
    client = client_ssl_context(kits / "admin@example.com")
    assert client.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert client.verify_mode == ssl.CERT_REQUIRED
    assert client.check_hostname is True


def test_read_kit_json_tells_the_kind(kits: Path) -> None:
    assert read_kit_json(kits / "server")[0] == "server"
    kind, data = read_kit_json(kits / "site-1")
    assert (kind, data["name"], data["server"]["port"]) == ("site", "site-1", 1)
    assert read_kit_json(kits / "admin@example.com")[1]["role"] == "project_admin"


def copy_kit(kits: Path, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(kits / name, tmp_path / name))


def test_read_kit_json_refuses_non_kits_and_damaged_or_disguised_files(kits: Path, tmp_path: Path) -> None:
    with pytest.raises(ShoalError) as err:
        read_kit_json(tmp_path)
    assert err.value.code == "STARTUP_KIT_MISSING"
    kit = copy_kit(kits, "site-1", tmp_path)
    (kit / "startup/fed_site.json").write_text("{not json")
    with pytest.raises(ShoalError, match="cannot read"):
        read_kit_json(kit)
    (kit / "startup/fed_site.json").unlink()
    (kit / "startup/fed_server.json").write_text('{"kind": "site"}')
    with pytest.raises(ShoalError, match="not a server kit"):
        read_kit_json(kit)


def test_a_kit_with_a_missing_file_is_a_shoal_error(kits: Path, tmp_path: Path) -> None:
    kit = copy_kit(kits, "site-1", tmp_path)
    (kit / "startup/client.key").unlink()
    with pytest.raises(ShoalError) as err:
        client_ssl_context(kit)
    assert err.value.code == "STARTUP_KIT_MISSING"
    assert "client.key" in err.value.message


def test_a_key_that_does_not_match_its_certificate_is_a_shoal_error(kits: Path, tmp_path: Path) -> None:
    kit = copy_kit(kits, "server", tmp_path)
    shutil.copy(kits / "site-1/startup/client.key", kit / "startup/server.key")
    with pytest.raises(ShoalError) as err:
        server_ssl_context(kit)
    assert err.value.code == "STARTUP_KIT_MISSING"
    assert "cannot load" in err.value.message
