"""Messages for a site held by another replica: a row per message, a NOTIFY as the wake-up
(decisions/0042's chosen path, decisions/0047).

A replica that must tell a site something while the site's control channel is on another
replica (``site_sessions``) posts the message here, addressed to that replica. With PostgreSQL
the post also sends ``NOTIFY shoal_site_mail`` with the addressee's id, delivered when the
transaction commits, so the addressee (listening on a connection of its own) takes it at once;
without a listener (SQLite, or a listener reconnecting) the addressee's poll takes it at the
latest one poll later. Taking deletes the rows in the same statement, so a message is taken
once even by two processes of one replica id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

#: The PostgreSQL notification channel; its payload is the addressee replica's id.
CHANNEL = "shoal_site_mail"


@dataclass(frozen=True)
class Mail:
    """One message for ``site``, posted for the replica holding its channel."""

    mail_id: int
    site: str
    replica: str
    message: dict[str, Any]


class MailRows:
    """The site-mail half of ``JobStore``, written once for both stores (mixed in)."""

    _MARK = "?"

    def _write(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _notify(self, conn: Any, replica: str) -> None:
        """Wake ``replica`` when the transaction commits (nothing where nobody can listen)."""

    def post_site_mail(self, site: str, replica: str, message: dict[str, Any]) -> None:
        """Leave ``message`` (strict JSON) for ``site`` with ``replica``, and wake it."""
        m = self._MARK
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO site_mail (site, replica, message, posted) VALUES ({m}, {m}, {m}, {m})",
                (site, replica, json.dumps(message, allow_nan=False), time.time()),
            )
            self._notify(conn, replica)

    def take_site_mail(self, replica: str) -> list[Mail]:
        """Every message left for ``replica``, oldest first, removed as they are read."""
        m = self._MARK
        with self._write() as conn:
            rows = conn.execute(
                f"DELETE FROM site_mail WHERE replica = {m} RETURNING mail_id, site, replica, message",
                (replica,),
            ).fetchall()
        mail = [Mail(int(r[0]), str(r[1]), str(r[2]), dict(json.loads(r[3]))) for r in rows]
        return sorted(mail, key=lambda one: one.mail_id)
