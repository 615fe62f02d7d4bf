"""shoal: federated learning jobs. This module holds the version only, to keep CLI start-up fast."""

__version__ = "0.1.0"
