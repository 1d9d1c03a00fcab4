"""The PostgreSQL store's tables: numbered migrations and the schema-version table.

`migrate(conn, schema)` brings a schema up to `VERSION` under an advisory lock (two
processes opening a new database at once migrate it once), and refuses a schema newer
than this code knows, naming both versions. A new migration is appended to `MIGRATIONS`;
a released one never changes.

Tables: `runs` (one row per run: the fold of its journal, kept in the transaction of each
append, and its lease: owner, epoch, expiry), `events` (the journal, one row per event),
`inbox` (signals and cancellations), `doorbell` (which runs got news; a trigger NOTIFYs
the schema's channel) and `engines` (engines alive, by heartbeat).
"""

from __future__ import annotations

import hashlib

from psycopg import Connection, sql

from ..errors import StoreUnavailable

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE SEQUENCE lease_epochs;
    CREATE TABLE runs (
        run_id        text PRIMARY KEY,
        workflow      text NOT NULL DEFAULT '?',
        status        text NOT NULL DEFAULT 'pending',
        queue         text,
        parent        text,
        wake_at       double precision,
        steps         integer NOT NULL DEFAULT 0,
        created_at    double precision NOT NULL DEFAULT 0,
        updated_at    double precision NOT NULL DEFAULT 0,
        engine        text,
        last          text NOT NULL DEFAULT '',
        outcome       text NOT NULL DEFAULT '{}',
        events        integer NOT NULL DEFAULT 0,
        lease_owner   text,
        lease_epoch   bigint NOT NULL DEFAULT 0,
        lease_expires timestamptz
    );
    CREATE INDEX runs_unfinished ON runs (created_at)
        WHERE status IN ('pending', 'running', 'waiting');
    CREATE TABLE events (
        run_id text NOT NULL REFERENCES runs ON DELETE CASCADE,
        seq    integer NOT NULL,
        body   text NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE inbox (
        id     bigserial PRIMARY KEY,
        run_id text NOT NULL REFERENCES runs ON DELETE CASCADE,
        body   text NOT NULL
    );
    CREATE INDEX inbox_run ON inbox (run_id, id);
    CREATE TABLE doorbell (
        id     bigserial PRIMARY KEY,
        run_id text NOT NULL,
        at     timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE engines (
        engine_id text PRIMARY KEY,
        expires   timestamptz NOT NULL
    );
    CREATE FUNCTION ring() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify(TG_ARGV[0], NEW.run_id);
        RETURN NULL;
    END $$;
    """,
    # 2: the code version that started each run (`Engine(version=...)`)
    "ALTER TABLE runs ADD COLUMN code_version text;",
    # 3: queues (issue 16): a run's priority and delayed start from its `run_started`, and
    # when its queue's limits admitted it (counted for concurrency and rate, kept after
    # it finishes for the rate window)
    """
    ALTER TABLE runs ADD COLUMN priority integer NOT NULL DEFAULT 0,
        ADD COLUMN start_at double precision,
        ADD COLUMN started_at double precision;
    CREATE INDEX runs_queue_started ON runs (queue, started_at) WHERE parent IS NULL;
    """,
]
VERSION = len(MIGRATIONS)


def channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel of a schema: a short identifier-safe name."""
    return "intemporal_" + hashlib.sha1(schema.encode()).hexdigest()[:16]


def migrate(conn: Connection, schema: str) -> None:
    """Create or upgrade `schema` to `VERSION`; `StoreUnavailable` if it is newer than that."""
    ident = sql.Identifier(schema)
    with conn.transaction():
        lock = int(hashlib.sha1(schema.encode()).hexdigest()[:15], 16)
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        have = row[0] if row and row[0] is not None else 0
        if have > VERSION:
            raise StoreUnavailable(
                f"the PostgreSQL schema {schema!r} is at version {have}, newer than this "
                f"intemporal knows (version {VERSION}): upgrade intemporal to use it"
            )
        for number in range(have + 1, VERSION + 1):
            conn.execute(MIGRATIONS[number - 1])
            if number == 1:
                conn.execute(
                    sql.SQL(
                        "CREATE TRIGGER ring AFTER INSERT ON doorbell FOR EACH ROW "
                        "EXECUTE FUNCTION ring({})"
                    ).format(sql.Literal(channel(schema)))
                )
            conn.execute("INSERT INTO schema_version VALUES (%s)", (number,))
