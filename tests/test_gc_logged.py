"""`gc` and the write-ahead log: a deletion is in the log before its file is unlinked.

| kind                                                     | right                           |
| -------------------------------------------------------- | ------------------------------- |
| gc SIGKILLed once it unlinked journals (the deletions    | after a reboot, the replay of   |
| only queued for the log), then a reboot replays the log  | the log brings no run back      |
| `FileStore.delete` (gc run by run) the same              | the same                        |

A replay writes each record since the checkpoint into its file, making a file whose first
bytes a record holds: a journal unlinked before its deletion reached the log came back
from its records (whole, or its first lines: a run that looked unfinished and was run
again).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import intemporal
from intemporal import Engine, FileStore
from intemporal.store import walfile

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


@intemporal.activity
def logged_step(i: int) -> int:
    return i


@intemporal.workflow(name="gclogged.job")
def logged_job(i: int) -> int:
    return logged_step(i) + logged_step(i + 1)


# The gc is killed once its unlinks are done, before anything else of it (the flush of the
# log it queued the deletions for, the rows).
KILLED_GC = """
import os, signal, sys
from intemporal.store import filegc, file
from intemporal.housekeeping import collectable, delete_trees
how = sys.argv[2]
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
if how == "bulk":
    real = filegc.FileCollector._delete
    def delete(self, *args):
        real(self, *args)
        killed()
    filegc.FileCollector._delete = delete
else:
    file.FileStore.delete_ended_trees = lambda self, *a: None  # run by run
    real = file.FileStore.delete
    def delete(self, run_id):
        real(self, run_id)
        killed()
    file.FileStore.delete = delete
store = file.FileStore(sys.argv[1])
delete_trees(store, collectable(store, older_than=0, probe=False))
"""


@pytest.mark.parametrize("how", ["bulk", "run by run"])
def test_a_gc_killed_after_its_unlinks_brings_no_run_back_at_the_next_boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # Given finished runs, each journal's lines in the log since its last checkpoint
    home = tmp_path / "store"
    with Engine(home, threads=2) as engine:
        for i in range(3):
            assert engine.run(logged_job, i, run_id=f"r{i}") == 2 * i + 1
    assert sorted(p.name for p in home.glob("*.jsonl")) == ["r0.jsonl", "r1.jsonl", "r2.jsonl"]
    # When a gc is SIGKILLed right after it unlinked journals
    env: dict[str, Any] = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_GC, str(home), how],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    gone = {f"r{i}.jsonl" for i in range(3)} - {p.name for p in home.glob("*.jsonl")}
    assert gone
    # ...and the machine reboots before the log's checkpoint moves (its replay runs)
    monkeypatch.setattr(walfile, "boot_id", lambda: "the next boot")
    FileStore(home).close()
    # Then no journal gc unlinked is back
    assert not gone & {p.name for p in home.glob("*.jsonl")}
