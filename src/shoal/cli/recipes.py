"""``shoal recipe list`` and ``shoal recipe show NAME``: the built-in recipes, read from the
recipe classes themselves (names, one-line descriptions, parameters with types and defaults)."""

from __future__ import annotations

import argparse

from shoal.cli.output import Result, table
from shoal.errors import ShoalError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(groups: Any) -> None:
    from shoal.cli.main import Parser

    recipe = groups.add_parser("recipe", help="the built-in job recipes (shoal.recipes)")
    subs = recipe.add_subparsers(dest="recipe_command", metavar="SUBCOMMAND", parser_class=Parser)
    p = subs.add_parser("list", help="every built-in recipe with a one-line description")
    p.set_defaults(handler=cmd_list)
    p = subs.add_parser("show", help="one recipe: its class, workflow and parameters")
    p.add_argument("name", help="a recipe name from 'shoal recipe list'")
    p.set_defaults(handler=cmd_show)


def describe(name: str, cls: Any) -> dict[str, Any]:
    return {
        "name": name,
        "class": f"shoal.recipes.{cls.__name__}",
        "workflow": cls.workflow,
        "description": cls.summary(),
    }


def cmd_list(args: argparse.Namespace) -> Result:
    from shoal.recipes import RECIPES

    rows = [describe(name, cls) for name, cls in sorted(RECIPES.items())]
    human = table(rows, [("name", "NAME"), ("class", "CLASS"), ("description", "DESCRIPTION")])
    return Result(rows, human=human)


def cmd_show(args: argparse.Namespace) -> Result:
    from shoal.recipes import RECIPES

    cls = RECIPES.get(args.name)
    if cls is None:
        raise ShoalError("RECIPE_NOT_FOUND", f"known recipes: {', '.join(sorted(RECIPES))}", recipe=args.name)
    data = {**describe(args.name, cls), "parameters": cls.parameters()}
    lines = [f"{data['name']}: {data['description']}", f"class {data['class']}, workflow {cls.workflow}", ""]
    params = [
        {**p, "default": "(required)" if p["required"] else repr(p["default"])} for p in data["parameters"]
    ]
    lines.append(
        table(params, [("name", "PARAMETER"), ("type", "TYPE"), ("default", "DEFAULT"), ("help", "HELP")])
    )
    return Result(data, human="\n".join(lines))
