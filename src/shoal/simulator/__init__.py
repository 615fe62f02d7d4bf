"""The simulator: a whole federation in one command, virtual sites in a pool of worker
processes speaking JSON to the workflow (``engine`` runs it; ``pool``, ``transport`` and
``worker`` are its parts)."""
