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


USER_DOCS = ("README.md", "run-surface.md", "recipes.md", "simulator.md", "fedstats.md", "pytorch.md")


def test_the_docs_index_links_what_exists_and_its_commands_parse() -> None:
    """docs/README.md is the newcomer's path: its links lead somewhere and every shoal command
    in its examples is one the CLI takes (parsed by the real parser, not run)."""
    import re
    import shlex

    from shoal.cli.main import build_parser

    docs = REPO / "docs"
    text = (docs / "README.md").read_text()
    for link in re.findall(r"\]\(([^)]+)\)", text):
        assert (docs / link).exists(), link
    commands = [
        line.split("#")[0].strip()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S)
        for line in block.splitlines()
    ]
    shoal = [c for c in commands if c.startswith("shoal ")]
    assert len(shoal) >= 12, shoal
    for command in shoal:
        argv = [w.replace("<run-id>", "1") for w in shlex.split(command)[1:]]
        build_parser(argv).parse_args(argv)  # raises on anything the CLI would refuse


def test_user_docs_carry_no_internal_labels_and_every_command_has_examples() -> None:
    import re

    for name in USER_DOCS:
        text = (REPO / "docs" / name).read_text()
        assert not re.search(r"\b(seed \d{3}|issue \d+)\b", text, re.I), name
    reference = (REPO / "docs" / "cli-reference.md").read_text()
    sections = reference.split("\n## ")[1:]
    listed = [
        s
        for s in sections
        if not s.startswith(("`shoal job create", "`shoal job list_templates", "`shoal job show_variables"))
    ]
    assert listed and all("Examples:" in s for s in listed), [
        s.splitlines()[0] for s in listed if "Examples:" not in s
    ]
