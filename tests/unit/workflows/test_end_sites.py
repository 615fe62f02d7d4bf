"""A workflow's summary holds what the sites logged after their last result (decisions/0053):
``end_sites`` says Finishing, takes what the server relays until it says the sites ended, and
writes a summary written before again when metrics came meanwhile."""

from __future__ import annotations

import json
import time

from tests.unit.workflows.conftest import ChannelPair

from shoal.scheduler.run_end import SITE_END_GRACE
from shoal.wire.channel import encode
from shoal.wire.controller import SiteMetric, SitesEnded
from shoal.wire.messages import encode as encode_message
from shoal.workflows.base import SITES_END_WAIT


def _summary(pair: ChannelPair) -> dict[str, object]:
    doc: dict[str, object] = json.loads((pair.ctx.workspace / "metrics_summary.json").read_text())
    return doc


def test_a_metric_logged_after_the_summary_was_written_is_in_it_once_the_sites_ended(
    channel_pair: ChannelPair,
) -> None:
    pair = channel_pair
    pair.ctx.workspace.mkdir()
    pair.ctx.write_metrics_summary("fedavg", num_rounds=1)
    assert _summary(pair)["logged_metrics"] == {}
    late = SiteMetric(site="site-1", key="final_eval", value=0.9)
    pair.server.sendall(encode(encode_message(late)) + encode(encode_message(SitesEnded())))
    pair.ctx.end_sites(wait=5)
    said = pair.server.recv(4096)
    assert json.loads(said.splitlines()[0]) == {"op": "finishing"}
    summary = _summary(pair)
    assert summary["num_rounds"] == 1 and summary["workflow"] == "fedavg"
    logged = summary["logged_metrics"]
    assert isinstance(logged, dict)
    assert [(m["key"], m["value"]) for m in logged["site-1"]] == [("final_eval", 0.9)]


def test_without_news_the_summary_is_not_written_again_and_the_wait_is_bounded(
    channel_pair: ChannelPair,
) -> None:
    pair = channel_pair
    pair.ctx.workspace.mkdir()
    path = pair.ctx.write_metrics_summary("fedavg", num_rounds=1)
    before = path.stat().st_mtime_ns
    start = time.monotonic()
    pair.ctx.end_sites(wait=0.3)  # the server never answers
    assert 0.3 <= time.monotonic() - start < 3
    assert path.stat().st_mtime_ns == before


def test_the_workflow_waits_longer_than_the_server_grants_the_sites() -> None:
    """The server answers SitesEnded at the latest SITE_END_GRACE after Finishing; the workflow
    must still be listening then, or the stragglers' metrics would be waited for in vain."""
    assert SITES_END_WAIT > SITE_END_GRACE
