"""Cyclic weight transfer: the model goes site-1 -> site-2 -> ... each round; no averaging."""

from pathlib import Path

from shoal.recipes import CyclicRecipe

recipe = CyclicRecipe(
    name="recipe-cyclic",
    min_clients=2,
    num_rounds=3,
    train_script="client.py",
    train_args="--lr 0.05 --epochs 10",
    custom_files=["linreg.py"],
    round_timeout=60,
    source_dir=Path(__file__).parents[2] / "hello-numpy" / "app" / "custom",
)

if __name__ == "__main__":
    raise SystemExit(recipe.main())
