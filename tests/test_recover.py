"""Recovery: which unfinished runs `Engine.recover()` takes, and which it leaves alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from process_helpers import wait_until

import intemporal
from intemporal import Engine, FileStore, RunStatus


@intemporal.workflow(name="recover.parked")
def parked(x: int) -> int:
    intemporal.sleep(2.0)  # long enough to be parked, not held on a thread
    return x + 1


@intemporal.workflow(name="recover.broken")
def broken(x: int) -> int:
    return x


def test_a_run_parked_by_a_live_engine_is_not_taken_by_another(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    first = Engine(store, threads=2)
    try:
        h = first.start(parked, 1, run_id="p1")
        wait_until(lambda: h.status() is RunStatus.WAITING, what="the run to be parked")
        assert not first.get_run("p1").orphaned
        with Engine(store, threads=2) as other:
            assert other.recover() == []
    finally:
        first.close()
    # Its engine is gone: the waiting run is now an orphan that another engine recovers.
    assert FileStore(tmp_path / "store").summary("p1").orphaned
    with Engine(store, threads=2) as rescuer:
        handles = rescuer.recover()
        assert [x.run_id for x in handles] == ["p1"]
        assert handles[0].result(timeout=10) == 2


def test_recover_skips_a_run_whose_code_cannot_be_found(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    with Engine(store, worker=False) as client:
        client.start(broken, 1, run_id="a-lost")
        client.start(broken, 2, run_id="b-fine")
    # Make the first run's code unfindable: another workflow name, no import path, no copy.
    journal = tmp_path / "store" / "a-lost.jsonl"
    first, *rest = journal.read_text().splitlines(keepends=True)
    event = json.loads(first)
    event["workflow"] = "nowhere.to.be.found"
    event["ref"] = {"module": "no_such_module_here", "qualname": "broken", "script": None}
    journal.write_text(json.dumps(event) + "\n" + "".join(rest))
    with Engine(store, threads=2) as engine:
        handles = engine.recover()
        assert [x.run_id for x in handles] == ["b-fine"]
        assert handles[0].result(timeout=10) == 2
        assert engine.get_run("a-lost").status is RunStatus.PENDING


def test_gc_of_children_leaves_no_empty_folders(tmp_path: Path) -> None:
    @intemporal.workflow(name="recover.kid")
    def kid(x: int) -> int:
        return x

    @intemporal.workflow(name="recover.mom")
    def mom() -> int:
        return kid(1) + kid(2)

    store = FileStore(tmp_path / "store")
    with Engine(store, threads=2) as engine:
        assert engine.run(mom, run_id="m") == 3
    for run_id in ("m/1", "m/2"):
        store.delete(run_id)
    assert not (tmp_path / "store" / "m").exists()
    assert store.exists("m")


def test_a_workflow_in_a_package_resumes_from_another_folder_on_its_path(tmp_path: Path) -> None:
    # Given a run started from a package that is importable only from its own folder
    pkg = tmp_path / "proj" / "shop" / "flows"
    pkg.mkdir(parents=True)
    (tmp_path / "proj" / "shop" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "checkout.py").write_text(
        "import intemporal\n\n"
        "@intemporal.activity\ndef double(x):\n    return x * 2\n\n"
        "@intemporal.workflow(name='pkg.checkout')\ndef checkout(x):\n    return double(x)\n"
    )
    store = tmp_path / "store"
    start = (
        "import intemporal\nfrom shop.flows.checkout import checkout\n"
        f"with intemporal.Engine({str(store)!r}, worker=False) as e:\n"
        "    e.start(checkout, 21, run_id='pkg-1')\n"
    )
    subprocess.run([sys.executable, "-c", start], cwd=tmp_path / "proj", check=True, timeout=30)
    # When another process, elsewhere, resumes it: the journal says where the package lives
    resume = (
        f"import intemporal\nwith intemporal.Engine({str(store)!r}) as e:\n"
        "    print(e.resume('pkg-1').result(timeout=10))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", resume], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    # Then the folder the journal names is not trusted: the error says where and how
    assert out.returncode == 1
    assert "refusing to add" in out.stderr and str(tmp_path / "proj") in out.stderr
    assert "PYTHONPATH" in out.stderr
    # And with that folder on PYTHONPATH, it completes
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "proj")}
    out = subprocess.run(
        [sys.executable, "-c", resume],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"


def test_starting_again_a_run_whose_engine_died_while_it_waited_resumes_it(
    tmp_path: Path,
) -> None:
    store = FileStore(tmp_path / "store")
    first = Engine(store, threads=2)
    h = first.start(parked, 5, run_id="again")
    wait_until(lambda: h.status() is RunStatus.WAITING, what="the run to be parked")
    first.close()  # its engine is gone: the waiting run is an orphan
    with Engine(store, threads=2) as second:
        assert second.start(parked, 5, run_id="again").result(timeout=10) == 6


def test_unfinished_lists_exactly_the_runs_without_an_end(store: intemporal.Store) -> None:
    # Given runs that ended in each way, runs still open, and a long last line
    def run(run_id: str, *tail: dict[str, Any]) -> None:
        assert store.create(run_id, {"type": "run_started", "workflow": "w", "ts": 0.0})
        if tail:
            lease = store.claim(run_id)
            assert lease is not None
            for event in tail:
                lease.append(dict(event, ts=1.0), sync=False)
            lease.release()

    run("done", {"type": "run_completed", "result": 1})
    run("big", {"type": "run_completed", "result": "x" * 10_000})
    run("failed", {"type": "run_failed", "error": {"type": "E", "message": "m"}})
    run("cancelled", {"type": "run_cancelled", "error": {"type": "C", "message": "m"}})
    run("pending")
    run("midway", {"type": "activity_completed", "seq": 1, "name": "a", "result": 1})
    run("parked", {"type": "run_suspended", "reason": "sleep", "until": None})
    # When listing the unfinished ones, Then exactly the open runs come back
    assert sorted(i.run_id for i in store.iter_runs(unfinished=True)) == [
        "midway",
        "parked",
        "pending",
    ]
