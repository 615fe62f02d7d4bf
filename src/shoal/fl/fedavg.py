"""Where jobs named FedAvg's class before it moved to ``shoal.workflows.fedavg``: kept so that
existing jobs (a ``class`` of ``shoal.fl.fedavg.FedAvg``, or a subclass) still run."""

from shoal.workflows.fedavg import FedAvg

__all__ = ["FedAvg"]
