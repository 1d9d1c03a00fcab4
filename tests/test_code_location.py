"""Code that cannot be found is not a workflow failure (issue 12, section 5).

A run started from a script keeps, in its first event, the script's path and a copy of
the workflow function with the globals it uses. These tests move or delete the script and
resume from the terminal, in a new process, as a user would.

| kind                                                  | tests                                   |
| ----------------------------------------------------- | --------------------------------------- |
| script moved or deleted: the copy runs with globals   | test_a_deleted_script_*_from_its_copy   |
| no usable copy: the run stays as it was, resumable    | test_without_a_usable_copy_*            |
| a copy recorded without its globals (older journals)  | test_a_copy_lacking_its_globals_*       |
| the user points at the moved script (--import PATH)   | test_without_a_usable_copy_*            |
| a parent from its copy replays its own child          | test_a_parent_resumed_from_its_copy_*   |
| one run's copy never serves another run               | test_a_copy_resumes_its_own_run_only    |
| loading a script runs its top level: a warning        | test_resume_warns_when_loading_a_*      |
| README and samples keep their start under __main__    | test_every_example_starts_runs_*        |
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from intemporal import Engine, FileStore, RunStatus, WorkflowNotFound

ROOT = Path(__file__).resolve().parent.parent

SHOP = """
import json
import sys
import intemporal
{extra}
FEE = 3


def total(x):
    return x + FEE


@intemporal.activity
def charge(x):
    {use}
    return total(x)


@intemporal.workflow
def checkout(x):
    return [charge(x), charge(x + 1), intemporal.info().workflow, json.dumps(FEE)]

{top}
if __name__ == "__main__":
    with intemporal.Engine(sys.argv[1], worker=False) as e:
        e.start(checkout, 1, run_id=sys.argv[2])
    if len(sys.argv) > 3:  # write a copy as older versions did: without its globals
        from intemporal import codec

        path = sys.argv[1] + "/" + sys.argv[2] + ".jsonl"
        lines = open(path).read().splitlines()
        first = json.loads(lines[0])
        first["ref"]["dill"] = codec.dill_copy(checkout.fn)
        open(path, "w").write("\\n".join([json.dumps(first), *lines[1:]]) + "\\n")
"""

DONE = [4, 5, "checkout", "3"]


def intemporal_cmd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "intemporal"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "intemporal.cli"]
    return subprocess.run(
        [*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def start_from_script(
    tmp_path: Path,
    run_id: str,
    *,
    extra: str = "",
    use: str = "pass",
    top: str = "",
    old: bool = False,
) -> Path:
    """Run `python shop.py STORE RUN_ID` (it records a pending run); return the script's path."""
    folder = tmp_path / "app"
    folder.mkdir(exist_ok=True)
    script = folder / "shop.py"
    script.write_text(textwrap.dedent(SHOP).format(extra=extra, use=use, top=top))
    argv = [sys.executable, str(script), str(tmp_path / "store"), run_id, *(["old"] if old else [])]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return script


def status(tmp_path: Path, run_id: str) -> RunStatus:
    return FileStore(tmp_path / "store").summary(run_id).status


@pytest.mark.parametrize("how", ["deleted", "moved"])
def test_a_deleted_script_still_resumes_from_its_copy(tmp_path: Path, how: str) -> None:
    # Given a pending run started by `python shop.py`, whose script is then deleted or moved
    script = start_from_script(tmp_path, "order-1")
    if how == "deleted":
        script.unlink()
    else:
        script.rename(tmp_path / "elsewhere.py")

    # When it is resumed from the terminal, in another folder
    done = intemporal_cmd("--store", str(tmp_path / "store"), "resume", "order-1", cwd=tmp_path)

    # Then the copy runs, with the globals it uses (a module, a helper, a constant, activities)
    assert done.returncode == 0, done.stdout + done.stderr
    assert status(tmp_path, "order-1") is RunStatus.COMPLETED
    assert FileStore(tmp_path / "store").summary("order-1").result == DONE


UNPICKLABLE = "TICKETS = (n for n in range(10**6))  # a generator: no copy can hold it\n"


def test_without_a_usable_copy_the_run_stays_resumable_and_the_message_says_how(
    tmp_path: Path,
) -> None:
    # Given a run whose workflow reaches a global no copy can hold, and whose script moved
    script = start_from_script(tmp_path, "order-2", extra=UNPICKLABLE, use="next(TICKETS)")
    moved = tmp_path / "moved" / "shop.py"
    moved.parent.mkdir()
    script.rename(moved)
    store = str(tmp_path / "store")

    # When it is resumed
    done = intemporal_cmd("--store", store, "resume", "order-2", cwd=tmp_path)

    # Then it is not failed: left pending, with a message naming the script and --import
    assert done.returncode == 1
    out = done.stdout + done.stderr
    assert "Traceback" not in out
    assert "WorkflowNotFound" in out and str(script) in out and "(missing)" in out
    assert "--import" in out
    assert status(tmp_path, "order-2") is RunStatus.PENDING
    gc = intemporal_cmd(
        "--store", store, "gc", "--older-than", "0s", "--status", "failed", cwd=tmp_path
    )
    assert "removed 0 run(s)" in gc.stdout

    # And pointing at the moved script resumes it
    done = intemporal_cmd(
        "--store", store, "resume", "order-2", "--import", str(moved), cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert FileStore(tmp_path / "store").summary("order-2").result == DONE


def test_a_copy_lacking_its_globals_is_not_run_and_the_run_is_not_failed(tmp_path: Path) -> None:
    # Given a run recorded with a copy made without its globals, and its script deleted
    start_from_script(tmp_path, "order-3", old=True).unlink()

    done = intemporal_cmd("--store", str(tmp_path / "store"), "resume", "order-3", cwd=tmp_path)

    # Then the copy is refused, naming what it lacks, and the run stays pending
    assert done.returncode == 1
    assert "lacks the globals" in done.stdout and "charge" in done.stdout
    assert status(tmp_path, "order-3") is RunStatus.PENDING


TOP = """
with intemporal.Engine("{store}", worker=False) as _e:
    print("started", _e.start(checkout, 9).run_id)  # at the top level: runs on every load
"""


def test_resume_warns_when_loading_a_script_starts_runs(tmp_path: Path) -> None:
    # Given a script that starts a run at its top level, outside `if __name__ == "__main__":`
    store = tmp_path / "store"
    start_from_script(tmp_path, "order-4", top=TOP.format(store=store))
    before = {info.run_id for info in FileStore(store).list_runs()}

    # When `intemporal resume` loads it to find the workflow
    done = intemporal_cmd("--store", str(store), "resume", "order-4", cwd=tmp_path)

    # Then it warns, naming the run the top level started
    assert done.returncode == 0, done.stdout + done.stderr
    new = {info.run_id for info in FileStore(store).list_runs()} - before - {"order-4"}
    assert len(new) == 1
    warning = " ".join(done.stderr.split())
    assert "started 1 run(s)" in warning and new.pop() in warning
    assert 'if __name__ == "__main__":' in warning


# -- the examples -----------------------------------------------------------------------------------
STARTS = {"run", "start", "resume", "recover", "run_async", "Engine", "AsyncEngine"}


def _starts_work(node: ast.AST) -> bool:
    """Whether `node` calls Engine(...), or .run/.start/.resume/.recover on something."""
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            func = call.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in STARTS:
                return True
    return False


def _examples() -> list[tuple[str, str]]:
    out = [(f"samples/{p.name}", p.read_text()) for p in sorted((ROOT / "samples").glob("*.py"))]
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    out += [(f"README.md python block {i + 1}", block) for i, block in enumerate(blocks)]
    return out


def _is_main_guard(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "__name__" in ast.unparse(node.test)


@pytest.mark.parametrize("where,source", _examples(), ids=[w for w, _ in _examples()])
def test_every_example_starts_runs_only_under_a_main_guard(where: str, source: str) -> None:
    # Loading a script to resume one of its runs executes its top level: an example that
    # starts a run there would start (and charge) a new order on every resume.
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if _is_main_guard(node):
            continue
        code = ast.unparse(node)[:120]
        assert not _starts_work(node), f"{where} starts work at its top level: {code}"


def test_the_example_check_catches_a_start_at_the_top_level() -> None:
    with pytest.raises(AssertionError):
        test_every_example_starts_runs_only_under_a_main_guard(
            "x", "with intemporal.Engine() as e:\n    e.run(wf)\n"
        )
    test_every_example_starts_runs_only_under_a_main_guard(
        "x", 'if __name__ == "__main__":\n    with intemporal.Engine() as e:\n        e.run(wf)\n'
    )


FAMILY = """
import sys
import time

import intemporal


@intemporal.workflow(name="family.kid")
def kid(x):
    return intemporal.stub(lambda y: y + y)(x)  # an activity made on the spot


@intemporal.workflow
def parent(x):
    first = kid(x)  # a child run, finished before the parent parks
    intemporal.sleep(1.5)  # long enough to park the run: the script exits with it waiting
    return [first, kid(x + 1)]


if __name__ == "__main__":
    with intemporal.Engine(sys.argv[1]) as e:
        e.start(parent, 5, run_id="fam")
        deadline = time.monotonic() + 30
        while e.get_run("fam").status != "waiting" and time.monotonic() < deadline:
            time.sleep(0.01)
"""


def test_a_parent_resumed_from_its_copy_takes_its_own_child_again(tmp_path: Path) -> None:
    # Given a parent parked after its first child finished, and its script deleted
    script, store = tmp_path / "family.py", tmp_path / "store"
    script.write_text(FAMILY)
    subprocess.run([sys.executable, str(script), str(store)], check=True, timeout=60)
    assert FileStore(store).summary("fam").status is RunStatus.WAITING
    script.unlink()

    # When it is resumed from the journal's copies (the parent's, and the child it holds)
    done = intemporal_cmd("--store", str(store), "resume", "fam", cwd=tmp_path)

    # Then the recorded child is recognised as its own (no RunConflict) and the run completes
    assert done.returncode == 0, done.stdout + done.stderr
    assert FileStore(store).summary("fam").result == [10, 12]


def test_a_copy_resumes_its_own_run_only(tmp_path: Path) -> None:
    # Given run A whose code is only the journal's copy (its script is gone), and run B of
    # a workflow of the same name whose module is gone and that has no copy
    name = f"copy_only_{uuid.uuid4().hex[:8]}"  # its qualname and its name
    store, script = tmp_path / "store", tmp_path / "a.py"
    script.write_text(
        "import sys\nimport intemporal\n\n"
        f"@intemporal.workflow\ndef {name}(x):\n    return f'A{{x}}'\n\n"
        "if __name__ == '__main__':\n"
        "    with intemporal.Engine(sys.argv[1], worker=False) as e:\n"
        f"        e.start({name}, 1, run_id='a')\n"
    )
    subprocess.run([sys.executable, str(script), str(store)], check=True, timeout=60)
    script.unlink()
    first = dict(FileStore(store).read("a")[0], run_id="b")
    first["ref"] = {"module": "gone_module_b", "qualname": name, "script": None}
    assert FileStore(store).create("b", first)

    with Engine(store) as engine:
        # When both are resumed by one process, A first
        assert engine.resume("a").result(timeout=10) == "A1"
        # Then B never runs A's copy: its code is not found, and it stays pending
        with pytest.raises(WorkflowNotFound):
            engine.resume("b")
        assert engine.get_run("b").status is RunStatus.PENDING
