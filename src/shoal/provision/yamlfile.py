"""Reading a YAML file into plain data, keeping the line of every value for error messages.

PyYAML's loaders drop positions once the data is built, take the last of two equal keys
silently, and expand aliases without bound. Here the file is composed into nodes and
converted by hand: a repeated key is an error naming both lines, an alias chain that would
expand past ``MAX_NODES`` values is refused (a "billion laughs" file), and ``lines`` maps each
value's path (``("participants", 2, "role")``) to its 1-based line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shoal.errors import ShoalError

MAX_BYTES = 1 << 20  # a project file is a few kilobytes
MAX_NODES = 100_000

Path_ = tuple[str | int, ...]


class YamlDoc:
    """The data of one YAML file and the line of each value in it."""

    def __init__(self, source: str, data: Any, lines: dict[Path_, int]) -> None:
        self.source = source
        self.data = data
        self.lines = lines

    def line(self, path: Path_) -> int:
        """The line of ``path``, or of its nearest ancestor that has one (1 for the file)."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)

    def error(self, path: Path_, detail: str, hint: str | None = None) -> ShoalError:
        """PROJECT_FILE_INVALID naming the file, the line and the key."""
        key = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[")
        where = f"{self.source}, line {self.line(path)}" + (f", {key}" if key else "")
        return ShoalError(
            "PROJECT_FILE_INVALID", f"{where}: {detail}", hint=hint, file=self.source, line=self.line(path)
        )


def load_yaml_file(path: Path) -> YamlDoc:
    """The file at ``path``; PROJECT_FILE_INVALID for one that cannot be read or parsed."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ShoalError(
            "PROJECT_FILE_INVALID",
            f"cannot read {source}: {exc.strerror or exc}",
            hint="Pass -p with the path of a project file ('shoal provision init' writes one).",
            file=source,
        ) from exc
    if len(raw) > MAX_BYTES:
        raise ShoalError("PROJECT_FILE_INVALID", f"{source} is larger than {MAX_BYTES} bytes", file=source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ShoalError("PROJECT_FILE_INVALID", f"{source} is not UTF-8 text: {exc}", file=source) from exc
    return parse_yaml(text, source)


def parse_yaml(text: str, source: str) -> YamlDoc:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ShoalError(
            "PROJECT_FILE_INVALID",
            f"{source}, line {line}: not valid YAML: {exc.problem or exc}",
            file=source,
            line=line,
        ) from exc
    except yaml.YAMLError as exc:
        raise ShoalError("PROJECT_FILE_INVALID", f"{source}: not valid YAML: {exc}", file=source) from exc
    lines: dict[Path_, int] = {}
    if node is None:
        return YamlDoc(source, None, lines)
    converter = _Converter(source, lines)
    data = converter.value(node, ())
    return YamlDoc(source, data, lines)


class _Converter:
    def __init__(self, source: str, lines: dict[Path_, int]) -> None:
        self.source = source
        self.lines = lines
        self.count = 0
        self.scalars = yaml.SafeLoader("")  # its constructors turn a scalar node into int, str, ...

    def _fail(self, node: yaml.Node, detail: str) -> ShoalError:
        line = node.start_mark.line + 1
        return ShoalError(
            "PROJECT_FILE_INVALID", f"{self.source}, line {line}: {detail}", file=self.source, line=line
        )

    def value(self, node: yaml.Node, path: Path_) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self._fail(node, f"more than {MAX_NODES} values (aliases expanding without end?)")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, (*path, i)) for i, item in enumerate(node.value)]
        try:
            return self.scalars.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise self._fail(node, f"cannot read this value: {exc}") from exc

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise self._fail(key_node, "merge keys ('<<') are not supported; write the keys out")
            if not isinstance(key_node, yaml.ScalarNode):
                raise self._fail(key_node, "a key must be a plain word")
            key = str(key_node.value)
            if key in out:
                raise self._fail(key_node, f"key '{key}' appears twice (first on line {first_line[key]})")
            first_line[key] = key_node.start_mark.line + 1
            self.lines[(*path, key)] = first_line[key]  # the key's line, where a reader looks
            out[key] = self.value(value_node, (*path, key))
        return out
