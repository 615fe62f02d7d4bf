"""A built-in workflow's arguments are checked before anything runs: a typo or a wrong type is
an error naming the argument, not a silently ignored key or a TypeError in round one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shoal.runtime.controller import resolve_workflow
from shoal.wire.jobdef import BUILTIN_WORKFLOWS


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({"num_roundz": 3}, "takes no argument 'num_roundz' (did you mean 'num_rounds'?)"),
        ({"num_rounds": "abc"}, "num_rounds must be int, not 'abc'"),
        ({"num_rounds": True}, "num_rounds must be int, not True"),
        ({"round_timeout": "soon"}, "round_timeout must be float"),
    ],
)
def test_a_builtin_workflow_refuses_arguments_it_does_not_take(args: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match="workflow 'fedavg'") as err:
        resolve_workflow({"workflow": "fedavg", "args": args})
    assert says in str(err.value)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("fedavg", {"num_rounds": 3, "min_responses": None, "round_timeout": 5, "task_meta": {"mu": 0.1}}),
        ("fedavg", {"initial_model": None, "round_timeout": 2.5}),
        ("fedstats", {"statistics": ["mean"], "min_count": 1, "bins": 4}),
        ("cyclic", {"num_rounds": 2, "order": "random", "seed": 3}),
        ("cross_site_eval", {"evaluate_local": False, "num_rounds": 2}),
    ],
)
def test_the_arguments_each_builtin_documents_are_accepted(name: str, args: dict[str, Any]) -> None:
    assert name in BUILTIN_WORKFLOWS
    cls, got = resolve_workflow({"workflow": name, "args": args})
    assert got == args and cls.__name__


def test_a_custom_workflow_reads_what_it_likes() -> None:
    """``{"class": ...}`` names custom code: its arguments are its own business."""
    cls, args = resolve_workflow(
        {"workflow": {"class": "shoal.workflows.fedavg.FedAvg"}, "args": {"anything": 1}}
    )
    assert cls.__name__ == "FedAvg" and args == {"anything": 1}


def test_server_side_privacy_runs_only_in_a_workflow_that_applies_it(tmp_path: Path) -> None:
    from shoal.runtime.controller import check_privacy_support
    from shoal.workflows.cyclic import Cyclic
    from shoal.workflows.fedavg import FedAvg

    (tmp_path / "app").mkdir()
    budget = {"budget": {"epsilon": 1.0, "delta": 1e-5}}
    (tmp_path / "meta.json").write_text(json.dumps({"privacy": budget}))
    check_privacy_support(FedAvg, tmp_path / "app")
    with pytest.raises(ValueError, match="budget, which the workflow Cyclic does not apply"):
        check_privacy_support(Cyclic, tmp_path / "app")
    (tmp_path / "meta.json").write_text(json.dumps({"privacy": {"top_fraction": 0.5}}))
    check_privacy_support(Cyclic, tmp_path / "app")  # site-side filters work under any workflow


@pytest.mark.parametrize(
    "dotted", ["shoal.fl.fedavg.FedAvg", "shoal.workflows.fedavg.FedAvg"], ids=["before-the-move", "now"]
)
def test_fedavg_by_its_old_and_new_class_path_is_shoal_code(dotted: str) -> None:
    """Jobs written before the workflows left ``shoal.fl`` name FedAvg by its old path: it still
    loads the same class, and a study that forbids custom code still runs it."""
    from shoal.workflows.fedavg import FedAvg

    cls, _ = resolve_workflow({"workflow": {"class": dotted}, "args": {}}, allow_custom_code=False)
    assert cls is FedAvg


def test_custom_workflows_import_the_base_by_its_old_path_too() -> None:
    from shoal.fl.workflow import Workflow as OldPath
    from shoal.workflows.base import Workflow

    assert OldPath is Workflow
