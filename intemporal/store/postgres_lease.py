"""A claim on one run of a `PostgresStore`: its appends, fenced by the lease's epoch.

Each append is one statement: the run's row updated (its folded state, the lease renewed,
or released by the event that ends an execution) and the event inserted, only while the
lease's `token` is still the row's `lease_epoch`; else `LeaseLost`.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import LeaseLost, StoreUnavailable
from ..events import TERMINAL_EVENTS, RunState, fold
from .base import Event, Lease


def columns(s: RunState) -> dict[str, Any]:
    return {
        "workflow": s.workflow,
        "status": s.status.value,
        "queue": s.queue,
        "parent": s.parent,
        "wake_at": s.wake_at,
        "steps": s.steps,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "engine": s.owner,
        "last": s.last,
        "outcome": json.dumps(s.outcome),
        "code_version": s.code_version,
        "priority": s.priority,
        "start_at": s.start_at,
    }


SET_STATE = ", ".join(f"{c} = %({c})s" for c in columns(RunState()))
_APPEND = """WITH r AS (UPDATE runs SET {state}, events = events + 1, {lease}
        WHERE run_id = %(id)s AND lease_epoch = %(token)s AND lease_owner IS NOT NULL
        RETURNING events)
    INSERT INTO events (run_id, seq, body) SELECT %(id)s, events, %(body)s FROM r"""
#: one event, fenced by the lease's epoch, renewing the lease: one statement, one round trip
APPEND = _APPEND.format(
    state=SET_STATE, lease="lease_expires = now() + %(lease)s * interval '1 second'"
)
#: the event that ends an execution (`TERMINAL_EVENTS`), releasing the run in the same statement
APPEND_AND_RELEASE = _APPEND.format(
    state=SET_STATE, lease="lease_owner = NULL, lease_expires = NULL"
)


class PostgresLease(Lease):
    """A claim on one run of a `PostgresStore`, fenced by its epoch (`token`)."""

    defer_sync = False  # a `sync()` is a statement of its own: results are appended synced

    def __init__(self, store: Any, state: RunState, token: int) -> None:  # a PostgresStore
        self._store, self._state, self.token = store, state, token
        self.run_id = state.run_id or ""
        self._ended = False  # a terminal event released the run in its own statement

    def append(self, event: Event, sync: bool) -> None:
        body = json.dumps(event)
        state = fold([json.loads(body)], self._state)
        params = {
            **columns(state),
            "id": self.run_id,
            "token": self.token,
            "lease": self._store.lease,
            "body": body,
        }
        ends = event.get("type") in TERMINAL_EVENTS  # nothing follows: release it here
        query = APPEND_AND_RELEASE if ends else APPEND
        done = self._store._execute(query, params, "append to run", self.run_id, durable=sync)
        if done.rowcount != 1:
            self._store._held.pop(self.token, None)
            raise LeaseLost(f"run {self.run_id!r} is no longer owned by this lease")
        self._state, self._ended = state, ends

    def sync(self) -> None:
        """Make the appends made with `sync=False` durable (`join_all`): a synchronous commit
        waits for the server's log up to itself, which holds every commit made before it."""
        self.renew(durable=True)

    def renew(self, durable: bool = False) -> None:
        query = """UPDATE runs SET lease_expires = now() + %s * interval '1 second'
            WHERE run_id = %s AND lease_epoch = %s AND lease_owner IS NOT NULL"""
        params = (self._store.lease, self.run_id, self.token)
        done = self._store._execute(query, params, "renew the lease of", self.run_id, durable)
        if done.rowcount != 1:
            raise LeaseLost(f"run {self.run_id!r} is no longer owned by this lease")

    def release(self) -> None:
        self._store._held.pop(self.token, None)
        if self._ended:  # released by the statement that ended the run
            self._store._freed = True  # its thread is free: look for pending runs at once
            return
        try:
            self._store._release([self.token])
        except StoreUnavailable:  # the database is away: released by the heartbeat later
            self._store._unreleased.add(self.token)
            raise
