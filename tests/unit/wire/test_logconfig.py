"""Log lines carry UTC times marked Z in every time zone, so ``job logs --since`` (which takes
times as ``job meta`` gives them, in UTC) filters the same wherever the server runs."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

from shoal.cli.job_observe import parse_when

PROBE = (
    "import logging\n"
    "from shoal.wire import logconfig\n"
    "logconfig.setup()\n"
    "logging.getLogger('shoal.test').info('a line')\n"
    "logconfig.apply('concise')\n"
    "logging.getLogger('shoal.test').info('another')\n"
)


def test_a_server_far_from_utc_still_logs_utc_times() -> None:
    before = datetime.now(UTC).replace(tzinfo=None)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "Asia/Tokyo"},  # UTC+9: local times would be 9 hours ahead
        timeout=30,
        check=True,
    )
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and lines[0].endswith("shoal.test - INFO - a line"), lines
    for line in lines:
        stamp = line.split(" - ", 1)[0]
        assert stamp.endswith("Z"), line
        when = parse_when(stamp)
        assert abs((when - before).total_seconds()) < 60, (stamp, before)
