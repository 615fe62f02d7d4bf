"""FLModel, where training scripts have imported it from (``shoal.fl.model``; also
``shoal.fl.FLModel``). It is defined in ``shoal.wire.flmodel``: workflows exchange it too, and
they must not depend on the client API's package."""

from shoal.wire.flmodel import FLModel

__all__ = ["FLModel"]
