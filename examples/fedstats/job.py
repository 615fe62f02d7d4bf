"""Federated statistics: per-feature count, sum, mean, std, min, max and histogram of every site's data."""

from shoal.recipes import FedStatsRecipe

recipe = FedStatsRecipe(
    name="fedstats", min_clients=2, data="data/{site}.csv", min_count=10, bins=10, custom_files=["data"]
)

if __name__ == "__main__":
    raise SystemExit(recipe.main())
