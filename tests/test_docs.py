"""The docs are current and true to the tests: every error code and every command is documented,
and every test a document names (docs/reliability.md's tables above all) exists."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

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


#: A test a document names: a path under the repository, then ``::name`` for one test in it
#: (``::name`` alone names another test in the last file named before it, in the same cell).
TEST_REF = re.compile(r"`((?:tests|bench)/[^`:\s]+)?((?:::[A-Za-z_][A-Za-z0-9_]*)?)`")


def named_tests(text: str) -> list[tuple[str, str]]:
    """Every (file, test or "") a text names in backticks, ``::name`` resolved to its file."""
    refs, last = [], ""
    for match in TEST_REF.finditer(text):
        path, name = match.group(1), match.group(2).removeprefix("::")
        if not path and not name:
            continue
        last = path or last
        refs.append((last, name))
    return refs


def defined_tests(path: Path) -> set[str]:
    """The names of the functions a Python file defines, at module level and in its classes."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in tree.body:
        body = node.body if isinstance(node, ast.ClassDef) else [node]
        names |= {n.name for n in body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    return names


def missing(refs: list[tuple[str, str]]) -> list[str]:
    problems = []
    for path, name in refs:
        file = REPO / path
        if not path:
            problems.append(f"::{name} names no file before it")
        elif not file.exists():
            problems.append(f"{path} does not exist")
        elif name and (file.is_dir() or name not in defined_tests(file)):
            problems.append(f"{path} defines no {name}")
    return problems


def reliability_rows() -> list[tuple[str, str]]:
    """(first cell, last cell) of every row of every table in docs/reliability.md."""
    rows = []
    for line in (REPO / "docs" / "reliability.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) >= 3 and not set(cells[0]) <= set("-: ") and cells[-1] != "test":
            rows.append((cells[0], cells[-1]))
    return rows


def test_every_reliability_row_names_tests_that_exist() -> None:
    rows = reliability_rows()
    assert len(rows) > 30  # the tables were read at all
    problems = []
    for first, cell in rows:
        refs = named_tests(cell)
        if not refs:
            problems.append(f"row {first[:60]!r} names no test")
        problems += [f"row {first[:60]!r}: {p}" for p in missing(refs)]
    assert problems == []


def test_every_test_the_docs_name_exists() -> None:
    problems = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        problems += [f"{doc.relative_to(REPO)}: {p}" for p in missing(named_tests(doc.read_text()))]
    assert problems == []


def test_the_checks_catch_a_test_that_is_not_there() -> None:
    """The checks above fail on a wrong name: a file that is missing, a test a file lacks, a
    ``::name`` after another file's name (the parser must not turn them into passes)."""
    cell = (
        "`tests/test_docs.py::test_generated_docs_are_current`, `::no_such_test`, "
        "`tests/faults/test_gone.py`, `tests/e2e/test_poc.py`, `::test_generated_docs_are_current`"
    )
    assert missing(named_tests(cell)) == [
        "tests/test_docs.py defines no no_such_test",
        "tests/faults/test_gone.py does not exist",
        "tests/e2e/test_poc.py defines no test_generated_docs_are_current",
    ]
    assert named_tests("`shoal job wait`, `SIGKILL`, `::`") == []


def test_each_decision_record_has_its_own_number_and_its_title_says_it() -> None:
    """Records written on parallel branches took the same next number more than once; a
    reference like ``decisions/0032`` must name one record."""
    numbers: dict[str, str] = {}
    for record in sorted((REPO / "docs" / "decisions").glob("*.md")):
        number = record.name[:4]
        assert number.isdigit(), record.name
        assert number not in numbers, f"{record.name} and {numbers[number]} share {number}"
        numbers[number] = record.name
        title = record.read_text().splitlines()[0]
        assert title.startswith(f"# {number}"), f"{record.name} is titled {title!r}"


def test_the_code_maps_package_table_names_every_package_and_only_those() -> None:
    """docs/architecture.md's Packages table is the code map: a package added or removed
    without its row fails here."""
    text = (REPO / "docs" / "architecture.md").read_text()
    table = text.split("## Packages", 1)[1].split("\n\n", 2)[1]
    listed = set(re.findall(r"^\| `(shoal\.[a-z_]+)` \|", table, re.M))
    packages = {f"shoal.{p.parent.name}" for p in (REPO / "src" / "shoal").glob("*/__init__.py")}
    assert listed == packages
