"""hello-pt: FedAvg of a small PyTorch network on scikit-learn's digits, split non-identically."""

from shoal.recipes import FedAvgRecipe

recipe = FedAvgRecipe(
    name="hello-pt",
    min_clients=2,
    num_rounds=5,
    train_script="client.py",
    train_args="--epochs 2",
    custom_files=["net.py"],
    round_timeout=300,
)

if __name__ == "__main__":
    raise SystemExit(recipe.main())
