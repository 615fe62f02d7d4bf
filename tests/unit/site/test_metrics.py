"""A site's ``local/metrics.json`` is checked at start: its /metrics is served on its host's
loopback only, and a bad file stops the agent naming it (decisions/0030)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.errors import ShoalError
from shoal.site.metrics import MetricsConfig, load_metrics_config


def test_no_file_no_metrics_and_the_defaults(tmp_path: Path) -> None:
    assert load_metrics_config(tmp_path) is None
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "metrics.json").write_text("{}")
    assert load_metrics_config(tmp_path) == MetricsConfig("127.0.0.1", 9102)
    (tmp_path / "local" / "metrics.json").write_text('{"host": "::1", "port": 0}')
    assert load_metrics_config(tmp_path) == MetricsConfig("::1", 0)


@pytest.mark.parametrize(
    "config", [{"host": "0.0.0.0"}, {"host": "10.1.2.3", "port": 9102}, {"port": "9102"}, {"tls": True}]
)
def test_a_site_refuses_metrics_it_would_serve_beyond_its_host(
    tmp_path: Path, config: dict[str, object]
) -> None:
    """Anything but a loopback address (or a bad value, an unknown key) stops the agent at
    start with LOCAL_FILE_ERROR naming local/metrics.json, before it serves or connects."""
    kit = tmp_path / "kit"
    (kit / "local").mkdir(parents=True)
    (kit / "local" / "metrics.json").write_text(json.dumps(config))
    with pytest.raises(ShoalError) as caught:
        load_metrics_config(kit)
    assert caught.value.code == "LOCAL_FILE_ERROR" and "metrics.json" in caught.value.message
