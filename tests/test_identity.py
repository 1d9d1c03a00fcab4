"""A run always resumes the workflow it was started with (issue 12, section 1).

| kind of fault                                    | tests                                        |
| ------------------------------------------------ | -------------------------------------------- |
| two modules define a workflow of the same name   | test_the_same_run_id_with_another_modules_*  |
|                                                  | test_a_pending_run_resumes_its_own_module_*  |
| the same display name (`name=`) in two modules   | test_a_display_name_shared_by_two_modules_*  |
| a second definition under a taken name           | test_a_second_workflow_or_activity_under_*   |
| a run a user put where a child run goes          | test_a_child_id_taken_by_*                   |
"""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import intemporal
from intemporal import Engine, FileStore, RunConflict, RunStatus

MODULE = """
import intemporal

@intemporal.activity
def {act}(x):
    return f"{letter}{{x}}"

@intemporal.activity
def fetch(x):
    return {sign}x

@intemporal.workflow
def checkout(x):
    return {body}

@intemporal.workflow(name="shop.pay")
def pay(x):
    return {act}(x)
"""
# The issue's two modules: both define `checkout` (and `shop.pay`, and an activity `fetch`)
A = MODULE.format(act="step", letter="A", sign="", body="step(x)")
B = MODULE.format(act="other", letter="B", sign="-", body="other(x) + other(x)")


class Pkg:
    """A real package `name` in `root` with modules `a` and `b`, both defining `checkout`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = f"pkg_{uuid.uuid4().hex[:8]}"  # a fresh package per test: no import cache
        folder = root / self.name
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("")
        (folder / "a.py").write_text(textwrap.dedent(A))
        (folder / "b.py").write_text(textwrap.dedent(B))

    def load(self, module: str) -> ModuleType:
        return importlib.import_module(f"{self.name}.{module}")

    def python(self, code: str, cwd: Path) -> str:
        """Run `code` in a new interpreter that can import the package; return its stdout."""
        env_code = f"import sys\nsys.path.insert(0, {str(self.root)!r})\n" + textwrap.dedent(code)
        done = subprocess.run(
            [sys.executable, "-c", env_code], cwd=cwd, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


@pytest.fixture
def pkg(tmp_path: Path) -> Iterator[Pkg]:
    package = Pkg(tmp_path / "src")
    sys.path.insert(0, str(package.root))
    try:
        yield package
    finally:
        sys.path.remove(str(package.root))
        for name in [m for m in sys.modules if m.split(".")[0] == package.name]:
            del sys.modules[name]


def test_the_same_run_id_with_another_modules_checkout_raises_run_conflict(
    pkg: Pkg, engine: Engine
) -> None:
    # Given a process that imports both modules, and a run of a.checkout
    a, b = pkg.load("a"), pkg.load("b")
    assert engine.run(a.checkout, 1, run_id="r") == "A1"

    # When the same id is started with b.checkout, which has the same name
    with pytest.raises(RunConflict) as info:
        engine.run(b.checkout, 1, run_id="r")
    with pytest.raises(RunConflict):
        engine.start(b.checkout, 1, run_id="r")

    # Then the error names both import paths, and the run is a.checkout's still
    assert f"{pkg.name}.a:checkout" in str(info.value)
    assert f"{pkg.name}.b:checkout" in str(info.value)
    assert engine.run(a.checkout, 1, run_id="r") == "A1"  # idempotent start: the same code
    assert engine.get_run("r").result == "A1"


def test_a_display_name_shared_by_two_modules_is_not_an_identity(pkg: Pkg, engine: Engine) -> None:
    a, b = pkg.load("a"), pkg.load("b")
    assert engine.run(a.pay, 2, run_id="p") == "A2"
    assert engine.get_run("p").workflow == "shop.pay"  # name= stays the display name

    with pytest.raises(RunConflict):
        engine.run(b.pay, 2, run_id="p")
    assert engine.list_runs(workflow="shop.pay")[0].run_id == "p"


def test_a_pending_run_resumes_its_own_module_in_a_process_importing_both(
    pkg: Pkg, tmp_path: Path
) -> None:
    # Given a pending run of a.checkout, recorded by a client that imports only `a`
    store = tmp_path / "store"
    pkg.python(
        f"""
        import intemporal
        from {pkg.name} import a
        with intemporal.Engine({str(store)!r}, worker=False) as e:
            e.start(a.checkout, 5, run_id="r5")
            e.start(a.pay, 6, run_id="r6")
        """,
        tmp_path,
    )
    assert FileStore(store).summary("r5").status is RunStatus.PENDING

    # When processes that import a then b (and b then a) resume them
    for order in ("a, b", "b, a"):
        out = pkg.python(
            f"""
            import intemporal
            from {pkg.name} import {order}
            with intemporal.Engine({str(store)!r}) as e:
                print(e.resume("r5").result(timeout=30), e.resume("r6").result(timeout=30))
            """,
            tmp_path,
        )
        # Then each run executes a's code, never b's ('B5B5')
        assert out == "A5 A6"


def test_a_pending_run_resumes_its_own_module_when_only_the_other_is_imported(
    pkg: Pkg, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    with Engine(store, worker=False) as client:
        client.start(pkg.load("a").checkout, 7, run_id="r7")
    out = pkg.python(
        f"""
        import intemporal
        from {pkg.name} import b
        with intemporal.Engine({str(store)!r}) as e:
            print(e.resume("r7").result(timeout=30))
        """,
        tmp_path,
    )
    assert out == "A7"


def test_a_second_workflow_or_activity_under_a_taken_name_logs_a_warning(
    pkg: Pkg, caplog: pytest.LogCaptureFixture
) -> None:
    pkg.load("a")
    with caplog.at_level(logging.WARNING, logger="intemporal"):
        pkg.load("b")
    lines = [r.getMessage() for r in caplog.records]
    # Both workflows called `checkout`, both called `shop.pay`, and both activities `fetch`
    for name, qualname in (("checkout", "checkout"), ("shop.pay", "pay"), ("fetch", "fetch")):
        a, b = f"{pkg.name}.a:{qualname}", f"{pkg.name}.b:{qualname}"
        assert any(f"name {name!r} is taken" in m and a in m and b in m for m in lines), lines
    # Names used once in the package (`step` in a, `other` in b) get no warning between a and b
    between = [m for m in lines if f"{pkg.name}.a:" in m and f"{pkg.name}.b:" in m]
    assert len(between) == 3, between


def test_redefining_a_workflow_at_the_same_place_is_not_a_conflict(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def made() -> int:
        return 1

    with caplog.at_level(logging.WARNING, logger="intemporal"):
        first = intemporal.workflow(name="identity.same-place")(made)
        second = intemporal.workflow(name="identity.same-place")(made)
    assert first is not second and not caplog.records


# -- child runs -------------------------------------------------------------------------------------
@intemporal.workflow(name="identity.kid")
def kid(x: int) -> int:
    return x * 10


@intemporal.workflow(name="identity.stranger")
def stranger(x: int) -> int:
    return -x


@intemporal.workflow(name="identity.mom")
def mom(x: int) -> int:
    return kid(x) + 1


@intemporal.workflow(name="identity.mom-submits")
def mom_submits(x: int) -> int:
    return int(intemporal.submit(kid, x).result()) + 1


@pytest.mark.parametrize("parent", [mom, mom_submits])
@pytest.mark.parametrize(
    "squatter",
    [
        pytest.param((kid, 99), id="same-workflow-started-by-a-user"),
        pytest.param((stranger, 99), id="another-workflow"),
    ],
)
def test_a_child_id_taken_by_a_run_that_is_not_this_parents_child_raises_run_conflict(
    engine: Engine, parent: Any, squatter: tuple[Any, int]
) -> None:
    # Given a run a user started at the id the parent's first child will get
    wf, arg = squatter
    engine.run(wf, arg, run_id="m/1")
    before = engine.history("m/1")

    # When the parent runs, its child would be "m/1"
    with pytest.raises(RunConflict) as info:
        engine.run(parent, 4, run_id="m")

    # Then it gets RunConflict, never the other run's result, and that run is untouched
    assert "m/1" in str(info.value)
    assert engine.history("m/1") == before


def test_a_child_id_taken_by_another_parents_child_raises_run_conflict(
    store: intemporal.Store,
) -> None:
    # Given "m/1" recorded as the child of another run (a copied or renamed journal)
    from intemporal.runs import first_event

    first = first_event("m/1", kid, (4,), {}, "auto", None, {}, parent="elsewhere")
    assert store.create("m/1", first)
    with Engine(store, threads=2) as engine:
        with pytest.raises(RunConflict) as info:
            engine.run(mom, 4, run_id="m")
    assert "elsewhere" in str(info.value)


# -- the display name as the last resort --------------------------------------------------------------
def _lost_run(store: intemporal.Store, run_id: str, name: str) -> None:
    """A pending run of workflow `name` whose recorded module no longer exists."""
    first = {
        "type": "run_started",
        "run_id": run_id,
        "workflow": name,
        "args": [2],
        "kwargs": {},
        "ref": {"module": "identity_gone_module", "qualname": "moved", "script": None},
        "queue": None,
        "ts": 1.0,
    }
    assert store.create(run_id, first)


def test_a_unique_display_name_is_the_last_resort_with_a_warning(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    @intemporal.workflow(name="identity.moved-once")
    def moved(x: int) -> int:
        return x + 40

    _lost_run(engine.store, "lost-1", "identity.moved-once")
    with caplog.at_level(logging.WARNING, logger="intemporal"):
        assert engine.resume("lost-1").result(timeout=10) == 42
    assert any(
        "identity_gone_module:moved" in r.getMessage() and "moved" in r.getMessage()
        for r in caplog.records
    )


def test_an_ambiguous_display_name_is_never_guessed(engine: Engine) -> None:
    def one(x: int) -> int:
        return x

    def two(x: int) -> int:
        return -x

    intemporal.workflow(name="identity.moved-twice")(one)
    intemporal.workflow(name="identity.moved-twice")(two)
    _lost_run(engine.store, "lost-2", "identity.moved-twice")

    with pytest.raises(intemporal.WorkflowNotFound) as info:
        engine.resume("lost-2")

    assert "identity_gone_module:moved" in str(info.value) and "--import" in str(info.value)
    assert ".one" in str(info.value) and ".two" in str(info.value)
    assert engine.get_run("lost-2").status is RunStatus.PENDING


# -- a script run as `python shop.py` and imported as `import shop` is one workflow -------------------
SHOP = """
import sys
import intemporal

@intemporal.activity
def double(x):
    return 2 * x

@intemporal.workflow
def checkout(x):
    return double(x)

if __name__ == "__main__":
    with intemporal.Engine(sys.argv[1], worker=False) as e:
        e.start(checkout, 21, run_id=sys.argv[2])
"""


def test_a_script_and_the_same_file_imported_as_a_module_are_one_workflow(tmp_path: Path) -> None:
    # Given a pending run started by `python shop.py`
    app, store = tmp_path / "app", tmp_path / "store"
    app.mkdir()
    (app / "shop.py").write_text(SHOP)
    (app / "other.py").write_text(SHOP)  # the same code in another file: another workflow
    subprocess.run([sys.executable, "shop.py", str(store), "s1"], cwd=app, check=True, timeout=60)

    # When an application that imports the script as a module starts the same id
    code = f"""
import intemporal, shop, other
with intemporal.Engine({str(store)!r}) as e:
    print(e.start(shop.checkout, 21, run_id="s1").result(timeout=30))
    try:
        e.start(other.checkout, 21, run_id="s1")
    except intemporal.RunConflict as exc:
        print("conflict:", exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=app, capture_output=True, text=True, timeout=60
    )

    # Then it is the same run (resumed, not a conflict), and another file's checkout conflicts
    assert done.returncode == 0, done.stderr
    first, conflict = done.stdout.strip().splitlines()
    assert first == "42"
    assert "__intemporal_script_" not in done.stderr  # resumed with `shop`, not a second load
    assert "conflict:" in conflict and "other" in conflict and "shop.py" in conflict
