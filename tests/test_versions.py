"""Code versions: `Engine(version=...)` is recorded per run; an engine executes only its runs."""

from __future__ import annotations

import pytest

import intemporal
from intemporal import Engine, RunStatus, Store


@intemporal.workflow(name="versions.hello")
def hello(who: str) -> str:
    return f"hello {who}"


def test_two_engines_of_different_versions_each_execute_only_their_runs(store: Store) -> None:
    # Given runs recorded by clients of two code versions, and one without a version
    with Engine(store, worker=False, version="2026.11.1") as old_client:
        old_client.start(hello, "old", run_id="r-old")
    with Engine(store, worker=False, version="2026.11.2") as new_client:
        new_client.start(hello, "new", run_id="r-new")
    with Engine(store, worker=False) as plain:
        plain.start(hello, "plain", run_id="r-plain")
        assert plain.get_run("r-old").version == "2026.11.1"
        assert plain.get_run("r-plain").version is None
        assert plain.get_run("r-new").to_json()["version"] == "2026.11.2"
    # When a worker of each version looks for work
    with Engine(store, version="2026.11.2") as new_worker:
        taken_new = [h.run_id for h in new_worker.recover()]
        for rid in taken_new:
            new_worker.handle(rid).result(timeout=10)
        # Then each takes only the runs of its version
        assert taken_new == ["r-new"]
        assert new_worker.get_run("r-old").status is RunStatus.PENDING
    with Engine(store, version="2026.11.1") as old_worker:
        assert [h.run_id for h in old_worker.recover()] == ["r-old"]
        assert old_worker.handle("r-old").result(timeout=10) == "hello old"
    # And `versions` lets a worker drain older runs too (None: runs without a version)
    with Engine(store, version="2026.11.2", versions={"2026.11.2", None}) as draining:
        assert [h.run_id for h in draining.recover()] == ["r-plain"]
        assert draining.handle("r-plain").result(timeout=10) == "hello plain"


def test_a_run_named_explicitly_is_resumed_whatever_its_version(store: Store) -> None:
    with Engine(store, worker=False, version="a") as client:
        client.start(hello, "x", run_id="named")
    with Engine(store, version="b") as other:
        assert other.recover() == []
        assert other.resume("named").result(timeout=10) == "hello x"


def test_bad_versions_are_refused() -> None:
    with pytest.raises(TypeError):
        Engine(intemporal.MemoryStore(), version=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Engine(intemporal.MemoryStore(), versions="1.0")
