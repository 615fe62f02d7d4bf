"""FedProx: FedAvg plus a proximal term (mu) in each site's training, which damps client drift."""

from pathlib import Path

from shoal.recipes import FedProxRecipe

recipe = FedProxRecipe(
    name="recipe-fedprox",
    min_clients=2,
    num_rounds=5,
    mu=0.5,
    train_script="client.py",
    train_args="--lr 0.05 --epochs 10",
    custom_files=["linreg.py"],
    round_timeout=60,
    source_dir=Path(__file__).parents[2] / "hello-numpy" / "app" / "custom",
)

if __name__ == "__main__":
    raise SystemExit(recipe.main())
