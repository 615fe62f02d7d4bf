"""FedAvg of hello-numpy's linear regression, as a recipe: export it, submit it, or simulate it."""

from pathlib import Path

from shoal.recipes import FedAvgRecipe

recipe = FedAvgRecipe(
    name="recipe-fedavg",
    min_clients=2,
    num_rounds=5,
    train_script="client.py",
    train_args="--lr 0.05 --epochs 10",
    custom_files=["linreg.py"],
    round_timeout=60,
    source_dir=Path(__file__).parents[2] / "hello-numpy" / "app" / "custom",
)

if __name__ == "__main__":
    raise SystemExit(recipe.main())
