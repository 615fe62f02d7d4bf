"""Who gets in: only certificates from the project CA, of the right kind, not expired, not revoked."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import ssl
import time
from pathlib import Path

import pytest

from shoal.provision.ca import create_ca, issue_cert, load_ca, write_cert, write_key
from tests.e2e.conftest import Federation

pytestmark = pytest.mark.e2e


def server_address(fed: Federation) -> tuple[str, int]:
    poc = json.loads((fed.workspace / "poc.json").read_text())
    return poc["server"]["host"], int(poc["server"]["port"])


def handshake(fed: Federation, cert: Path | None, key: Path | None) -> str:
    """Connect with a client trusting the project CA; return 'ok' or the error text."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(fed.kits / "admin@example.com" / "startup" / "rootCA.pem")
    if cert is not None and key is not None:
        ctx.load_cert_chain(cert, key)
    host, port = server_address(fed)
    try:
        with socket.create_connection((host, port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = tls.recv(1024)
                if not data:  # TLS 1.3: the server's refusal arrives after the client's handshake
                    return "refused: the server closed the connection during the handshake"
                return "ok" if data.startswith(b"HTTP/1.1 200") else f"answered: {data[:40]!r}"
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
        return f"refused: {exc}"


def admin_cert(
    fed: Federation, tmp_path: Path, *, foreign: bool = False, expired: bool = False
) -> tuple[Path, Path]:
    ca = create_ca("someone-else") if foreign else load_ca(fed.workspace / "ca")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    key, cert = issue_cert(
        ca,
        name="mallory@example.org",
        org="example.org",
        kind="admin",
        role="project_admin",
        not_before=past - dt.timedelta(days=1) if expired else None,
        not_after=past if expired else None,
    )
    write_cert(cert, tmp_path / "client.crt")
    write_key(key, tmp_path / "client.key")
    return tmp_path / "client.crt", tmp_path / "client.key"


def test_the_project_kit_gets_in(federation: Federation) -> None:
    startup = federation.kits / "admin@example.com" / "startup"
    assert handshake(federation, startup / "client.crt", startup / "client.key") == "ok"


def test_no_certificate_is_refused(federation: Federation) -> None:
    assert handshake(federation, None, None).startswith("refused")


def test_certificate_from_another_ca_is_refused(federation: Federation, tmp_path: Path) -> None:
    assert handshake(federation, *admin_cert(federation, tmp_path, foreign=True)).startswith("refused")


def test_expired_certificate_is_refused(federation: Federation, tmp_path: Path) -> None:
    assert handshake(federation, *admin_cert(federation, tmp_path, expired=True)).startswith("refused")


def test_admin_certificate_cannot_act_as_a_site(federation: Federation) -> None:
    startup = federation.kits / "admin@example.com" / "startup"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(startup / "rootCA.pem")
    ctx.load_cert_chain(startup / "client.crt", startup / "client.key")
    host, port = server_address(federation)
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(b"GET /site/v1/jobs/1/archive HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 403") and b"NOT_AUTHORIZED" in data


def test_revocation_takes_effect_without_restart(federation: Federation, tmp_path: Path) -> None:
    name = "lead-revoked@example.org"
    proc = federation.cli.run("poc", "add-user", "lead", name, "--workspace", federation.workspace)
    assert proc.returncode == 0, proc.stderr
    kit = federation.kits / name
    code, doc = federation.cli.json("job", "list", "--startup-kit", kit)
    assert code == 0
    revoked = federation.kits / "server" / "local" / "revoked.json"
    revoked.write_text(json.dumps({"names": [name]}))
    try:
        code, doc = federation.cli.json("job", "list", "--startup-kit", kit)
        assert code == 2 and doc["error_code"] == "AUTH_FAILED" and "revoked" in doc["message"]
        code, doc = federation.cli.json("job", "list")
        assert code == 0, "other identities are not affected"
    finally:
        revoked.unlink()
        time.sleep(0.01)
    code, doc = federation.cli.json("job", "list", "--startup-kit", kit)
    assert code == 0


def test_audit_log_records_who_did_what(federation: Federation, tmp_path: Path) -> None:
    job = tmp_path / "job"
    shutil.copytree(Path(__file__).resolve().parents[2] / "examples" / "hello-numpy", job)
    code, doc = federation.cli.json("job", "submit", "-j", job)
    job_id = doc["data"]["job_id"]
    federation.cli.json("job", "abort", job_id, "--force")
    audit = federation.kits / "server" / "workspace" / "audit.jsonl"
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    submit = [e for e in entries if e["action"] == "POST /api/v1/jobs" and e.get("result_job_id") == job_id]
    abort = [e for e in entries if e["action"].endswith("/abort") and e["job_id"] == job_id]
    assert submit and abort
    assert submit[0]["who"] == "admin@example.com" and submit[0]["role"] == "project_admin"
    assert submit[0]["cert_serial"] and submit[0]["time"] <= abort[0]["time"]
