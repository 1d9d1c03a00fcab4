"""The typed API, as mypy --strict sees it from a user's project: revealed types and bad calls.

Each check runs mypy in a fresh folder outside the repository, on a copy of
`samples/typed.py` and a file of calls, so it also proves that the documented install
(`pip install -e .` with `editable_mode=compat`, as the Makefile does) lets type checkers
find the package.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CALLS = """\
from datetime import timedelta

import intemporal
from typed_sample import Mailer, charge, checkout, mailer

engine = intemporal.Engine("memory:")
reveal_type(engine.start(checkout, "o", 100))  # R1
reveal_type(engine.run(checkout, "o", 100))  # R2
reveal_type(engine.start(checkout, "o", 100, run_id="o-1"))  # R3
reveal_type(engine.run(checkout, "o", 100, express=True))  # R4
reveal_type(engine.run(checkout, order_id="o", amount=1, queue="q", delay=timedelta(1)))  # R5
reveal_type(engine.start(checkout, "o", 1).result(timeout=1))  # R6
reveal_type(engine.run(checkout, kwargs={"order_id": "o", "amount": 1}))  # R7
reveal_type(mailer)  # R8
reveal_type(charge)  # R9
reveal_type(engine.resume("o"))  # R10


@intemporal.workflow
def fan(n: int) -> int:
    futures = [intemporal.submit(charge, "o", i) for i in range(n)]
    reveal_type(futures[0])  # R11
    reveal_type(intemporal.join_all(futures))  # R12
    reveal_type(intemporal.join_any(futures))  # R13
    reveal_type(intemporal.submit(fan, 1).result())  # R14
    return n


n: int = engine.run(checkout, "o", 100)  # E1
engine.run(checkout, 42, "x")  # E2
engine.start(checkout, "o")  # E3
engine.run(checkout, "o", 1, expres=True)  # E4
engine.run(charge, "o", 1)  # E5
engine.start(checkout, "o", 1, run_id=5)  # E6


@intemporal.workflow
def bad() -> None:
    intemporal.submit(charge, 1, 2, 3)  # E7
    intemporal.submit(charge, "o", "1")  # E8
    intemporal.join_all([intemporal.submit(charge, "o", 1)]).append(3)  # E9


good: list[str] = engine.run(checkout, "o", 100, run_id="x", protocols={Mailer: object()})
"""

REVEALED = {
    "R1": "intemporal.handle.RunHandle[builtins.list[builtins.str]]",
    "R2": "builtins.list[builtins.str]",
    "R3": "intemporal.handle.RunHandle[builtins.list[builtins.str]]",
    "R4": "builtins.list[builtins.str]",
    "R5": "builtins.list[builtins.str]",
    "R6": "builtins.list[builtins.str]",
    "R7": "builtins.list[builtins.str]",
    "R8": "typed_sample.Mailer",
    "R9": "intemporal.api.Activity[[order_id: builtins.str, amount: builtins.int], builtins.str]",
    "R10": "intemporal.handle.RunHandle[Any]",
    "R11": "intemporal.workflow_api.DurableFuture[builtins.str]",
    "R12": "builtins.list[builtins.str]",
    "R13": "tuple[builtins.int, builtins.str]",
    "R14": "builtins.int",
}
ERRORS = ["E1", "E2", "E3", "E4", "E5", "E6", "E7", "E8", "E9"]


def _lines(tag: str) -> int:
    """The line of `CALLS` that ends with `# tag`."""
    for number, line in enumerate(CALLS.splitlines(), 1):
        if line.endswith(f"# {tag}"):
            return number
    raise AssertionError(tag)


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[str]]:
    """mypy --strict's messages on the calls above, by line, run from outside the repository."""
    here = tmp_path_factory.mktemp("typing")
    shutil.copy(ROOT / "samples" / "typed.py", here / "typed_sample.py")
    (here / "calls.py").write_text(CALLS)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "calls.py"],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out: dict[int, list[str]] = {}
    for match in re.finditer(r"^calls\.py:(\d+): (\w+): (.*)$", proc.stdout, re.M):
        out.setdefault(int(match[1]), []).append(f"{match[2]}: {match[3]}")
    assert out, proc.stdout + proc.stderr
    assert "typed_sample.py" not in proc.stdout, proc.stdout  # the sample itself is clean
    return out


@pytest.mark.parametrize("tag", sorted(REVEALED))
def test_revealed_type(mypy_output: dict[int, list[str]], tag: str) -> None:
    # Given the typed sample, when mypy --strict reads a call, then it sees its real type
    # (mypy 2 prints "list[str]" where mypy 1 printed "builtins.list[builtins.str]")
    revealed = [m.replace("builtins.", "") for m in mypy_output[_lines(tag)]]
    assert f'note: Revealed type is "{REVEALED[tag].replace("builtins.", "")}"' in revealed


@pytest.mark.parametrize("tag", ERRORS)
def test_bad_call_is_an_error(mypy_output: dict[int, list[str]], tag: str) -> None:
    # Given a call whose arguments or result do not fit the workflow, then mypy refuses it
    assert any(m.startswith("error:") for m in mypy_output.get(_lines(tag), [])), mypy_output


def test_good_calls_are_not_errors(mypy_output: dict[int, list[str]]) -> None:
    # Every line that is not a deliberate bad call type-checks
    bad_lines = {_lines(tag) for tag in ERRORS}
    errors = {
        line: messages
        for line, messages in mypy_output.items()
        if line not in bad_lines and any(m.startswith("error:") for m in messages)
    }
    assert not errors
