"""`Engine(max_recoveries=N)`: a run whose executions keep dying is parked as "stuck".

A poison input makes an activity kill its own process (SIGKILL). Each new process recovers
the run, journaling `run_recovered` first; after N recoveries without progress the next one
parks it (`RunStatus.STUCK`, `list --status stuck`) until a person resumes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import cli_on
from process_helpers import read_lines

import intemporal
from intemporal import Engine, FileStore, RunStatus

SCRIPT = """
import os, signal, sys
import intemporal

STORE, SIDE_EFFECTS = {store!r}, {side_effects!r}


def record(line):
    fd = os.open(SIDE_EFFECTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, (line + "\\n").encode())
    os.close(fd)


@intemporal.activity
def parse(payload):
    record("parse " + payload)
    if os.environ.get("POISON") == "1":  # the poison kills whatever process parses it
        os.kill(os.getpid(), signal.SIGKILL)
    return payload.upper()


@intemporal.activity
def greet(payload):
    record("greet " + payload)
    return "hello"


@intemporal.workflow(name="stuck.ingest")
def ingest(payload):
    if os.environ.get("ORDER") == "poison-first":  # dies before any step is journaled
        return [parse(payload), greet(payload)][::-1]
    return [greet(payload), parse(payload)]


if __name__ == "__main__":
    with intemporal.Engine(STORE, max_recoveries=2) as engine:
        if sys.argv[1] == "start":
            engine.start(ingest, "bad", run_id="poison").result(timeout=10)
        else:
            for handle in engine.recover():
                try:
                    handle.result(timeout=10)
                except intemporal.RunStuck as exc:
                    print("stuck:", exc)
"""


def _run(script: Path, command: str, order: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POISON": "1", "ORDER": order}
    return subprocess.run(
        [sys.executable, str(script), command], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("order", ["poison-second", "poison-first"])
def test_a_run_that_kills_its_process_is_parked_after_the_limit(tmp_path: Path, order: str) -> None:
    store, effects = tmp_path / "store", tmp_path / "effects.txt"
    script = tmp_path / "ingest.py"
    script.write_text(textwrap.dedent(SCRIPT.format(store=str(store), side_effects=str(effects))))
    # Given a run whose activity kills its process, started, then recovered twice
    assert _run(script, "start", order).returncode == -9
    for _ in range(2):
        assert _run(script, "recover", order).returncode == -9
    # When a third process recovers it
    last = _run(script, "recover", order)
    # Then it is parked as stuck instead of being executed again
    assert last.returncode == 0, last.stderr
    assert "stuck: run 'poison' is stuck: recovered 2 times" in last.stdout
    tried = ["parse bad"] * 3
    assert read_lines(effects) == (tried if order == "poison-first" else ["greet bad", *tried])
    events = FileStore(store).read("poison")
    kinds = [e["type"] for e in events]
    assert kinds.count("run_recovered") == 2  # each recovery journaled
    assert kinds[-1] == "run_stuck" and events[-1]["recoveries"] == 2
    with Engine(store) as engine:
        assert engine.get_run("poison").status is RunStatus.STUCK
        assert engine.recover() == []  # left alone by workers
        with pytest.raises(intemporal.RunStuck):
            engine.handle("poison").result(timeout=5)
    # And the CLI shows it
    listed = cli_on(store)("list", "--status", "stuck")
    assert listed.exit_code == 0, listed.output
    assert "poison" in listed.stdout and "stuck" in listed.stdout
    # And once the cause is fixed, a person resumes it to the end
    with Engine(store) as engine:
        assert engine.resume("poison").result(timeout=10) == ["hello", "BAD"]
    assert read_lines(effects).count("greet bad") == 1
