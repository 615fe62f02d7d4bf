"""A site's session row, as the other replicas read it every second (decisions/0047, 0048)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from shoal.scheduler.sites import ConnectedSite
from shoal.server.context import ServerContext
from shoal.server.site_sessions import session_of
from shoal.server.studies import Studies


async def _send(message: dict[str, object]) -> None:
    return None


def test_a_sessions_studies_are_only_the_federations_own() -> None:
    """A hostile hello may list thousands of studies; the row keeps those the federation has
    (all a replica needs to place a job), not a megabyte every replica reads each second."""
    ctx = cast(
        ServerContext,
        SimpleNamespace(scheduler=SimpleNamespace(replica="replica-a"), studies=Studies({"cancer": {}})),
    )
    listed = frozenset({"cancer", "default", *(f"junk-{n}" for n in range(10_000))})
    site = ConnectedSite(name="site-1", org="acme", send=_send, studies=listed, jobs=frozenset({"7"}))
    row = session_of(ctx, site)
    assert (row.replica, row.studies, row.jobs) == ("replica-a", ("cancer", "default"), ("7",))
    every = session_of(ctx, ConnectedSite(name="site-2", org="acme", send=_send))
    assert every.studies is None  # a site whose policy names no studies serves every one
