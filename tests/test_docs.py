"""The README's Python examples run as written, and its call table names every public
`Engine` method (issue 19, "Docs that run").

Each ```python block is saved as a file and run with `python FILE` in one fresh folder,
in the README's order, the first block saved as `checkout.py` (the README says later
blocks import it from there). A block must exit 0 within `TIMEOUT` seconds.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import intemporal

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
TIMEOUT = 60


def test_the_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 5
    assert "def checkout(" in BLOCKS[0]


def test_every_python_block_of_the_readme_runs_as_written(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "INTEMPORAL_HOME"}
    env["GITHUB_TOKEN"] = "not-a-real-token"  # the Secret example reads it
    (tmp_path / "checkout.py").write_text(BLOCKS[0])
    for i, block in enumerate(BLOCKS, 1):
        script = tmp_path / ("checkout.py" if i == 1 else f"readme_block_{i}.py")
        script.write_text(block)
        proc = subprocess.run(
            [sys.executable, script.name],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert proc.returncode == 0, f"README python block {i} failed:\n{block}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, f"block {i}:\n{proc.stderr}"


def test_the_first_example_prints_its_result(tmp_path: Path) -> None:
    # the block a new user runs first: its output is what the README promises
    env = {k: v for k, v in os.environ.items() if k != "INTEMPORAL_HOME"}
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKS[0]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert "['charged 100 for order-42', 'shipped order-42']" in proc.stdout, proc.stderr


# Methods an engine's own runs call back: documented as such, not in the call table.
INTERNAL = {"run_child", "child_result", "pause", "submit_activity", "execution"}


def test_the_call_table_lists_every_public_engine_method() -> None:
    public = {
        name
        for name, member in inspect.getmembers(intemporal.Engine)
        if not name.startswith("_") and callable(member)
    }
    section = README[README.index("| call | what it does |") :]
    table = section[: section.index("\n\n")]
    listed = set(re.findall(r"^\| `engine\.(\w+)\(", table, re.M))
    assert public - INTERNAL <= listed, (
        f"not in the README's call table: {public - INTERNAL - listed}"
    )
    for name in INTERNAL & public:
        assert f"`{name}`" in README, f"{name} is not named as an internal callback"


def test_the_call_table_check_catches_a_missing_method(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intemporal.Engine, "brand_new", lambda self: None, raising=False)
    with pytest.raises(AssertionError, match="brand_new"):
        test_the_call_table_lists_every_public_engine_method()
