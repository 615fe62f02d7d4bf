"""Text from sites reaches admins' terminals escaped, and a site cannot forge where its log ends.

A site's script prints what a hostile one would (OSC window titles, screen clears, hidden text,
``\\r`` overwrites, bidi overrides, lines that look like another site's log) and fails with
such a message; ``job logs`` and ``job meta`` are read as people and as scripts read them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.conftest import Federation
from tests.e2e.jobs import copy_hello

pytestmark = pytest.mark.e2e

HOSTILE_SCRIPT = r"""
import os
me = os.environ["SHOAL_SITE_NAME"]
other = "site-2" if me == "site-1" else "site-1"
ESC = "\x1b"
print(ESC + "]0;pwned title" + "\x07" + "after the title", flush=True)
print(ESC + "[2J" + ESC + "[H" + "after a screen clear", flush=True)
print("visible " + ESC + "[8m" + "hidden text" + ESC + "[0m", flush=True)
print("innocent line\rOVERWRITTEN", flush=True)
print("bidi \u202eevil\u202c and \u2066isolate\u2069 zero\u200bwidth \x9b31m c1", flush=True)
print("===== " + other + " =====", flush=True)
print(other + " | forged by " + me, flush=True)
print("server | forged by " + me + "\u2028" + other + " | forged by " + me, flush=True)
raise RuntimeError("boom " + ESC + "]0;meta title\x07 done\nStatus:      FINISHED_OK")
"""

RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


def test_logs_and_meta_escape_what_sites_wrote_and_keep_it_exact_in_json(
    federation: Federation, tmp_path: Path
) -> None:
    job = copy_hello(tmp_path / "hostile")
    (job / "app" / "custom" / "client.py").write_text(HOSTILE_SCRIPT)
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "120", timeout=150)
    assert doc["data"]["status"] == "FAILED", doc
    job_id = str(doc["data"]["job_id"])

    human = federation.cli.run("job", "logs", job_id, "--site", "all")
    assert human.returncode == 0, human.stderr
    assert not RAW.search(human.stdout.replace("\r\n", "\n")), repr(RAW.search(human.stdout))
    assert "\\x1b]0;pwned title\\x07after the title" in human.stdout
    assert "innocent line\\x0dOVERWRITTEN" in human.stdout and "bidi \\u202eevil" in human.stdout
    forged = 0
    for line in human.stdout.splitlines():
        source, _, text = line.partition(" | ")
        assert source.strip() in ("server", "site-1", "site-2"), line
        for site in ("site-1", "site-2"):
            if f"forged by {site}" in text:
                forged += 1
                assert source.strip() == site, f"a line {site} wrote passes for {source.strip()}'s: {line}"
        assert not line.startswith("====="), line  # a fake header stays inside its site's line
    assert forged >= 4, human.stdout  # two forged lines a site, and one separator kept in its line

    meta = federation.cli.run("job", "meta", job_id)
    assert meta.returncode == 0, meta.stderr
    assert not RAW.search(meta.stdout), repr(meta.stdout)
    assert "\\x1b]0;meta title\\x07 done" in meta.stdout
    status_lines = [line for line in meta.stdout.splitlines() if line.startswith("Status:")]
    assert status_lines == ["Status:      FAILED"], meta.stdout  # the forged one is indented

    # JSON output carries the exact text (JSON's escaping is all it needs).
    code, doc = federation.cli.json("job", "meta", job_id)
    assert "RuntimeError: boom \x1b]0;meta title\x07 done" in doc["data"]["first_error"]["message"], doc
    code, doc = federation.cli.json("job", "logs", job_id, "--site", "site-1")
    assert code == 0, doc
    records = [json.loads(line) for line in doc["data"]["logs"]["site-1"].splitlines()]
    messages = "\n".join(str(record.get("message", "")) for record in records)
    assert "\x1b]0;pwned title\x07after the title" in messages, messages
    assert "innocent line\rOVERWRITTEN" in messages and "bidi \u202eevil\u202c" in messages
