"""Queues with limits (issue 16): concurrency across worker processes, rate, priority, delay,
worker_concurrency, children on a full queue, and what `intemporal queues` shows.

The store-level decisions (two workers never both take the last slot, the rate window,
priority and age) are in tests/test_store_contract.py, over every store.
"""

from __future__ import annotations

import importlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Cli
from test_postgres import _cli_worker

import intemporal
from intemporal import Engine, FileStore, MemoryStore, PostgresStore, Queue, RunStatus, Store
from intemporal import queues as declared_queues
from intemporal.runtime.queues import QUEUE_POLL

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _forget_queues() -> Iterator[None]:
    """Queues a test declares are forgotten after it: later engines do not poll them."""
    before = declared_queues.declared()
    yield
    with declared_queues._lock:
        declared_queues._declared.clear()
        declared_queues._declared.update(before)


@intemporal.activity
def now_here() -> float:
    return time.time()


@intemporal.workflow
def stamped(tag: Any = None) -> float:
    """Returns when its first step ran: the run's start, as a user would record it."""
    return now_here()


@intemporal.workflow(queue="c1")
def child(x: int) -> int:
    return x * 2


@intemporal.workflow(queue="c1")
def parent(n: int) -> int:
    return sum(child(i) for i in range(n))


def _open(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    if kind == "file":
        return FileStore(tmp_path / "store")
    if kind == "memory":
        return MemoryStore()
    return PostgresStore(request.getfixturevalue("pg_dsn"))


# -- concurrency across processes ------------------------------------------------------------
@pytest.mark.parametrize("kind", ["file", "postgres"])
def test_concurrency_holds_across_two_worker_processes(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Given 30 runs of a queue of concurrency 3, recorded by a client
    flows = importlib.import_module("queue_flows")
    store = _open(kind, tmp_path, request)
    location = str(store.location)
    marks = tmp_path / "marks"
    # When two worker processes serve the queue, its limit declared by the module they
    # import (`intemporal worker --queue q3-limited --import queue_flows`)
    workers = [
        _cli_worker(location, TESTS, "queue_flows", "--queue", "q3-limited", "--interval", "0.2")
        for _ in range(2)
    ]
    try:
        with Engine(store, worker=False) as client:
            handles = [client.start(flows.limited, str(marks), 0.05) for _ in range(30)]
            for handle in handles:
                handle.result(timeout=60)
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGINT)
        for proc in workers:
            proc.communicate(timeout=30)
    # Then all completed, and never more than 3 executed at once (the activities' own clocks)
    assert all(store.summary(h.run_id).status is RunStatus.COMPLETED for h in handles)
    assert len(marks.read_text().splitlines()) == 30
    assert 2 <= flows.most_at_once(str(marks)) <= 3
    store.close()


def test_a_worker_that_did_not_import_the_queue_still_keeps_its_limit(tmp_path: Path) -> None:
    # Given 8 runs of a queue of concurrency 3 recorded before any worker serves it
    flows = importlib.import_module("queue_flows")
    marks = tmp_path / "marks"
    with Engine(tmp_path / "store", worker=False) as client:
        handles = [client.start(flows.limited, str(marks), 0.2) for _ in range(8)]
        # When a worker without --import takes them: the limits come with the module that
        # its first run loads
        argv = [sys.executable, "-m", "intemporal.cli", "--store", str(tmp_path / "store")]
        proc = subprocess.Popen(
            [*argv, "worker", "--interval", "0.2"],
            cwd=TESTS,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            for handle in handles:
                handle.result(timeout=60)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
    # Then never more than 3 executed at once
    assert len(marks.read_text().splitlines()) == 8
    assert flows.most_at_once(str(marks)) <= 3


# -- rate ------------------------------------------------------------------------------------------
ON_FILE_ELSE_SLOW = [
    "file",
    pytest.param("memory", marks=pytest.mark.slow),
    pytest.param("postgres", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("kind", ON_FILE_ELSE_SLOW)
def test_rate_allows_at_most_limit_starts_in_any_window(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Given a queue that starts at most 5 runs per second, and 20 runs of it, on a store
    # whose admissions are recorded: run id -> the `now` the store admitted it at
    store = _open(kind, tmp_path, request)
    admitted: dict[str, float] = {}
    claim_next = store.claim_next

    def recording(*args: Any, **kwargs: Any) -> Any:
        leases = claim_next(*args, **kwargs)
        for lease in leases:
            admitted.setdefault(lease.run_id, kwargs["now"])  # a claim again is no start
        return leases

    store.claim_next = recording  # type: ignore[method-assign]
    with Engine(store, queues=[Queue("r5", rate=(5, 1.0))]) as engine:
        handles = [engine.start(stamped, i, queue="r5") for i in range(20)]
        began = {h.run_id: h.result(timeout=30) for h in handles}
    # Then any 6 consecutive starts span at least a second: at most 5 in any 1-s window
    starts = sorted(admitted[run_id] for run_id in began)
    assert len(starts) == 20
    assert min(starts[i + 5] - starts[i] for i in range(len(starts) - 5)) >= 1.0
    # and no run's first step came before its start. (The times those steps record keep
    # the limit too only while they lag their start by less than the window's margin, 15%:
    # a host's scheduling delay, which nothing bounds on a loaded host; CI saw one past it.)
    assert all(began[run_id] >= admitted[run_id] for run_id in began)
    store.close()


# -- priority, delay -------------------------------------------------------------------------------
def test_priority_orders_starts_when_one_slot_is_free(store: Store) -> None:
    # Given runs recorded with priorities, on a queue of one slot
    one = Queue("p1", concurrency=1)
    priorities = [5, 1, 3, 1, 0, 2]
    with Engine(store, worker=False, queues=[one]) as client:
        for i, p in enumerate(priorities):
            client.start(stamped, i, queue="p1", priority=p, run_id=f"p-{i}")
    # When a worker serves the queue
    with Engine(store, queues=[one]) as engine:
        started = [engine.handle(f"p-{i}").result(timeout=30) for i in range(len(priorities))]
    # Then they started by priority (lower first), ties by age
    assert sorted(range(len(priorities)), key=lambda i: started[i]) == [4, 1, 3, 5, 2, 0]


@pytest.mark.parametrize("kind", ON_FILE_ELSE_SLOW)
def test_delay_on_a_limited_queue_starts_when_due_within_a_poll(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = _open(kind, tmp_path, request)
    with Engine(store, queues=[Queue("d1", concurrency=2)]) as engine:
        # Given a run started with delay=1.0
        before = time.time()
        handle = engine.start(stamped, queue="d1", delay=1.0)
        # Then it is pending until then, and starts by 1 s + the poll interval
        assert engine.get_run(handle.run_id).status is RunStatus.PENDING
        began = handle.result(timeout=10)
    assert 1.0 <= began - before <= 1.0 + QUEUE_POLL + 0.5
    store.close()


def test_priority_is_taken_on_any_queue(engine: Engine) -> None:
    handle = engine.start(stamped, priority=-3)
    handle.result(timeout=10)
    assert engine.history(handle.run_id)[0]["priority"] == -3


# -- per engine, and children -------------------------------------------------------------------------
def test_worker_concurrency_bounds_one_engine(tmp_path: Path) -> None:
    flows = importlib.import_module("queue_flows")
    marks = tmp_path / "marks"
    two = Queue("w2", worker_concurrency=2)
    with Engine(MemoryStore(), queues=[two], threads=8) as engine:
        handles = [engine.start(flows.limited, str(marks), 0.05, queue="w2") for _ in range(8)]
        for handle in handles:
            handle.result(timeout=30)
    assert flows.most_at_once(str(marks)) == 2


def test_inline_children_share_their_parents_slot(store: Store) -> None:
    # Given a queue of one slot, and parents on it whose children are on it too
    with Engine(store, queues=[Queue("c1", concurrency=1)]) as engine:
        handles = [engine.start(parent, n) for n in (2, 3)]
        # Then both complete: a child never waits for a slot its parent holds
        assert [h.result(timeout=30) for h in handles] == [2, 6]
        assert engine.get_run(f"{handles[0].run_id}/1").status is RunStatus.COMPLETED


@intemporal.workflow(name="queues.looping", queue="one-slot")
def looping(marks: str, n: int) -> int:
    importlib.import_module("queue_flows").hold(marks, 0.05)
    if n > 0:
        intemporal.continue_as_new(marks, n - 1)
    return n


def test_a_run_that_continues_as_new_takes_its_queues_gate_again(
    store: Store, tmp_path: Path
) -> None:
    flows = importlib.import_module("queue_flows")
    marks = tmp_path / "marks"
    # Given a queue of one slot, a run that continues as new 4 times and 4 other runs on it
    with Engine(store, queues=[Queue("one-slot", concurrency=1)]) as engine:
        chain = engine.start(looping, str(marks), 4, run_id="loop", priority=-1)
        others = [engine.start(looping, str(marks), 0, run_id=f"other-{i}") for i in range(4)]
        # Then all complete, never two at once: each next run of the chain waits for the slot
        assert chain.result(timeout=30) == 0
        assert [h.result(timeout=30) for h in others] == [0] * 4
        assert engine.history("loop~4")[0]["priority"] == -1  # its place kept along the chain
    assert len(marks.read_text().splitlines()) == 9
    assert flows.most_at_once(str(marks)) == 1


def test_close_returns_once_the_watcher_and_the_queue_poller_ended(store: Store) -> None:
    # Given an engine whose doorbell watcher and limited-queue poller run
    before = set(threading.enumerate())
    engine = Engine(store, queues=[Queue("closing", concurrency=1)])
    engine.recover()  # a worker's: it follows the doorbell and polls its limited queues
    assert engine.start(stamped, queue="closing").result(timeout=30) > 0
    mine = {"intemporal-watcher", "intemporal-queues"}
    assert mine <= {t.name for t in set(threading.enumerate()) - before}
    # When it is closed
    engine.close()
    # Then neither is left running: they used to see close() up to a poll later, using the
    # store meanwhile (a PostgreSQL store closed next had its listener opened again)
    assert [t.name for t in set(threading.enumerate()) - before if t.name in mine] == []


# -- declaring queues -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"concurrency": 0}, ValueError),
        ({"concurrency": 1.5}, ValueError),
        ({"worker_concurrency": -1}, ValueError),
        ({"rate": (5,)}, ValueError),
        ({"rate": (0, 1.0)}, ValueError),
        ({"rate": (5, 0)}, ValueError),
        ({"rate": (5, float("inf"))}, ValueError),
    ],
)
def test_bad_limits_are_refused(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match="Queue"):
        Queue("bad", **options)
    assert "bad" not in declared_queues.declared()


def test_limits_are_keyword_only() -> None:
    # `Queue(name, *, concurrency=None, ...)`: a bare number would not say which limit it is
    with pytest.raises(TypeError):
        Queue("positional", 2)  # type: ignore[call-arg]
    assert "positional" not in declared_queues.declared()


def test_engine_takes_names_and_queue_objects() -> None:
    emails = Queue("emails", concurrency=2, rate=(10, 1.0))
    with Engine(MemoryStore(), queues=[emails, "default"]) as engine:
        assert engine.queues == ["emails", "default"]
    with pytest.raises(TypeError, match=r"names and intemporal\.Queue"):
        Engine(MemoryStore(), queues=[3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="list of names"):
        Engine(MemoryStore(), queues="emails")


# -- the command line ----------------------------------------------------------------------------------
APP = """
import intemporal

mail = intemporal.Queue("mail", concurrency=2, worker_concurrency=1, rate=(10, 1.0))

@intemporal.workflow(queue="mail")
def send(to: str) -> str:
    return to
"""


def test_queues_command_shows_limits_and_counts(
    cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a module declaring a queue at its top level, and runs recorded on it
    monkeypatch.chdir(home.parent)
    (home.parent / "mailapp.py").write_text(APP)
    assert cli("start", "mailapp:send", '["a"]', "--detach").exit_code == 0
    delayed = cli("start", "mailapp:send", '["b"]', "--detach", "--delay", "1h", "--priority", "2")
    assert delayed.exit_code == 0, delayed.output
    # When `intemporal queues` looks, Then it shows the declared limits and the counts
    out = cli("queues", "--import", "mailapp", "--json")
    assert out.exit_code == 0, out.output
    (mail,) = [json.loads(line) for line in out.output.splitlines() if '"mail"' in line]
    assert mail == {
        "queue": "mail",
        "concurrency": 2,
        "worker_concurrency": 1,
        "rate": [10, 1.0],
        "pending": 1,
        "executing": 0,
        "delayed": 1,
        "started_in_window": 0,
    }
    table = cli("queues", "--import", "mailapp")
    assert "mail" in table.output and "10/1s" in table.output
    assert cli("start", "mailapp:send", '["c"]', "--delay", "soon").exit_code == 2
    # A priority outside what every store keeps is a bad option value too: exit 2, no run
    for bad in ("99999999999", str(-(2**31) - 1)):
        refused = cli("start", "mailapp:send", '["d"]', "--detach", "--priority", bad)
        assert refused.exit_code == 2, refused.output
        assert "--priority" in refused.output
    assert len(cli("list", "--json").output.splitlines()) == 2  # a and b only
