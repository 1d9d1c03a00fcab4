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

from . import testing
from .api import Activity, RetryPolicy, Workflow, activity, stub, stub_protocol, workflow
from .async_api import sleep_async, wait_for_signal_async
from .async_engine import AsyncEngine
from .attempts import heartbeat
from .codec import Secret
from .engine import Engine
from .errors import (
    ActivityTimeout,
    Cancelled,
    CompensationError,
    DillRefused,
    IntemporalError,
    JournalCorrupted,
    LeaseLost,
    NonDeterminismError,
    RemoteError,
    RunConflict,
    RunNotFound,
    RunStuck,
    SerializationError,
    SignalTimeout,
    StoreError,
    StoreUnavailable,
    UnsafeStore,
    WorkflowNotFound,
    is_suspension,
)
from .handle import RunHandle
from .lineage import continue_as_new
from .observe import LoggingObserver, Observer
from .patching import deprecate_patch, patched
from .queues import Queue
from .saga import Saga, saga
from .schedules import scheduled
from .store import FileStore, MemoryStore, PostgresStore, RunInfo, RunStatus, Store
from .workflow_api import (
    DurableFuture,
    info,
    join_all,
    join_any,
    now,
    run_id,
    set_event,
    side_effect,
    sleep,
    submit,
    uuid4,
    wait_for_signal,
)

__all__ = [
    "Activity",
    "ActivityTimeout",
    "AsyncEngine",
    "Cancelled",
    "CompensationError",
    "DillRefused",
    "DurableFuture",
    "Engine",
    "FileStore",
    "IntemporalError",
    "JournalCorrupted",
    "LeaseLost",
    "LoggingObserver",
    "MemoryStore",
    "NonDeterminismError",
    "Observer",
    "PostgresStore",
    "Queue",
    "RemoteError",
    "RetryPolicy",
    "RunConflict",
    "RunHandle",
    "RunInfo",
    "RunNotFound",
    "RunStatus",
    "RunStuck",
    "Saga",
    "Secret",
    "SerializationError",
    "SignalTimeout",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "UnsafeStore",
    "Workflow",
    "WorkflowNotFound",
    "activity",
    "continue_as_new",
    "deprecate_patch",
    "heartbeat",
    "info",
    "is_suspension",
    "join_all",
    "join_any",
    "now",
    "patched",
    "run_id",
    "saga",
    "scheduled",
    "set_event",
    "side_effect",
    "sleep",
    "sleep_async",
    "stub",
    "stub_protocol",
    "submit",
    "testing",
    "uuid4",
    "wait_for_signal",
    "wait_for_signal_async",
    "workflow",
]
