"""``shoal dashboard`` costs the other commands nothing: its web server loads only when it runs."""

from __future__ import annotations

import subprocess
import sys


def test_building_every_command_imports_no_web_server() -> None:
    probe = (
        "import sys\n"
        "from shoal.cli.main import build_parser\n"
        "build_parser([])\n"  # every family, the dashboard's parser included (shoal --help)
        "build_parser(['dashboard'])\n"
        "heavy = ('aiohttp', 'shoal.dashboard', 'shoal.dashboard.app')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", proc.stdout
