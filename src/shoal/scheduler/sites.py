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
    def __init__(self) -> None:
        self._sites: dict[str, ConnectedSite] = {}

    def add(self, site: ConnectedSite) -> None:
        self._sites[site.name] = site

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
        site = self._sites.get(name)
        if site is None:
            return False
        try:
            await site.send(message)
        except (ConnectionError, RuntimeError):
            return False
        return True
