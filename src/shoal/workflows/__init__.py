"""Workflows: the server-side controllers of a job (FedAvg, cyclic, cross-site evaluation,
federated statistics), the aggregation arithmetic they share, and the checks every update
passes. Custom workflows subclass ``shoal.workflows.base.Workflow``."""
