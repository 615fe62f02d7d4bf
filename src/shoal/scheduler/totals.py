"""What the server has done since it started, summed over every job (``/metrics``).

A job's own counts (``Progress``) go when the job is forgotten; an operator's dashboard wants
counters that only grow for the server's life. These are plain integers, kept whether or not
the Prometheus library is installed, so the hot path pays one addition and imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServerTotals:
    """Counters since the server process started; each only grows."""

    rounds_done: int = 0
    tasks_sent: int = 0
    results_received: int = 0
    bytes_to_sites: int = 0  # models sent down, inline or streamed
    bytes_from_sites: int = 0  # results taken up
    metrics_logged: int = 0  # values the training scripts logged (flare.log_metric)
