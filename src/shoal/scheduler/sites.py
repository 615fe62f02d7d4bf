"""The sites connected right now, and a way to send each a control message."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Sender = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class ConnectedSite:
    name: str
    org: str
    send: Sender
    connected_at: float = field(default_factory=time.time)
    version: str = ""
    policy: dict[str, Any] = field(default_factory=dict)


class SiteRegistry:
    """Connected sites, and an outbox for each site that dropped off within its grace period:
    messages for it wait there and go out, in order, when it reconnects."""

    def __init__(self) -> None:
        self._sites: dict[str, ConnectedSite] = {}
        self._outbox: dict[str, list[dict[str, Any]]] = {}

    def add(self, site: ConnectedSite) -> list[dict[str, Any]]:
        """Register a (re)connected site; returns what waited for it in its outbox."""
        self._sites[site.name] = site
        return self._outbox.pop(site.name, [])

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
