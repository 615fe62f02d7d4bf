"""Where custom workflows imported the workflow base from before it moved to
``shoal.workflows.base``: kept so that existing jobs still run. New code imports the new path."""

from shoal.workflows.base import BadUpdate, RoundFailed, Workflow, WorkflowContext

__all__ = ["BadUpdate", "RoundFailed", "Workflow", "WorkflowContext"]
