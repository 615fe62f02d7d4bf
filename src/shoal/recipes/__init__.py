"""Recipes: jobs built in Python (``job.py``), exported as job folders or simulated.

    from shoal.recipes import FedAvgRecipe
    recipe = FedAvgRecipe(name="hello", min_clients=2, num_rounds=5, train_script="client.py")
    if __name__ == "__main__":
        raise SystemExit(recipe.main())  # python job.py --export --export-dir DIR  |  python job.py -n 10

``RECIPES`` is what ``shoal recipe list`` and ``recipe show`` read: name -> class.
"""

from __future__ import annotations

from shoal.recipes.base import Recipe
from shoal.recipes.fedavg import CrossSiteEvalRecipe, CyclicRecipe, FedAvgRecipe, FedProxRecipe
from shoal.recipes.fedstats import FedStatsRecipe

RECIPES: dict[str, type[Recipe]] = {
    cls.recipe_name: cls
    for cls in (FedAvgRecipe, FedProxRecipe, CyclicRecipe, CrossSiteEvalRecipe, FedStatsRecipe)
}

__all__ = [
    "RECIPES",
    "CrossSiteEvalRecipe",
    "CyclicRecipe",
    "FedAvgRecipe",
    "FedProxRecipe",
    "FedStatsRecipe",
    "Recipe",
]
