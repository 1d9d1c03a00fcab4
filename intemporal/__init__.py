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

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType

TYPE_CHECKING = False  # typing's own constant costs `import typing`: ~5 ms

if TYPE_CHECKING:  # what type checkers see; at run time each name loads on first use
    from typing import Any

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
    from .store import FileStore, MemoryStore, RunInfo, RunStatus, Store
    from .store.postgres import PostgresStore
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


# Public name -> the module that defines it. `import intemporal` loads none of them (nor
# filelock, nor the PostgreSQL driver): each loads with its first use, `intemporal.workflow`
# loading what a workflow needs, `intemporal.Engine` the engine.
def _words(text: str) -> list[str]:
    return text.split()


_LAZY = {
    **dict.fromkeys(
        _words("Activity RetryPolicy Workflow activity stub stub_protocol workflow"), "api"
    ),
    "sleep_async": "async_api",
    "wait_for_signal_async": "async_api",
    "AsyncEngine": "async_engine",
    "heartbeat": "attempts",
    "Secret": "codec",
    "Engine": "engine",
    **dict.fromkeys(
        _words(
            "ActivityTimeout Cancelled CompensationError DillRefused IntemporalError "
            "JournalCorrupted LeaseLost NonDeterminismError RemoteError RunConflict "
            "RunNotFound RunStuck SerializationError SignalTimeout StoreError StoreUnavailable "
            "UnsafeStore WorkflowNotFound is_suspension"
        ),
        "errors",
    ),
    "RunHandle": "handle",
    "continue_as_new": "lineage",
    "deprecate_patch": "patching",
    "patched": "patching",
    "Queue": "queues",
    "scheduled": "schedules",
    "LoggingObserver": "observe",
    "Observer": "observe",
    "Saga": "saga",
    "saga": "saga",
    **dict.fromkeys(_words("FileStore MemoryStore RunInfo RunStatus Store"), "store"),
    "PostgresStore": "store.postgres",
    **dict.fromkeys(
        _words(
            "DurableFuture info join_all join_any now run_id set_event side_effect sleep "
            "submit uuid4 wait_for_signal"
        ),
        "workflow_api",
    ),
}


class _Package(ModuleType):
    """This package: importing the submodule `intemporal.saga` (`from intemporal.saga import
    Saga`) must not rebind the public function `intemporal.saga` to that module."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "saga" and isinstance(value, ModuleType):  # the import system binding it
            value = value.saga
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    """Load a public name on first use (PEP 562); later uses find it in the module."""
    value: Any
    if name == "testing":
        value = import_module(".testing", __name__)
    else:
        where = _LAZY.get(name)
        if where is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(import_module("." + where, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
