"""intemporal: durable workflows for Python, without a server.

import intemporal

@intemporal.activity
def charge(order_id: str) -> str: ...

@intemporal.workflow
def checkout(order_id: str) -> str:
    return charge(order_id)

with intemporal.Engine(store=".intemporal") as engine:
    print(engine.run(checkout, "order-42"))
"""

from .api import Activity, RetryPolicy, Workflow, activity, stub, stub_protocol, workflow
from .engine import Engine, RunHandle
from .errors import (
    ActivityTimeout,
    Cancelled,
    IntemporalError,
    JournalCorrupted,
    NonDeterminismError,
    RemoteError,
    RunConflict,
    RunNotFound,
    SerializationError,
    SignalTimeout,
    WorkflowNotFound,
    is_suspension,
)
from .replay import heartbeat
from .store import FileStore, MemoryStore, RunInfo, RunStatus, Store
from .workflow_api import info, run_id

__all__ = [
    "Activity",
    "ActivityTimeout",
    "Cancelled",
    "Engine",
    "FileStore",
    "IntemporalError",
    "JournalCorrupted",
    "MemoryStore",
    "NonDeterminismError",
    "RemoteError",
    "RetryPolicy",
    "RunConflict",
    "RunHandle",
    "RunInfo",
    "RunNotFound",
    "RunStatus",
    "SerializationError",
    "SignalTimeout",
    "Store",
    "Workflow",
    "WorkflowNotFound",
    "activity",
    "heartbeat",
    "info",
    "is_suspension",
    "run_id",
    "stub",
    "stub_protocol",
    "workflow",
]
