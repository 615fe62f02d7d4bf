"""The site registry: a newer connection of a site hands back the one it replaced, to be closed."""

from __future__ import annotations

from typing import Any

from shoal.scheduler.sites import ConnectedSite, SiteRegistry


def _site(name: str) -> ConnectedSite:
    async def send(message: dict[str, Any]) -> None:
        return None

    return ConnectedSite(name=name, org="x.org", send=send)


def test_a_newer_connection_returns_the_one_it_replaced() -> None:
    registry = SiteRegistry()
    first, second = _site("site-1"), _site("site-1")
    assert registry.add(first) == ([], None)
    assert registry.add(second) == ([], first)
    assert registry.add(second) == ([], None), "the same connection saying hello again replaces nothing"
    assert not registry.remove("site-1", first.send), "the replaced one's end does not unregister the site"
    assert registry.names() == ["site-1"]
