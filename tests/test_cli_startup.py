"""`intemporal list` (and `show`, `tree`, `count`) start without the engine or the other commands.

| command line                         | loads                                             |
| ------------------------------------ | ------------------------------------------------- |
| `list`, `show RUN`, `tree`, `count`  | `cli_inspect` only: no engine, no `cli_run`       |
| `gc`                                 | `cli_gc` only: no engine, no `cli_run`, no Pydantic |
| `--help`, any other command          | every command (the full `intemporal --help` list) |

Usual option values (text, digits, flags) are read without Pydantic (`cli_coerce.py`); any
other value goes through Typer's own conversion, so its errors read as before.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from intemporal import FileStore
from intemporal.cli import command_name
from intemporal.cli_coerce import _SLOW, quick

PROBE = """
import json, sys
from intemporal.cli import main
sys.argv = ["intemporal", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
loaded = [m for m in ("intemporal.engine", "intemporal.cli_run", "intemporal.cli_worker",
                      "asyncio", "dill", "pydantic") if m in sys.modules]
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
        (["gc", "--older-than", "7d", "--status", "failed"], "removed 0 run(s)"),
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
    # the root's help before the command lists every command (it listed only `list`)
    assert command_name(["--help", "list"]) is None
    assert command_name(["--strict", "-h", "show", "x"]) is None
    assert command_name(["list", "--help"]) == "list"  # the command's own help


def test_the_roots_help_before_a_looking_command_lists_every_command(store: Path) -> None:
    for args in (["--help", "list"], ["--store", str(store), "-h", "count"]):
        proc = subprocess.run(
            [sys.executable, "-m", "intemporal.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        for name in ("list", "count", "resume", "gc", "worker", "start"):
            assert f"  {name} " in proc.stdout, (name, proc.stdout)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["list", "--limit", "abc"], "Input should be a valid integer"),
        (["list", "--limit", "0"], "Input should be greater than or equal to 1"),
        (["list", "--offset", "-1"], "Input should be greater than or equal to 0"),
        (["list", "--limit", "1.5"], "Input should be a valid integer"),
    ],
)
def test_an_unusual_value_is_judged_by_typer_as_before(
    store: Path, args: list[str], error: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "intemporal.cli", "--store", str(store), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and error in proc.stderr, proc.stderr


def test_usual_values_are_read_as_typer_reads_them(store: Path) -> None:
    assert quick(int, None, "10") == 10 and quick(str, None, "x") == "x"
    assert quick(bool, None, True) is True and quick(int, None, 0) == 0
    for annotation, value in [(int, " 7"), (int, "+3"), (int, "٣"), (int, "1.5"), (bool, "1")]:
        assert quick(annotation, None, value) is _SLOW, value  # Typer's own conversion
    loaded, out = _loaded("--store", str(store), "list", "--limit", " 7")  # Typer's: 7
    assert "one" in out and "pydantic" in loaded
