"""The baseline: DBOS Transact on SQLite, in a virtualenv of its own (bench/.venv-dbos).

`ensure()` creates the virtualenv with the current interpreter and `pip install dbos`
when it is missing; `run()` runs `../shared/bench/bench_dbos.py` (found beside the repo)
there and returns its final JSON. DBOS is never a dependency of the project itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV = BENCH / ".venv-dbos"
#: shared/ lies beside the repo: /work/shared for /work/main, and beside CI's clone too
SHARED_BENCH = REPO.parent / "shared" / "bench"
if not SHARED_BENCH.exists() and (REPO / ".git").is_file():  # a git worktree elsewhere:
    # shared/ lies beside the main checkout (.git/worktrees/NAME -> .git -> main -> ..)
    _gitdir = Path((REPO / ".git").read_text().split("gitdir:", 1)[-1].strip())
    SHARED_BENCH = _gitdir.parent.parent.parent.parent / "shared" / "bench"


def python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _works() -> bool:
    py = python()
    if not py.exists():
        return False
    probe = subprocess.run([str(py), "-c", "import dbos"], capture_output=True, timeout=120)
    return probe.returncode == 0


def ensure(log=print) -> tuple[Path | None, str]:
    """Return (the DBOS venv's python, "") or (None, why DBOS is not available)."""
    script = SHARED_BENCH / "bench_dbos.py"
    if not script.exists():
        return None, f"{script} not found (shared/ must lie beside the repo)"
    try:
        if _works():
            return python(), ""
        log(f"installing DBOS into {VENV.relative_to(REPO)} (once; takes a minute) ...")
        if not python().exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(VENV)],
                check=True,
                capture_output=True,
                timeout=300,
            )
        pip = subprocess.run(
            [str(python()), "-m", "pip", "install", "--quiet", "dbos"],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if pip.returncode != 0:
            tail = (pip.stderr or pip.stdout).strip().splitlines()[-3:]
            return None, "pip install dbos failed: " + " | ".join(tail)
        if not _works():
            return None, "dbos was installed but `import dbos` fails"
        return python(), ""
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"cannot set up DBOS: {exc}"


def last_json(text: str) -> dict:
    """The last JSON object a bench script printed (one line, or indented over many)."""
    lines = text.strip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("{"):
            try:
                return json.loads("\n".join(lines[i:]))
            except ValueError:
                continue
    raise ValueError("no JSON object in the output:\n" + text[-2000:])


def run(py: Path, workdir: Path, args: list[str], timeout: float = 1800) -> dict:
    """Run bench_dbos.py with `args` in `workdir` (a copy of the script keeps its temp files there)."""
    script = workdir / "bench_dbos.py"
    if not script.exists():
        shutil.copy(SHARED_BENCH / "bench_dbos.py", script)
    out = subprocess.run(
        [str(py), str(script), *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench_dbos.py {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return last_json(out.stdout)
