"""Another version of shoal's code, for a workload measured beside its baseline in one run.

``baseline_env(rev)`` extracts ``src/`` of a git revision of this repository into a temporary
folder, byte-compiles it (as ``make`` does for the working tree: a CLI call must not pay for
compiling) and yields the environment that makes ``python -m shoal`` (the CLI, ``poc start``,
hence the server, the sites and their job processes) run that code: ``PYTHONPATH`` comes before
the editable install's path. The bench's own process keeps this tree's code (its load
generator and probe are clients, the same for both sides).
"""

from __future__ import annotations

import compileall
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: ``main`` before issue 19's first target was worked on (job priority, the load method):
#: the load workload's baseline in ``make bench``.
LOAD_BASELINE = "676802420c0288ffd681b3c252af11b06486ade1"


def resolve(rev: str) -> str | None:
    """The full commit id of ``rev`` in this repository, or None (no git, or no such revision:
    a shallow clone)."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
            capture_output=True,
            text=True,
        )
    except OSError:
        return None
    return proc.stdout.strip() or None


@contextmanager
def baseline_env(rev: str) -> Iterator[dict[str, str]]:
    """``{"PYTHONPATH": <rev's src>}`` while the extracted tree exists."""
    with tempfile.TemporaryDirectory(prefix="shoal-baseline-") as tmp:
        archive = Path(tmp) / "src.tar"
        with archive.open("wb") as out:
            subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], stdout=out, check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        compileall.compile_dir(str(Path(tmp) / "src"), quiet=1)
        yield {"PYTHONPATH": str(Path(tmp) / "src")}
