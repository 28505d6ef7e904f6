"""The engine's async shell: the only part of `plum.engine` that awaits.

`TaskEngine` runs task lifecycles; `WorkflowEngine` runs workflow state machines on top of
it. Both take events, apply the pure transition, store it, publish it, then act.
"""

from plum.engine.orchestrator.runs import WorkflowEngine
from plum.engine.orchestrator.tasks import TaskEngine

__all__ = ["TaskEngine", "WorkflowEngine"]
