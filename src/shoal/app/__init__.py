"""App projects (a pyproject.toml with [tool.shoal.app]), their bundles, and their jobs."""
