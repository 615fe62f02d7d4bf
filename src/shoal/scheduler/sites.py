"""The sites connected right now, and a way to send each a control message."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

Sender = Callable[[dict[str, Any]], Awaitable[None]]
Closer = Callable[[int, str], Coroutine[Any, Any, object]]  # (WebSocket close code, reason)


async def _nothing_to_close(code: int, reason: str) -> None:
    return None


@dataclass
class ConnectedSite:
    name: str
    org: str
    send: Sender
    connected_at: float = field(default_factory=time.time)
    version: str = ""
    studies: frozenset[str] | None = None  # the studies its site_policy.json serves; None: every one
    serial: str = ""  # the certificate's serial, so a revoked certificate's channel can be found
    cert_not_after: float | None = None  # when its certificate expires, for the operator's warnings
    resources: dict[str, Any] = field(default_factory=dict)  # declared in its hello (checked)
    jobs: frozenset[str] = frozenset()  # the jobs its agent runs, as its hello said (job ids)
    last_contact: float = field(default_factory=time.time)  # when it last said anything
    close: Closer = _nothing_to_close  # ends the channel: the agent sees it close and reconnects


_CLOSING: set[asyncio.Task[object]] = set()  # closes in flight (the loop holds tasks weakly)


def close_channel(site: ConnectedSite, code: int, reason: str) -> None:
    """Close a site's control channel without waiting for the close handshake."""
    task = asyncio.get_running_loop().create_task(site.close(code, reason))
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


class SiteRegistry:
    """Connected sites, and an outbox for each site that dropped off within its grace period:
    messages for it wait there and go out, in order, when it reconnects."""

    def __init__(self) -> None:
        self._sites: dict[str, ConnectedSite] = {}
        self._outbox: dict[str, list[dict[str, Any]]] = {}

    def add(self, site: ConnectedSite) -> tuple[list[dict[str, Any]], ConnectedSite | None]:
        """Register a (re)connected site; returns what waited for it in its outbox, and the
        older connection of the same site it replaced, if one is still registered: the caller
        must close that one, or it stays open unregistered and its agent never reconnects."""
        previous = self._sites.get(site.name)
        self._sites[site.name] = site
        replaced = previous if previous is not None and previous.send is not site.send else None
        return self._outbox.pop(site.name, []), replaced

    def hold(self, name: str) -> None:
        """The site dropped off: keep its messages until it returns or ``drop`` is called."""
        self._outbox.setdefault(name, [])

    def drop(self, name: str) -> bool:
        """The grace period ended; True if the site is still away (its outbox is discarded)."""
        if name in self._sites:
            return False
        self._outbox.pop(name, None)
        return True

    def remove(self, name: str, send: Sender) -> bool:
        """Forget a site, unless a newer connection of the same site has replaced it."""
        current = self._sites.get(name)
        if current is not None and current.send is send:
            del self._sites[name]
            return True
        return False

    def get(self, name: str) -> ConnectedSite | None:
        return self._sites.get(name)

    def held(self, name: str) -> bool:
        """Whether the site dropped off and is within its grace (its messages wait for it)."""
        return name in self._outbox and name not in self._sites

    def names(self) -> list[str]:
        return sorted(self._sites)

    def all(self) -> list[ConnectedSite]:
        return [self._sites[n] for n in self.names()]

    async def send(self, name: str, message: dict[str, Any]) -> bool:
        """Deliver now, or keep for the site's return: a site away within its grace, or whose
        connection is closing under us (its handler has not noticed yet; it will, and hold the
        site), gets it when it reconnects. False only for a site nobody is waiting for."""
        site = self._sites.get(name)
        if site is not None:
            try:
                await site.send(message)
                return True
            except (ConnectionError, RuntimeError):
                self._outbox.setdefault(name, [])
        if name in self._outbox:
            self._outbox[name].append(message)
            return True
        return False
