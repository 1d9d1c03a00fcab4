"""In-process helpers for the engine tests (the crash helpers are in `process_helpers`)."""

from __future__ import annotations

import collections
import contextlib
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from process_helpers import wait_until
from typer.testing import CliRunner, Result

import intemporal
from intemporal import Engine, RunStatus, Store
from intemporal.cli import app

Cli = Callable[..., Result]


def cli_on(home: Path) -> Cli:
    """Run `intemporal --store HOME ARGS...` in this process; wide, so tables do not wrap."""
    runner = CliRunner(env={"COLUMNS": "200", "INTEMPORAL_HOME": None, "INTEMPORAL_DEBUG": None})

    def invoke(*args: str) -> Result:
        return runner.invoke(app, ["--store", str(home), *args])

    return invoke


class Calls:
    """A thread-safe tally of side effects: `calls.hit(key)` in an activity, `calls[key]` after."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self.counts: collections.Counter[Any] = collections.Counter()
        self.order: list[Any] = []

    def hit(self, key: Any) -> None:
        with self._mutex:
            self.counts[key] += 1
            self.order.append(key)

    def __getitem__(self, key: Any) -> int:
        return self.counts[key]

    def total(self) -> int:
        return sum(self.counts.values())


def clone_prefix(store: Store, src: str, dst: str, keep: int) -> list[dict[str, Any]]:
    """Make run `dst` a copy of the first `keep` events of run `src`: a run cut short by a crash.

    The copy is unclaimed and unfinished, exactly what a SIGKILL between two appends
    leaves behind. Returns the copied events.
    """
    events = store.read(src)[:keep]
    first = dict(events[0], run_id=dst)
    lease = store.create_claimed(dst, first)  # claimed as created: a live worker cannot take it
    assert lease is not None
    try:
        for event in events[1:]:
            lease.append(dict(event), sync=True)
    finally:
        lease.release()
    return [first, *events[1:]]


def index_of(events: list[dict[str, Any]], type_: str, nth: int = 1) -> int:
    """The position of the `nth` event of type `type_` (1-based `nth`)."""
    seen = 0
    for i, event in enumerate(events):
        if event["type"] == type_:
            seen += 1
            if seen == nth:
                return i
    raise AssertionError(f"no event #{nth} of type {type_!r} in {[e['type'] for e in events]}")


def snapshot(store: Store, run_id: str) -> Any:
    """Something equal before and after iff the run's journal did not change."""
    root = getattr(store, "root", None)
    if root is not None:
        return (root / f"{run_id}.jsonl").read_bytes()
    return store.read(run_id)


def new_version(original: Any, fn: Any, monkeypatch: Any) -> Any:
    """Decorate `fn` as an edited `original` workflow: same import path, same name.

    As after an edit and a restart, a resume or a replay then finds `fn`; `monkeypatch`
    puts `original` back in the registry after the test.
    """
    from intemporal import api, workflow

    key = (api.import_path(original.fn), original.name)
    monkeypatch.setitem(api.REGISTRY.workflows, key, original)
    fn.__module__, fn.__qualname__ = original.fn.__module__, original.fn.__qualname__
    return workflow(name=original.name)(fn)


def parked(home: Path, wf: Any, x: Any, run_id: str, status: RunStatus = RunStatus.WAITING) -> None:
    """A run of `wf(x)` left `status` (waiting) by an engine that then closed cleanly."""
    with Engine(str(home), threads=2) as gone:
        gone.start(wf, x, run_id=run_id)
        wait_until(lambda: gone.get_run(run_id).status is status, what=f"{run_id} {status}")


HOLDER = """
import sys, time
from intemporal import FileStore
lease = FileStore(sys.argv[1]).claim(sys.argv[2])
print("held" if lease else "taken", flush=True)
time.sleep(60)
"""


@contextlib.contextmanager
def held_elsewhere(home: Path, run_id: str) -> Iterator[str]:
    """Another live process claims run `run_id` (as if executing it) until the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(home), run_id], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield run_id
    finally:
        proc.kill()
        proc.wait(timeout=10)


UNDONE: list[str] = []  # what `unbook` undid: the compensations that ran (clear it first)


@intemporal.activity(name="helpers.book")
def book(item: str) -> str:
    """A booking step of the saga tests (timeouts, terminate)."""
    return f"booked {item}"


@intemporal.activity(name="helpers.unbook")
def unbook(item: str) -> None:
    """Its compensation: recorded in `UNDONE`."""
    UNDONE.append(item)


def importable(folder: Path, name: str, source: str) -> Iterator[Any]:
    """`source` as the module `name`, importable here and by child processes (from
    `folder`, put on `sys.path`); forgotten again after the `yield` (a fixture's body)."""
    (folder / f"{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    try:
        yield __import__(name)
    finally:
        sys.modules.pop(name, None)
        sys.path.remove(str(folder))
