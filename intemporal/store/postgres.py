"""A `Store` in PostgreSQL: the same workflows run by workers on many hosts.

    engine = Engine(store="postgresql://app@db:5432/flows")
    store = PostgresStore("postgresql://app@db/flows", lease=15.0, schema="intemporal")

One row per run in `runs` holds the fold of its journal (status, queue, parent, wake-up
time, the engine that parked it) and its lease (owner, epoch, expiry), updated in the
statement of each append. A lease is a claim that expires unless renewed: this store's
heartbeat renews every lease it holds each third of `lease` seconds, so a worker that dies
(or is cut off) loses its runs once `lease` passes, and any live worker claims them
(`FOR UPDATE SKIP LOCKED`). Every append is fenced by the run's lease epoch in the same
statement: a stale owner's append writes nothing and raises `LeaseLost`. New messages ring
a doorbell table whose trigger NOTIFYs the schema's channel (`wait` LISTENs); a run created
for any worker NOTIFYs in the statement that inserts it. An engine's own lease
(`lease_owner`) is a row of `engines` with an expiry, renewed by the same heartbeat: a
waiting run whose owner's row expired was left by a dead owner. A database that cannot be
reached raises `StoreUnavailable` (connections time out, never hang).
Needs psycopg 3: `pip install 'intemporal[postgres]'`.
"""

from __future__ import annotations

import contextlib
import json
import select
import threading
import time
from collections.abc import Collection, Container, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, NamedTuple

from ..errors import RunNotFound, StoreUnavailable
from ..events import RunState, RunStatus, fold, with_signal_id
from . import queueing
from .base import Event, Lease, OwnerLease, Store
from .postgres_lease import PostgresLease, columns
from .postgres_wake import READY, RESCAN, UNFINISHED, Wakeups
from .queueing import QueueSpec
from .runinfo import RunInfo, check_run_id, redact, summarize_state

psycopg: Any = None  # imported by the first PostgresStore: `import intemporal` stays fast
sql: Any = None

CONNECT = {  # a database that goes away raises within seconds instead of hanging
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10000,
}
IDLE = 32  # connections kept open for reuse (an engine of 32 threads reconnects none)
CREATED = 10_000  # most run ids remembered as created here and not yet claimed
STATE = (
    "run_id, workflow, status, queue, parent, wake_at, steps, created_at, updated_at,"
    " engine, last, outcome, code_version, priority, start_at"
)
TAKE = """lease_owner = %(owner)s, lease_epoch = nextval('lease_epochs'),
    lease_expires = now() + %(lease)s * interval '1 second'"""


class Result(NamedTuple):
    """What one statement did: rows it touched, rows it returned."""

    rowcount: int
    rows: list[tuple[Any, ...]]


def _state(row: tuple[Any, ...]) -> RunState:
    return RunState(
        run_id=row[0],
        workflow=row[1],
        status=RunStatus(row[2]),
        queue=row[3],
        parent=row[4],
        wake_at=row[5],
        steps=row[6],
        created_at=row[7],
        updated_at=row[8],
        owner=row[9],
        last=row[10],
        outcome=json.loads(row[11]),
        code_version=row[12],
        priority=row[13],
        start_at=row[14],
    )


class PostgresStore(Wakeups, Store):
    """Runs, journals and inboxes in a PostgreSQL schema, shared by workers on many hosts.

    `dsn`: a libpq URL or key=value string (`postgresql://user:pw@host:5432/db`); `lease`:
    seconds a worker owns a run without renewing (renewed each third of it); `schema`: the
    schema holding the tables, created and migrated on first use. Raises `StoreUnavailable`
    when the database cannot be reached or its schema is newer than this code knows.
    """

    shared_by_hosts = True
    wait_blocks = True

    def __init__(self, dsn: str, *, lease: float = 15.0, schema: str = "intemporal") -> None:
        global psycopg, sql
        try:
            import psycopg
            from psycopg import sql
        except ImportError:  # the extra is not installed
            raise StoreUnavailable(
                "the PostgreSQL store needs psycopg 3: pip install 'intemporal[postgres]'"
            ) from None
        if lease <= 0:
            raise ValueError(f"lease must be a positive number of seconds, not {lease!r}")
        self.dsn, self.lease, self.schema = dsn, float(lease), schema
        self.location = dsn
        self._idle: dict[bool, list[Any]] = {True: [], False: []}  # durable commits or not
        self._pool_lock = threading.Lock()
        self._generation = 0  # `close` counts: a connection taken before one is not kept
        self._listen_lock = threading.Lock()  # held by the thread using `_listener`
        self._held: dict[int, str] = {}  # token -> run id of the leases to renew
        self._unreleased: set[int] = set()  # tokens whose release the database missed
        self._engines: set[str] = set()
        self._stop = threading.Event()
        self._heart: threading.Thread | None = None
        self._listener: Any = None
        self._rescan_at = time.monotonic() + RESCAN  # when the next safety poll is due
        self._heard: list[str] = []  # run ids heard by LISTEN, for the next `_changes`
        self._freed = False  # a run ended here since the last look for pending runs
        # Runs created here and not claimed yet: queued for this process's own engine, so
        # the looks for ready runs leave them out (a poke would make it execute one twice).
        self._created: dict[str, None] = {}
        self._backoff = 0.1  # seconds `wait` pauses after failing to reach the database
        from .postgres_schema import channel, migrate

        self._channel = channel(schema)
        with self._connection("open the store") as conn:
            migrate(conn, schema)

    def __repr__(self) -> str:
        return f"PostgresStore({redact(self.dsn)!r}, schema={self.schema!r})"

    # -- connections -------------------------------------------------------------------------
    def _connect(self, durable: bool = True) -> Any:
        conn = psycopg.connect(self.dsn, autocommit=True, **CONNECT)
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        if not durable:
            conn.execute("SET synchronous_commit TO off")
        return conn

    @contextlib.contextmanager
    def _connection(
        self, doing: str, run_id: str | None = None, durable: bool = True
    ) -> Iterator[Any]:
        """A pooled connection; a driver error becomes `StoreUnavailable` (password masked).

        `durable=False`: one whose commits do not wait for the server's disk (a killed
        client loses nothing, a crash of the server may lose the last ones): for what is
        safe to lose (a release, a renewal) or asked for (an append with `sync=False`).
        """
        idle = self._idle[durable]
        generation = self._generation
        conn = self._reuse(idle)
        try:
            if conn is None:
                conn = self._connect(durable)
            yield conn
        except psycopg.Error as exc:
            if conn is not None:
                conn.close()
                conn = None
            text = str(exc).replace(self.dsn, redact(self.dsn)).strip()
            raise StoreUnavailable(
                f"store unavailable: cannot {doing} on {redact(self.dsn)}: "
                f"{type(exc).__name__}: {text}",
                run_id,
            ) from None
        finally:
            if conn is not None:
                with self._pool_lock:  # kept unless the store was closed since it was taken
                    if len(idle) < IDLE and not conn.closed and generation == self._generation:
                        self._idle[durable].append(conn)
                        conn = None
                if conn is not None:
                    conn.close()

    def _reuse(self, idle: list[Any]) -> Any:
        """An idle pooled connection still open, or None. One the server closed while it
        was idle (a restart) has something to read, a notice of its end: closed, not used."""
        while True:
            with self._pool_lock:
                conn = idle.pop() if idle else None
            if conn is None or not select.select([conn.fileno()], [], [], 0)[0]:
                return conn
            conn.close()

    def _execute(
        self, query: str, params: Any, doing: str, run_id: str | None = None, durable: bool = True
    ) -> Result:
        """Run one statement (its own transaction); return the cursor, rows fetched."""
        what = f"{doing} {run_id!r}" if run_id else doing
        with self._connection(what, run_id, durable) as conn:
            cur = conn.execute(query, params)
            return Result(cur.rowcount, cur.fetchall() if cur.description else [])

    def close(self) -> None:
        """Close the pooled connections and the listener, stop the heartbeat; a store used
        again connects again. A connection a thread is using now is closed by that thread
        when its call ends (one closed under a thread using it is freed memory in libpq)."""
        self._stop.set()
        if self._heart is not None and self._heart is not threading.current_thread():
            self._heart.join(timeout=5)
        with self._pool_lock:
            self._generation += 1
            idle = [*self._idle[True], *self._idle[False]]
            self._idle = {True: [], False: []}
        if self._listen_lock.acquire(blocking=False):  # else `_listen` closes it as it ends
            try:
                idle.append(self._listener)
                self._listener = None
            finally:
                self._listen_lock.release()
        for conn in idle:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    # -- the heartbeat: leases and engines stay alive while this process does ----------------
    def _beat_soon(self) -> None:
        with self._pool_lock:
            if self._heart is None or not self._heart.is_alive():
                self._stop.clear()
                self._heart = threading.Thread(
                    target=self._beat, name="intemporal-pg-heartbeat", daemon=True
                )
                self._heart.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.lease / 3):
            with contextlib.suppress(StoreUnavailable):  # the next beat tries again
                self._renew_all()

    def _release(self, tokens: list[int]) -> None:
        query = """UPDATE runs SET lease_owner = NULL, lease_expires = NULL
            WHERE lease_epoch = ANY(%s)"""
        self._execute(query, (tokens,), "release runs", durable=False)  # lost: it expires

    def _renew_all(self) -> None:
        """Renew every lease and engine mark this store holds, and release the leases given
        up while the database was away (so this worker or another takes them at once)."""
        if self._unreleased:
            given_up = list(self._unreleased)
            self._release(given_up)
            self._unreleased.difference_update(given_up)
        tokens = list(self._held)
        if tokens:
            self._execute(
                """UPDATE runs SET lease_expires = now() + %s * interval '1 second'
                WHERE lease_epoch = ANY(%s) AND lease_owner IS NOT NULL""",
                (self.lease, tokens),
                "renew leases",
                durable=False,  # lost in a crash of the server: they expire, others take over
            )
        engines = list(self._engines)
        if engines:
            self._execute(
                """UPDATE engines SET expires = now() + %s * interval '1 second'
                WHERE engine_id = ANY(%s)""",
                (self.lease, engines),
                "renew engines",
                durable=False,
            )

    def _lease(self, row: tuple[Any, ...], token: int) -> PostgresLease:
        lease = PostgresLease(self, _state(row), token)
        self._created.pop(lease.run_id, None)
        self._held[token] = lease.run_id
        self._beat_soon()
        return lease

    # -- runs ------------------------------------------------------------------------------
    def _insert(self, run_id: str, first: Event, owner: str | None, ring: bool = False) -> Any:
        """Insert a run (claimed by `owner` if not None); its row, none if it exists. `ring`:
        NOTIFY its id in the same statement (delivered once it commits)."""
        check_run_id(run_id)
        body = json.dumps(first)
        state = fold([json.loads(body)])
        state.run_id = run_id
        take = "%(owner)s, nextval('lease_epochs'), now() + %(lease)s * interval '1 second'"
        lease = take if owner is not None else "NULL, 0, NULL"
        cols = columns(state)
        query = f"""WITH r AS (
                INSERT INTO runs (run_id, {", ".join(cols)}, events, lease_owner, lease_epoch,
                    lease_expires)
                VALUES (%(id)s, {", ".join(f"%({c})s" for c in cols)}, 1, {lease})
                ON CONFLICT DO NOTHING RETURNING {STATE}, lease_epoch),
            e AS (INSERT INTO events (run_id, seq, body) SELECT run_id, 1, %(body)s FROM r)
            SELECT {"pg_notify(%(channel)s, run_id), " if ring else ""}r.* FROM r"""
        params = {**cols, "id": run_id, "body": body, "owner": owner, "lease": self.lease}
        params["channel"] = self._channel
        rows = self._execute(query, params, "create run", run_id).rows
        return [row[1:] for row in rows] if ring else rows

    def create(
        self, run_id: str, first: Event, sync: bool = True, owner: str | None = None
    ) -> bool:
        if owner is None:
            return bool(self._insert(run_id, first, None, ring=True))
        # Its engine here executes it next: no news for this process's watcher (the looks
        # for ready runs leave it out). Marked before the insert commits: a look made in
        # between would hand it to the watcher, whose claim could fail the execution
        # queued here and then be given up as "executing here" (the run pending for good).
        with self._pool_lock:
            fresh = run_id not in self._created
            self._created[run_id] = None
        made = False
        try:
            made = bool(self._insert(run_id, first, None))
        finally:
            with self._pool_lock:
                if not made and fresh:  # an id that exists: not ours to unmark
                    self._created.pop(run_id, None)
                elif len(self._created) > CREATED:
                    del self._created[next(iter(self._created))]
        return made

    def create_claimed(
        self, run_id: str, first: Event, sync: bool = True, owner: str = ""
    ) -> Lease | None:
        rows = self._insert(run_id, first, owner)
        return self._lease(rows[0][:-1], rows[0][-1]) if rows else None

    def read(self, run_id: str) -> list[Event]:
        rows = self._execute(
            "SELECT body FROM events WHERE run_id = %s ORDER BY seq", (run_id,), "read run", run_id
        ).rows
        if not rows:
            raise RunNotFound(run_id)
        return [json.loads(r[0]) for r in rows]

    def exists(self, run_id: str) -> bool:
        query = "SELECT 1 FROM runs WHERE run_id = %s"
        return bool(self._execute(query, (run_id,), "look up run", run_id).rows)

    def claim(self, run_id: str, owner: str = "") -> Lease | None:
        query = f"""UPDATE runs SET {TAKE} WHERE run_id = %(id)s
            AND (lease_owner IS NULL OR lease_expires < now()) RETURNING {STATE}, lease_epoch"""
        params = {"id": run_id, "owner": owner, "lease": self.lease}
        rows = self._execute(query, params, "claim run", run_id).rows
        if rows:
            return self._lease(rows[0][:-1], rows[0][-1])
        if not self.exists(run_id):
            raise RunNotFound(run_id)
        return None

    def claim_next(
        self,
        owner: str,
        queues: Collection[str] | None = None,
        limit: int | None = None,
        *,
        among: Iterable[str] | None = None,
        skip: Container[str] = (),
        specs: Mapping[str, QueueSpec] | None = None,
        now: float | None = None,
    ) -> list[Lease]:
        now = time.time() if now is None else now
        gated = {
            name: spec
            for name, spec in (specs or {}).items()
            if queueing.limited(specs, name) and (queues is None or name in queues)
        }
        where, params = [READY], {"owner": owner, "lease": self.lease, "now": now}
        # Pending top-level runs of a limited queue wait for `_admit`; the ones it admitted
        # already (`started_at`) are taken here again.
        where.append(
            """NOT (status = 'pending' AND parent IS NULL AND started_at IS NULL
            AND coalesce(queue = ANY(%(gated)s), false))"""
        )
        params["gated"] = list(gated)
        if queues is not None:
            named = [q for q in queues if q is not None]
            where.append("(queue = ANY(%(queues)s) OR (queue IS NULL AND %(nulls)s))")
            params.update(queues=named, nulls=len(named) != len(list(queues)))
        if among is not None:
            where.append("run_id = ANY(%(among)s)")
            params["among"] = list(among)
        with self._connection("claim runs") as conn:
            with conn.transaction():
                ids = self._pick(conn, " AND ".join(where), params, skip, limit)
                rows = self._take(conn, ids, params)
            for spec in gated.values():
                left = None if limit is None else limit - len(rows)
                if among is not None or (left is not None and left <= 0):
                    break
                with conn.transaction():
                    rows += self._admit(conn, spec, left, skip, params)
        return [self._lease(r[:-1], r[-1]) for r in rows]

    def _take(self, conn: Any, ids: list[str], params: dict[str, Any], admit: str = "") -> list:
        """Claim the runs `ids` (locked by the caller's transaction), in that order."""
        if not ids:
            return []
        rows = conn.execute(
            f"UPDATE runs SET {TAKE}{admit} WHERE run_id = ANY(%(ids)s) "
            f"RETURNING {STATE}, lease_epoch",
            {**params, "ids": ids},
        ).fetchall()
        order = {run_id: i for i, run_id in enumerate(ids)}
        rows.sort(key=lambda r: order[r[0]])
        return rows

    def _admit(
        self, conn: Any, spec: QueueSpec, left: int | None, skip: Container[str], params: Any
    ) -> list:
        """Admit pending runs of `spec`'s queue as its limits allow, in the caller's
        transaction, under the queue's advisory lock: two workers on any hosts decide one
        after the other, each counting the other's admissions."""
        key = queueing.lock_key(f"{self.schema}\0{spec.name}")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        mine = "queue = %(queue)s AND parent IS NULL AND started_at IS NOT NULL"
        counts = conn.execute(
            f"""SELECT count(*) FILTER (WHERE {UNFINISHED}),
                count(*) FILTER (WHERE started_at > %(since)s) FROM runs WHERE {mine}""",
            {"queue": spec.name, "since": spec.window(params["now"])},
        ).fetchone()
        if left is not None:
            spec = replace(spec, local=min(left, spec.local if spec.local is not None else left))
        room = spec.room(counts[0], counts[1])
        if room <= 0:
            return []
        where = f"""{READY} AND queue = %(queue)s AND parent IS NULL AND status = 'pending'
            AND started_at IS NULL AND (start_at IS NULL OR start_at <= %(now)s)"""
        ids = self._pick(conn, where, {**params, "queue": spec.name}, skip, room)
        return self._take(conn, ids, params, ", started_at = %(now)s")

    def _pick(
        self, conn: Any, where: str, params: Any, skip: Container[str], limit: int | None
    ) -> list[str]:
        """Up to `limit` ids of the runs `where` holds for, not in `skip`, in claiming order,
        locked by the caller's transaction (rows another transaction locks are passed over).

        `skip` is asked before any row is locked: a worker passing over a run (one of another
        code version, say) must not hide it from the worker that would take it."""
        order = "ORDER BY priority, created_at, run_id"
        found = conn.execute(f"SELECT run_id FROM runs WHERE {where} {order}", params)
        ids = [r[0] for r in found.fetchall() if r[0] not in skip]
        if not ids:
            return []
        locked = conn.execute(
            f"""SELECT run_id FROM runs WHERE run_id = ANY(%(ids)s) AND {where} {order}
            LIMIT %(limit)s FOR UPDATE SKIP LOCKED""",
            {**params, "ids": ids, "limit": limit},
        )
        return [r[0] for r in locked.fetchall()]

    def queue_starts(self, name: str, since: float) -> int:
        query = """SELECT count(*) FROM runs WHERE queue = %s AND parent IS NULL
            AND started_at > %s"""
        return int(self._execute(query, (name, since), "count queue starts").rows[0][0])

    def _is_claimed(self, run_id: str) -> bool:
        query = """SELECT 1 FROM runs WHERE run_id = %s AND lease_owner IS NOT NULL
            AND lease_expires > now()"""
        return bool(self._execute(query, (run_id,), "look up run", run_id).rows)

    def summary(self, run_id: str) -> RunInfo:
        query = f"""SELECT {STATE}, lease_owner IS NOT NULL AND lease_expires > now()
            FROM runs WHERE run_id = %s"""
        rows = self._execute(query, (run_id,), "read run", run_id).rows
        if not rows:
            raise RunNotFound(run_id)
        return self._info(rows[0])

    def _info(self, row: tuple[Any, ...]) -> RunInfo:
        return self._adopt(summarize_state(row[0], _state(row[:-1]), row[-1]))

    def list_runs(
        self,
        status: RunStatus | str | None = None,
        workflow: str | None = None,
        limit: int | None = None,
    ) -> list[RunInfo]:
        want = RunStatus(status) if status is not None else None
        where, params = ["true"], {}
        if workflow is not None:
            where.append("workflow = %(workflow)s")
            params["workflow"] = workflow
        if want is not None and want is not RunStatus.RUNNING and want is not RunStatus.PENDING:
            where.append("status = %(status)s")  # pending and running depend on the lease
            params["status"] = want.value
        query = f"""SELECT {STATE}, lease_owner IS NOT NULL AND lease_expires > now()
            FROM runs WHERE {" AND ".join(where)} ORDER BY created_at DESC, run_id DESC"""
        out = []
        for row in self._execute(query, params, "list runs").rows:
            info = self._info(row)
            if want is None or info.status is want:
                out.append(info)
            if limit is not None and len(out) >= limit:
                break
        return out

    def run_ids(self) -> Iterator[str]:
        yield from (r[0] for r in self._execute("SELECT run_id FROM runs", (), "list runs").rows)

    def _unfinished(self) -> Iterator[str]:
        query = f"SELECT run_id FROM runs WHERE {UNFINISHED} ORDER BY created_at"
        yield from (r[0] for r in self._execute(query, (), "list unfinished runs").rows)

    def delete(self, run_id: str) -> None:
        self._held = {t: r for t, r in self._held.items() if r != run_id}
        self._execute("DELETE FROM runs WHERE run_id = %s", (run_id,), "delete run", run_id)

    # -- inbox and doorbell --------------------------------------------------------------------
    def send(self, run_id: str, message: Event) -> None:
        query = """WITH i AS (INSERT INTO inbox (run_id, body)
                SELECT run_id, %s FROM runs WHERE run_id = %s RETURNING run_id)
            INSERT INTO doorbell (run_id) SELECT run_id FROM i"""
        body = json.dumps(with_signal_id(message))
        if self._execute(query, (body, run_id), "send to run", run_id).rowcount != 1:
            raise RunNotFound(run_id)

    def inbox(self, run_id: str, cursor: int = 0) -> tuple[list[Event], int]:
        query = "SELECT id, body FROM inbox WHERE run_id = %s AND id > %s ORDER BY id"
        rows = self._execute(query, (run_id, cursor), "read the inbox of run", run_id).rows
        return [json.loads(r[1]) for r in rows], (rows[-1][0] if rows else cursor)

    # -- owners: an engine's own lease, a row that expires unless the heartbeat renews it ----
    def lease_owner(self, owner: str) -> OwnerLease:
        query = """INSERT INTO engines VALUES (%s, now() + %s * interval '1 second')
            ON CONFLICT (engine_id) DO UPDATE SET expires = EXCLUDED.expires"""
        self._execute(query, (owner, self.lease), f"take the lease of owner {owner!r}")
        self._engines.add(owner)
        self._beat_soon()

        def release() -> None:
            self._engines.discard(owner)
            query = "DELETE FROM engines WHERE engine_id = %s"
            with contextlib.suppress(StoreUnavailable):  # it expires by itself
                self._execute(query, (owner,), f"release the lease of owner {owner!r}")

        def renew() -> None:
            query = (
                "UPDATE engines SET expires = now() + %s * interval '1 second' WHERE engine_id = %s"
            )
            self._execute(
                query, (self.lease, owner), f"renew the lease of owner {owner!r}", None, False
            )

        return OwnerLease(owner, release, renew)

    def _owner_alive(self, owner: str) -> bool:
        query = "SELECT 1 FROM engines WHERE engine_id = %s AND expires > now()"
        return bool(self._execute(query, (owner,), f"look up owner {owner!r}").rows)
