"""Which job store a server opens: the embedded SQLite file, or the database SHOAL_STORE_URL names.

Kept apart from both backends so the server imports psycopg only when an operator asked for
PostgreSQL (``make demo`` and the CLI never load it). Every message built here goes through
``redact``/``scrub``: a store URL carries a password, and neither a log line nor an error may.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from shoal import settings
from shoal.errors import ShoalError
from shoal.store.base import JobStore

#: The environment variable that moves the server off its embedded SQLite file.
STORE_URL_ENV = settings.STORE_URL
POSTGRES_SCHEMES = ("postgresql", "postgres")
_USERINFO_PASSWORD = re.compile(r"://[^:/@]*:([^@]*)@")


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (user, host, port and database stay: they
    are what an operator needs to see which store is meant)."""
    if "://" not in url:  # a libpq "key=value" string, say: it may hold password=...
        return "(not a URL: not shown)"
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:  # not even a URL (a bad port, say): show only its scheme
        return url.split(":", 1)[0] + "://***"


def scrub(text: str, url: str) -> str:
    """``text`` (a driver's message, say) with the URL's password and the URL itself removed.

    A driver may quote the connection string it could not parse; we cannot know every message,
    so we take out the secret wherever it appears instead of trusting any message's form.
    """
    secrets = [url]
    try:
        password = urlsplit(url).password
    except ValueError:  # unparsable: whatever stands between "user:" and "@" is the secret
        found = _USERINFO_PASSWORD.search(url)
        password = found.group(1) if found else None
    if password:
        secrets += [password, unquote(password)]
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, redact(url) if secret == url else "***")
    return text


def open_job_store(workspace: Path, url: str | None) -> tuple[JobStore, str]:
    """The server's store and how to name it in a log line (never with a password).

    ``url`` unset or empty: ``<workspace>/store.db``. ``postgresql://...``: PostgreSQL (the
    schema is created or upgraded on first use). Anything else or a missing driver is
    ``STORE_CONFIG``, a database that does not answer or refuses us ``STORE_UNAVAILABLE``; both
    name the redacted URL, before the server serves.
    """
    if not url:
        path = workspace / "store.db"
        try:
            from shoal.store.sqlite import SqliteJobStore

            return SqliteJobStore(path), str(path)
        except (OSError, sqlite3.Error) as exc:
            raise ShoalError(
                "LOCAL_FILE_ERROR", f"cannot open the job store {path}: {exc}", path=str(workspace)
            ) from exc
    shown = redact(url)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in POSTGRES_SCHEMES:
        raise ShoalError(
            "STORE_CONFIG",
            f"{STORE_URL_ENV}={shown} is not a postgresql:// URL (unset it for the embedded SQLite store)",
        )
    try:
        from shoal.store.postgres import PostgresJobStore
    except ImportError as exc:
        raise ShoalError(
            "STORE_CONFIG", f"{shown} needs the PostgreSQL driver: pip install 'shoal[postgres]'"
        ) from exc
    import psycopg

    try:
        return PostgresJobStore(url), shown
    except Exception as exc:  # any driver failure: reported scrubbed, never with the secret
        detail = scrub(f"{type(exc).__name__}: {exc}".strip(), url)
        # The database did not answer or refused us (STORE_UNAVAILABLE), or the URL itself, or
        # the schema, is wrong (STORE_CONFIG). ``from None``: the driver's exception, which may
        # quote the URL, stays out of every traceback.
        code = "STORE_UNAVAILABLE" if isinstance(exc, psycopg.OperationalError) else "STORE_CONFIG"
        raise ShoalError(code, f"cannot open the job store {shown}: {detail}") from None
