"""Code a journal names (issue 13): reading a store never loads it, resuming loads it only
if it passes the rule in `intemporal/trust.py`, or when the user names it.

Each crafted journal names code (a folder to import a module from, or a script) whose only
effect is to create a marker file in the test's temp folder; the tests assert it was NOT
created, and a control asserts that the same check sees it when the code is loaded.

| kind of named code                       | refused when                                   |
| ---------------------------------------- | ---------------------------------------------- |
| a script (`ref.script`)                  | writable by others, a symlink, another owner   |
| a folder to import from (`ref.path`)     | always: never added to `sys.path`              |
| the journal's copy (`ref.dill`)          | the engine has `codec="json"`                  |
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from intemporal import Engine, FileStore, RunStatus, WorkflowNotFound
from intemporal.trust import untrusted

PLANT = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


def craft(store: Path, run_id: str, ref: dict[str, object]) -> None:
    """A pending run whose first event names `ref` as its code."""
    first: dict[str, object] = {
        "type": "run_started",
        "run_id": run_id,
        "workflow": "planted",
        "args": [],
        "kwargs": {},
        "ref": ref,
        "queue": None,
        "ts": round(time.time(), 6),
    }
    assert FileStore(store).create(run_id, first)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "intemporal"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "intemporal.cli"]
    return subprocess.run(
        [*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


class Planted:
    """A folder `evil/` holding a module and a script that each create `marker` when loaded."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp, self.store, self.marker = tmp_path, tmp_path / "store", tmp_path / "marker"
        self.folder = tmp_path / "evil"
        self.folder.mkdir(mode=0o700)
        self.module = self.folder / "planted_mod.py"
        self.script = self.folder / "planted_script.py"
        for path in (self.module, self.script):
            path.write_text(PLANT.format(marker=str(self.marker)))
            path.chmod(0o600)
        craft(self.store, "by-module", {"module": "planted_mod", "qualname": "wf",
                                        "script": None, "path": str(self.folder)})  # fmt: skip
        craft(self.store, "by-script", {"module": "__main__", "qualname": "wf",
                                        "script": str(self.script)})  # fmt: skip

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli("--store", str(self.store), *args, cwd=self.tmp)


@pytest.fixture
def planted(tmp_path: Path) -> Planted:
    return Planted(tmp_path)


def test_list_and_show_never_load_the_code_a_journal_names(planted: Planted) -> None:
    planted.module.chmod(0o600)  # trusted files even: reading a store loads no code at all
    for args in (["list"], ["list", "--json"], ["show", "by-module"], ["show", "by-script"],
                 ["show", "by-script", "--json"]):  # fmt: skip
        done = planted.run(*args)
        assert done.returncode == 0, done.stderr
        assert not planted.marker.exists(), args
    with Engine(planted.store, worker=False) as client:
        client.get_run("by-module"), client.list_runs(), client.history("by-script")
    assert not planted.marker.exists()


def _make_writable_by_others(p: Planted, target: str) -> None:
    if target == "file":
        p.module.chmod(0o666)
        p.script.chmod(0o666)
    elif target == "folder":
        p.folder.chmod(0o777)
    elif target == "symlink":
        for path in (p.script, p.module):
            real = p.tmp / f"real_{path.name}"
            path.rename(real)
            path.symlink_to(real)
    elif target == "owner":
        for path in (p.script, p.module):
            os.chown(path, 65534, 65534)


RULE_BREAKS = [
    pytest.param("file", id="writable-by-others"),
    pytest.param("folder", id="folder-writable-by-others"),
    pytest.param("symlink", id="symlink"),
    pytest.param(
        "owner",
        id="another-owner",
        marks=pytest.mark.skipif(
            not hasattr(os, "getuid") or os.getuid() != 0, reason="chown to another user needs root"
        ),
    ),
]


@pytest.mark.parametrize("target", RULE_BREAKS)
def test_resume_refuses_a_script_a_journal_names_that_fails_the_rule(
    planted: Planted, target: str
) -> None:
    # Given a journal naming a script that others may have written
    _make_writable_by_others(planted, target)

    # When it is resumed from the terminal
    done = planted.run("resume", "by-script")

    # Then nothing is loaded, the message says why and how to confirm, the run is untouched
    assert not planted.marker.exists()
    assert done.returncode == 1
    out = " ".join((done.stdout + done.stderr).split())
    assert "refusing to load script" in out and "named by a journal" in out
    assert f"--import {planted.script}" in out and "Traceback" not in out
    assert FileStore(planted.store).summary("by-script").status is RunStatus.PENDING


@pytest.mark.parametrize("target", [None, *RULE_BREAKS])
def test_resume_never_imports_from_a_folder_a_journal_names(
    planted: Planted, target: str | None
) -> None:
    # Given a journal naming a folder to import its module from (trusted or not)
    if target is not None:
        _make_writable_by_others(planted, target)

    done = planted.run("resume", "by-module")

    # Then the folder is not added to sys.path: nothing is imported, the message says how
    assert not planted.marker.exists()
    assert done.returncode == 1
    out = " ".join((done.stdout + done.stderr).split())
    assert f"refusing to add {planted.folder}" in out and "PYTHONPATH" in out
    assert FileStore(planted.store).summary("by-module").status is RunStatus.PENDING


def test_code_that_passes_the_rule_is_loaded_control(planted: Planted) -> None:
    # The same journals, with the script only its owner may write, and the module's folder
    # on PYTHONPATH: resume loads them (the marker proves the checks above would see a load)
    done = planted.run("resume", "by-script")
    assert planted.marker.exists(), done.stdout + done.stderr
    assert done.returncode == 1  # it defines no workflow `wf`: not found, not failed
    assert FileStore(planted.store).summary("by-script").status is RunStatus.PENDING

    planted.marker.unlink()
    env = {**os.environ, "PYTHONPATH": str(planted.folder)}
    exe = Path(sys.executable).parent / "intemporal"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "intemporal.cli"]
    subprocess.run([*cmd, "--store", str(planted.store), "resume", "by-module"], env=env,
                   cwd=planted.tmp, capture_output=True, timeout=60, check=False)  # fmt: skip
    assert planted.marker.exists()


def test_the_user_confirms_a_refused_script_with_import(planted: Planted) -> None:
    planted.script.chmod(0o666)
    done = planted.run("resume", "by-script", "--import", str(planted.script))
    assert planted.marker.exists(), done.stdout + done.stderr


def test_a_json_engine_never_loads_the_journals_copy_of_a_function(tmp_path: Path) -> None:
    # Given a run whose only code is the journal's copy (its script is gone)
    store = tmp_path / "store"
    src = f"""
import intemporal

@intemporal.workflow(name="copied")
def wf():
    import pathlib
    pathlib.Path({str(tmp_path / "marker")!r}).write_text("ran")
    return 1

with intemporal.Engine({str(store)!r}, worker=False) as e:
    e.start(wf, run_id="copied")
"""
    script = tmp_path / "gone.py"
    script.write_text(src)
    subprocess.run([sys.executable, str(script)], check=True, timeout=60, cwd=tmp_path)
    script.unlink()

    # When an engine with codec="json" resumes it: the copy is dill, so it is refused
    with Engine(store, codec="json") as engine, pytest.raises(WorkflowNotFound) as info:
        engine.resume("copied")
    assert "codec='json'" in str(info.value)
    assert not (tmp_path / "marker").exists()

    # While codec="auto" trusts the store as code, and runs it
    with Engine(store) as engine:
        assert engine.resume("copied").result(timeout=10) == 1
    assert (tmp_path / "marker").exists()


def test_the_rule_itself(tmp_path: Path) -> None:
    mine = tmp_path / "mine.py"
    mine.write_text("")
    mine.chmod(0o644)
    assert untrusted(str(mine)) is None
    assert untrusted(str(tmp_path), folder=True) is None
    mine.chmod(0o646)
    assert "writable by others" in str(untrusted(str(mine)))
    link = tmp_path / "link.py"
    link.symlink_to(mine)
    assert untrusted(str(link)) == "it is a symbolic link"
    assert untrusted(str(tmp_path), folder=False) == "it is not a regular file"
    assert "cannot be examined" in str(untrusted(str(tmp_path / "absent.py")))
    sticky = tmp_path / "shared"
    sticky.mkdir()
    (sticky / "s.py").write_text("")
    sticky.chmod(0o1777)  # like /tmp: others may write the folder, not replace my file
    assert untrusted(str(sticky / "s.py")) is None
    sticky.chmod(0o777)
    assert "its folder" in str(untrusted(str(sticky / "s.py")))
