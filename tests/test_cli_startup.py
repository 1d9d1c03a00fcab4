"""`intemporal list` (and `show`, `tree`, `count`) start without the engine or the other commands.

| command line                         | loads                                             |
| ------------------------------------ | ------------------------------------------------- |
| `list`, `show RUN`, `tree`, `count`  | `cli_inspect` only: no engine, no `cli_run`       |
| `--help`, any other command          | every command (the full `intemporal --help` list) |
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from intemporal import FileStore
from intemporal.cli import command_name

PROBE = """
import json, sys
from intemporal.cli import main
sys.argv = ["intemporal", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
loaded = [m for m in ("intemporal.engine", "intemporal.cli_run", "intemporal.cli_worker",
                      "asyncio", "dill") if m in sys.modules]
print(json.dumps(loaded))
"""


def _loaded(*args: str) -> tuple[list[str], str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60
    )
    *out, last = proc.stdout.strip().splitlines()
    return json.loads(last), "\n".join(out)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("startup") / "store"
    first = {"type": "run_started", "workflow": "wf", "args": [], "kwargs": {}, "ts": 1.0}
    FileStore(home).create("one", first)  # a pending run
    return home


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["list"], "one"),
        (["list", "--limit", "10", "--json"], '"run_id": "one"'),
        (["count"], "1"),
        (["show", "one"], "one"),
        (["tree", "one"], "one"),
    ],
)
def test_the_commands_that_look_load_neither_the_engine_nor_the_other_commands(
    store: Path, args: list[str], shown: str
) -> None:
    loaded, out = _loaded("--store", str(store), *args)
    assert loaded == [], loaded
    assert shown in out, out


def test_help_and_other_commands_load_every_command(store: Path) -> None:
    loaded, out = _loaded("--help")
    assert "intemporal.cli_run" in loaded and "intemporal.cli_worker" in loaded
    for name in ("list", "show", "resume", "gc", "worker", "start"):
        assert f"  {name} " in out, out


def test_the_command_is_the_first_word_that_is_not_a_root_option() -> None:
    assert command_name(["list"]) == "list"
    assert command_name(["--store", "list", "show", "x"]) == "show"  # a store named "list"
    assert command_name(["--store=s", "--strict", "list", "--limit", "3"]) == "list"
    assert command_name(["-h"]) is None and command_name([]) is None
    assert command_name(["--", "list"]) is None
