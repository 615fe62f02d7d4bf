"""Loading data must never run code: no pickle (nor anything that pickles between processes), dill,
marshal, torch.load, np.load of pickles or eval in shoal, its examples, scripts and bench."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from shoal.errors import ShoalError
from shoal.wire.models import check_safetensors, load_params, save_params

REPO = Path(__file__).resolve().parents[2]
#: The code a scan covers: shoal itself, and what ships beside it and runs on sites.
SCANNED = [REPO / "src" / "shoal", REPO / "examples", REPO / "scripts", REPO / "bench"]

#: Modules whose loading runs code from the data, or which pass objects between processes by
#: pickling them (multiprocessing's queues, pipes, pools and managers).
FORBIDDEN_MODULES = {
    "pickle",
    "_pickle",
    "cPickle",
    "pickletools",
    "copyreg",
    "dill",
    "cloudpickle",
    "marshal",
    "shelve",
    "joblib",
    "multiprocessing",
}
#: Calls that load pickles or run strings as code, by their full dotted name.
FORBIDDEN_CALLS = {
    "eval",
    "exec",
    "builtins.eval",
    "builtins.exec",
    "torch.load",
    "torch.serialization.load",
    "pandas.read_pickle",
    "concurrent.futures.ProcessPoolExecutor",
    "concurrent.futures.process.ProcessPoolExecutor",
}
#: Loaders that unpickle only when asked to: refused unless ``allow_pickle=False`` is written.
PICKLE_IF_ALLOWED = {"numpy.load", "numpy.lib.npyio.load", "numpy.lib.format.read_array"}
IMPORTERS = {"importlib.import_module", "__import__", "builtins.__import__"}


class Scan(ast.NodeVisitor):
    """What one file uses, with every name resolved to the dotted name it stands for:
    ``import pickle as p`` makes ``p.loads`` ``pickle.loads``; ``from torch import load as l``
    makes ``l`` ``torch.load``; ``t = torch`` makes ``t.load`` ``torch.load``. Scopes are not
    told apart (an alias anywhere in the file counts everywhere), which errs toward a finding."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.names: dict[str, str] = {}
        self.problems: list[str] = []

    def dotted(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.names.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return None if base is None else f"{base}.{node.attr}"
        return None

    def flag(self, node: ast.AST, what: str) -> None:
        self.problems.append(f"{self.where}:{getattr(node, 'lineno', 0)} {what}")

    def check_module(self, node: ast.AST, module: str) -> None:
        if module.split(".")[0] in FORBIDDEN_MODULES:
            self.flag(node, f"imports {module}")

    def check_name(self, node: ast.AST, name: str) -> None:
        if name in FORBIDDEN_CALLS or name in PICKLE_IF_ALLOWED:
            self.flag(node, f"names {name}")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.check_module(node, alias.name)
            if alias.asname:
                self.names[alias.asname] = alias.name
            else:
                self.names[alias.name.split(".")[0]] = alias.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        self.check_module(node, module)
        for alias in node.names:
            full = f"{module}.{alias.name}" if module else alias.name
            self.check_module(node, full)
            if node.level == 0 and alias.name != "*" and full not in PICKLE_IF_ALLOWED:
                self.check_name(node, full)
            self.names[alias.asname or alias.name] = full

    def visit_Assign(self, node: ast.Assign) -> None:
        target = self.dotted(node.value)
        if target is not None:
            for name in node.targets:
                if isinstance(name, ast.Name):
                    self.names[name.id] = target
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = self.dotted(node.func)
        if name in FORBIDDEN_CALLS:
            self.flag(node, f"calls {name}")
        elif name in PICKLE_IF_ALLOWED:
            allow = next((k.value for k in node.keywords if k.arg == "allow_pickle"), None)
            if not (isinstance(allow, ast.Constant) and allow.value is False):
                self.flag(node, f"calls {name} without allow_pickle=False")
        elif name in IMPORTERS and node.args and isinstance(node.args[0], ast.Constant):
            self.check_module(node, str(node.args[0].value))
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        """A forbidden loader handed on without being called (``load = torch.load``)."""
        name = self.dotted(node)
        if name in FORBIDDEN_CALLS:
            self.flag(node, f"names {name}")
        self.generic_visit(node)


def scan(source: str, where: str = "<test>") -> list[str]:
    tree = ast.parse(source, filename=where)
    found = Scan(where)
    found.visit(tree)  # a first pass learns every alias: an import at a file's end counts above it
    found.problems.clear()
    found.visit(tree)
    return sorted(set(found.problems))


def test_no_deserialiser_that_runs_code_is_used_anywhere_in_shoal() -> None:
    problems = []
    files = [path for root in SCANNED for path in sorted(root.rglob("*.py"))]
    assert len(files) > 100  # the scan found the code at all
    for path in files:
        problems += scan(path.read_text(), str(path.relative_to(REPO)))
    assert problems == []


@pytest.mark.parametrize(
    "source",
    [
        "import pickle",
        "import pickle as p\np.loads(b'')",
        "from pickle import loads\nloads(b'')",
        "from pickle import loads as harmless\nharmless(b'')",
        "import _pickle",
        "import marshal as m",
        "import shelve",
        "import dill",
        "from cloudpickle import loads",
        "import joblib",
        "from joblib import load",
        "import multiprocessing",
        "from multiprocessing.connection import Client",
        "from concurrent.futures import ProcessPoolExecutor",
        "import concurrent.futures as cf\ncf.ProcessPoolExecutor()",
        "import torch\ntorch.load('m.pt')",
        "import torch as t\nt.load('m.pt')",
        "from torch import load\nload('m.pt')",
        "from torch import load as fetch\nfetch('m.pt')",
        "import torch\nt = torch\nt.load('m.pt')",
        "import torch\nread = torch.load\nread('m.pt')",
        "import torch.serialization\ntorch.serialization.load('m.pt')",
        "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
        "import numpy\nnumpy.load('a.npy')",
        "from numpy import load as npl\nnpl('a.npy', allow_pickle=True)",
        "import numpy as np\nflag = True\nnp.load('a.npy', allow_pickle=flag)",
        "import pandas as pd\npd.read_pickle('x')",
        "eval('1')",
        "import builtins\nbuiltins.exec('1')",
        "import importlib\nimportlib.import_module('pickle')",
        "__import__('marshal')",
        "def f():\n    return q.loads(b'')\nimport pickle as q",
    ],
)
def test_the_scan_sees_through_aliases(source: str) -> None:
    """Each of these is found: a scan that matched names only let ``import torch as t;
    t.load`` through."""
    assert scan(source) != [], source


@pytest.mark.parametrize(
    "source",
    [
        "import numpy as np\nnp.load('a.npy', allow_pickle=False)",
        "import json\njson.loads('{}')",
        "from safetensors.numpy import load_file\nload_file('m.safetensors')",
        "import torch\ntorch.save\nmodel.load_state_dict({})",
        "from concurrent.futures import ThreadPoolExecutor, Future",
        "load = 3\nload('x')",
    ],
)
def test_the_scan_passes_what_loads_no_code(source: str) -> None:
    assert scan(source) == [], source


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x05\x00",
        b"\xff" * 8 + b"{}",
        b"\x02\x00\x00\x00\x00\x00\x00\x00[]",
        b'\x10\x00\x00\x00\x00\x00\x00\x00{"w": {"dtype": 1}}',
    ],
)
def test_malformed_safetensors_is_refused_cleanly(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(payload)
    with pytest.raises(ShoalError) as err:
        check_safetensors(path)
    assert err.value.code == "MODEL_INVALID"
    with pytest.raises(ShoalError) as err:
        load_params(path)
    assert err.value.code == "MODEL_INVALID"


def test_valid_safetensors_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ok.safetensors"
    save_params({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, path)
    check_safetensors(path)
    np.testing.assert_array_equal(load_params(path)["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
