"""What user code imports: the client API for training scripts, FLModel, and workflows."""

from shoal.fl.model import FLModel

__all__ = ["FLModel"]
