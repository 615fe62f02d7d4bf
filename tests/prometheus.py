"""Reading a Prometheus exposition as Prometheus would: the server's and a site's /metrics."""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

#: Every sample of one scrape: (name, sorted labels) -> value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_url(url: str, **urlopen_args: Any) -> Samples:
    """One scrape, checked to be the text format and parsed by prometheus-client's own parser."""
    with urllib.request.urlopen(url, timeout=30, **urlopen_args) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples
