"""Scripts run as a user runs them: `python shop.py`, then `intemporal ...` from the terminal.

A test writes a script from a template into its `tmp_path` under a unique module name (so
importing it later never meets another test's module), runs it with this interpreter,
drives the command line in other processes, and imports the script as an application would.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

# A script's `__main__` block ends with this: wait (with a deadline) until run "waits" waits.
UNTIL_WAITING = """\
        deadline = time.monotonic() + 10
        while engine.get_run("waits").status != "waiting" and time.monotonic() < deadline:
            time.sleep(0.01)
"""


def run_python(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `python ARGS...` in `cwd` with this interpreter and this test's import path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@dataclass
class Script:
    """A script written into a test's folder, with the store its `__main__` block uses."""

    name: str
    folder: Path
    store: Path

    def run(self) -> subprocess.CompletedProcess[str]:
        """`python NAME.py`, as a user runs it; fails the test if it exits non-zero."""
        done = run_python([f"{self.name}.py"], self.folder)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def terminal(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`intemporal --store STORE ARGS...` in another process, from the script's folder."""
        return run_python(["-m", "intemporal.cli", "--store", str(self.store), *args], self.folder)

    @contextlib.contextmanager
    def imported(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
        """The script imported as a module (`import NAME`), as an application would."""
        monkeypatch.syspath_prepend(str(self.folder))
        try:
            yield __import__(self.name)
        finally:
            sys.modules.pop(self.name, None)


def write_script(tmp_path: Path, prefix: str, template: str) -> Script:
    """Write `template` (formatted with `name`, `store`, `until_waiting`) as a new script."""
    name = f"{prefix}_{os.urandom(4).hex()}"
    store = tmp_path / "store"
    text = template.format(name=name, store=str(store), until_waiting=UNTIL_WAITING)
    (tmp_path / f"{name}.py").write_text(text)
    return Script(name, tmp_path, store)
