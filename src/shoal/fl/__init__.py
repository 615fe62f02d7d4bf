"""What a training script imports: the client API (``shoal.fl.client``), FLModel, and helpers
for PyTorch and FedProx. Workflows live in ``shoal.workflows``."""

from shoal.fl.model import FLModel

__all__ = ["FLModel"]
