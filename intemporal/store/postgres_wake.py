"""How a `PostgresStore` hears of work: LISTEN/NOTIFY, the doorbell table, the safety poll.

An engine's watcher calls `wait(cursor, timeout)` (`Store.wait_blocks`): it blocks in
`LISTEN` on the schema's channel and returns the run ids the notifications carry, and the
doorbell rows rung since `cursor` (signals, cancellations, a child's end). A safety poll
finds what nobody rang for: a dead worker's runs as its lease expires, and, once a run
ended here, the runs clients enqueued while every thread was busy.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import StoreUnavailable

RESCAN = 1.0  # most seconds between looks for claimable runs nobody rang for (safety poll)
BACKOFF = 2.0  # most seconds between two tries of a waiting worker to reach the database
UNFINISHED = "status IN ('pending', 'running', 'waiting')"
READY = f"""{UNFINISHED} AND (lease_owner IS NULL OR lease_expires < now())
    AND (status <> 'waiting' OR (coalesce(engine, '') <> '' AND NOT EXISTS (
        SELECT 1 FROM engines e WHERE e.engine_id = runs.engine AND e.expires > now())))"""
PENDING = "status = 'pending' AND lease_owner IS NULL"


class Wakeups:
    """`_changes` and `wait` of `PostgresStore` (which provides the connections)."""

    _channel: str
    _held: dict[int, str]
    _listener: Any
    _heard: list[str]
    _rescan_at: float
    _freed: bool
    _created: dict[str, None]
    _backoff: float
    _generation: int
    _listen_lock: Any
    _pool_lock: Any

    def _execute(
        self, query: str, params: Any, doing: str, run_id: str | None = None, durable: bool = True
    ) -> Any: ...

    def _connect(self, durable: bool = True) -> Any: ...

    def _changes(self, cursor: int | None = None) -> tuple[list[str] | None, int]:
        if cursor is None:
            now = self._execute("SELECT coalesce(max(id), 0) FROM doorbell", (), "read doorbell")
            return [], int(now.rows[0][0])
        rows = self._execute(
            "SELECT id, run_id FROM doorbell WHERE id > %s ORDER BY id", (cursor,), "read doorbell"
        ).rows
        heard, self._heard = self._heard, []
        ids = [r[1] for r in rows] + heard
        if time.monotonic() >= self._rescan_at:
            ids += self._safety_poll()
        elif self._freed:
            ids += self._pending()
        return list(dict.fromkeys(ids)), (rows[-1][0] if rows else cursor)

    def _pending(self) -> list[str]:
        """The runs clients enqueued while every thread was busy (after a run ended here)."""
        self._freed = False
        query = f"SELECT run_id FROM runs WHERE {PENDING} ORDER BY created_at LIMIT 100"
        rows = self._execute(query, (), "look for pending runs").rows
        return [r[0] for r in rows if r[0] not in self._created]

    def _safety_poll(self) -> list[str]:
        """The safety poll: runs nobody rang for (a dead worker's, once its lease expired).

        The next one is due when the first lease held elsewhere expires (so a dead worker's
        run is taken over as its lease ends), RESCAN seconds at most. (A run that ends here
        makes `_changes` look for pending runs at once: a thread is free for one.)"""
        query = f"""SELECT run_id, NULL FROM (SELECT run_id FROM runs WHERE {READY}
                ORDER BY created_at LIMIT 100) ready
            UNION ALL SELECT NULL, extract(epoch FROM min(lease_expires) - now()) FROM runs
                WHERE {UNFINISHED} AND lease_expires > now() AND lease_epoch <> ALL(%s)"""
        self._rescan_at = time.monotonic() + RESCAN
        rows = self._execute(query, (list(self._held),), "look for ready runs").rows
        expires = rows[-1][1] if rows and rows[-1][0] is None else None
        if expires is not None:  # a little after it: `now()` of the claim must be past it
            self._rescan_at = min(self._rescan_at, time.monotonic() + float(expires) + 0.01)
        return [r[0] for r in rows if r[0] is not None and r[0] not in self._created]

    def wait(self, cursor: Any, timeout: float) -> tuple[list[str] | None, Any]:
        """As `Store.wait`, blocking on LISTEN: it returns as soon as a NOTIFY comes, and
        queries the doorbell only then (or when the safety poll is due). While the database
        cannot be reached it raises `StoreUnavailable` after a pause that doubles each time
        (0.1 s to BACKOFF), so waiting workers do not hammer a server that restarts. A wait in
        progress when the store is closed ends with nothing (what it heard: for the next)."""
        try:
            found = self._wait(cursor, timeout)
        except StoreUnavailable:
            time.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, BACKOFF)
            raise
        self._backoff = 0.1
        return found

    def _wait(self, cursor: Any, timeout: float) -> tuple[list[str] | None, Any]:
        if cursor is None or timeout <= 0:
            return self._changes(cursor)
        deadline, generation = time.monotonic() + timeout, self._generation
        while True:
            heard = self._listen(min(deadline, self._rescan_at) - time.monotonic())
            if generation != self._generation:
                return [], cursor  # `close` ends the waits in progress
            if heard or time.monotonic() >= self._rescan_at:
                ids, cursor = self._changes(cursor)
                if ids:
                    return ids, cursor
            elif self._freed and (ids := self._pending()):
                return ids, cursor
            if time.monotonic() >= deadline:
                return [], cursor

    def _listen(self, timeout: float) -> bool:
        """Block until a NOTIFY on this schema's channel, or `timeout` seconds; True if one
        came, or if the doorbell must be read anyway (the listener is new, or broke).

        The listener is used under `_listen_lock`; a `close` meanwhile leaves it to this
        thread to close as it ends (the store's generation changed)."""
        with self._listen_lock:
            generation = self._generation
            try:
                return self._listen_once(timeout)
            finally:
                with self._pool_lock:
                    closed, listener = generation != self._generation, self._listener
                    if closed:
                        self._listener = None
                if closed and listener is not None:
                    listener.close()

    def _listen_once(self, timeout: float) -> bool:
        import psycopg  # imported already by the store: no cost
        from psycopg import sql

        try:
            if self._listener is None:
                self._listener = self._connect()
                self._listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                return True  # rings before it listened are in the doorbell only
            notes = list(self._listener.notifies(timeout=max(timeout, 0.0), stop_after=1))
            self._heard += [note.payload for note in notes]  # run ids (`create` and `ring`)
            return bool(notes)
        except psycopg.Error:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            time.sleep(min(max(timeout, 0.0), 0.5))  # `_changes` reports the database down
            return True
