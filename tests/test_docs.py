"""The generated docs are current: every error code and every command is documented."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO


def test_generated_docs_are_current() -> None:
    spec = importlib.util.spec_from_file_location("gen_docs", REPO / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for path, text in module.generated().items():
        assert path.read_text() == text, f"{path.name} is stale: run python scripts/gen_docs.py"
