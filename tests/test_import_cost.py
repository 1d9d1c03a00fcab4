"""`import intemporal` loads nothing the caller does not use (issue 18: ≤ 40 ms).

Each public name loads its module on first use; what is checked here is which modules a
fresh interpreter holds, not a timing (`make bench-store` times it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("filelock", "psycopg", "dill", "typer", "rich", "opentelemetry", "sqlite3")
USED = ("dill", "sqlite3")  # a workflow typed on `python -c` is copied with dill; the index


def _loaded(tmp_path: Path, code: str) -> list[str]:
    probe = (
        f"import sys\n{code}\n"
        f"print(__import__('json').dumps(sorted(m for m in sys.modules "
        f"if m.split('.')[0] in {HEAVY!r} or m.startswith('intemporal'))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


def test_import_intemporal_loads_only_its_own_init(tmp_path: Path) -> None:
    assert _loaded(tmp_path, "import intemporal") == ["intemporal"]


def test_defining_and_running_a_workflow_loads_no_optional_dependency(tmp_path: Path) -> None:
    code = (
        "import intemporal\n"
        "@intemporal.activity\ndef step(x): return x + 1\n"
        "@intemporal.workflow\ndef wf(x): return step(x)\n"
        f"with intemporal.Engine({str(tmp_path / 's')!r}) as e: assert e.run(wf, 1) == 2\n"
    )
    loaded = _loaded(tmp_path, code)
    # dill is left out: a workflow typed on `python -c` has no file, so a copy of its code
    # is kept with dill (one defined in a module or a script is not); sqlite3 keeps the
    # file store's run index
    unused = [m for m in loaded if m.split(".")[0] in HEAVY and not m.startswith(USED)]
    assert not unused, loaded
    assert "intemporal.store.postgres" not in loaded


@pytest.mark.parametrize(
    "name", ["Engine", "workflow", "RunNotFound", "PostgresStore", "testing", "Secret"]
)
def test_every_public_name_still_resolves(name: str) -> None:
    import intemporal

    assert name in intemporal.__all__
    assert getattr(intemporal, name) is not None
    assert name in dir(intemporal)


def test_an_unknown_name_is_an_attribute_error() -> None:
    import intemporal

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        intemporal.nope  # noqa: B018


def test_every_exported_name_resolves() -> None:
    import intemporal

    assert [n for n in intemporal.__all__ if getattr(intemporal, n, None) is None] == []
