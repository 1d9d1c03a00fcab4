"""A store never writes (or reads) outside itself, and says when it cannot be trusted (issue 13).

The file-system part of issue 13, each bullet a test:

    what                                            test
    ----------------------------------------------  ------------------------------------------
    `.doorbell` a link: `start --detach` truncated  test_doorbell_link_is_refused_by_start_detach
      the file it points to
    an inbox a link: `signal` appended outside      test_inbox_link_is_refused_by_signal
    a linked folder: `start --run-id esc/r2` wrote  test_linked_child_folder_is_refused_by_start
      a journal outside
    the three, typed in processes of their own      test_the_three_links_through_the_installed_command
    the same kind, every file the store opens       test_no_store_file_is_opened_through_a_link
      (journal, inbox, doorbell, engine lock, child
      folder, at any depth), through the API
    folders 0700, files 0600, whatever the umask    test_store_folders_are_0700_and_files_0600
    a store others may write, or another user owns: test_untrusted_store_warns_once_and_strict_refuses,
      a warning once; strict refuses it              test_cli_warns_on_stderr_and_strict_refuses
    credentials in a store URL are never printed    test_redact_*, test_cli_never_prints_*

Every "outside" file holds bytes that must be there, unchanged, after the attempt.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import intemporal
from intemporal import Engine, FileStore, StoreUnavailable, UnsafeStore
from intemporal.cli import app
from intemporal.store import open_store, redact

PRECIOUS = b"precious data that must survive\n"
BIG = PRECIOUS * (1 + (1 << 20) // len(PRECIOUS))  # past the doorbell's size: truncated then


@intemporal.activity
def sec_step(x: int) -> int:
    return x * 2


@intemporal.workflow(name="security.flow")
def sec_flow(x: int) -> int:
    return sec_step(x)


@intemporal.workflow(name="security.waiter")
def sec_waiter() -> object:
    return intemporal.wait_for_signal("go")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the store, with bytes that must stay as they are."""
    path = tmp_path / "outside.txt"
    path.write_bytes(PRECIOUS)
    return path


@pytest.fixture
def cli(home: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the command adds the cwd to it
    env = {"COLUMNS": "200", "INTEMPORAL_HOME": None, "INTEMPORAL_DEBUG": None}
    runner = CliRunner(env={**env, "INTEMPORAL_STRICT": None})
    return lambda *args: runner.invoke(app, ["--store", str(home), *args])


def refused(result: Result, path: Path) -> None:
    """Exit 1 with one line naming `path` as a link, and no traceback."""
    assert result.exit_code == 1, (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unsafe store: "), result.stderr
    assert f"{path} is a symbolic link" in lines[0]


# -- the three examples of the issue, through the command ------------------------------------
def test_doorbell_link_is_refused_by_start_detach(
    cli: Callable[..., Result], home: Path, tmp_path: Path
) -> None:
    # Given a doorbell that is a link to a big file outside (a sender would truncate it)
    big = tmp_path / "big.log"
    big.write_bytes(BIG)
    home.mkdir(mode=0o700)
    (home / ".doorbell").symlink_to(big)
    # When a run is recorded for a worker
    result = cli("start", "test_store_security:sec_flow", "[1]", "--run-id", "r1", "--detach")
    # Then it is refused, naming the link, and the file is untouched
    refused(result, home / ".doorbell")
    assert big.read_bytes() == BIG


def test_the_three_links_through_the_installed_command(tmp_path: Path) -> None:
    # As a user types them, in a process of their own: each refused, nothing outside touched.
    home, big, outside = tmp_path / "store", tmp_path / "big.log", tmp_path / "elsewhere"
    (tmp_path / "secflows.py").write_text(
        "import intemporal\n\n"
        "@intemporal.workflow(name='secflows.wait')\n"
        "def wait():\n"
        "    return intemporal.wait_for_signal('go')\n"
    )
    big.write_bytes(BIG)
    outside.mkdir()

    def intemporal_cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "intemporal.cli", "--store", str(home), *args]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)

    assert intemporal_cli("start", "secflows:wait", "--run-id", "w", "--detach").returncode == 0
    (home / "w.inbox").symlink_to(big)
    (home / "esc").symlink_to(outside, target_is_directory=True)
    signalled = intemporal_cli("signal", "w", "go")
    escaped = intemporal_cli("start", "secflows:wait", "--run-id", "esc/r2", "--detach")
    os.replace(home / ".doorbell", tmp_path / "doorbell.moved")
    (home / ".doorbell").symlink_to(big)
    detached = intemporal_cli("start", "secflows:wait", "--run-id", "r3", "--detach")

    for proc, link in ((signalled, "w.inbox"), (escaped, "esc"), (detached, ".doorbell")):
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert (
            proc.stderr.strip()
            == f"error: unsafe store: {home / link} is a symbolic link; the store never follows one"
        )
    assert big.read_bytes() == BIG and list(outside.iterdir()) == []


def test_inbox_link_is_refused_by_signal(
    cli: Callable[..., Result], home: Path, outside: Path
) -> None:
    with Engine(str(home), worker=False) as engine:
        engine.start(sec_waiter, run_id="w1")
    (home / "w1.inbox").symlink_to(outside)

    refused(cli("signal", "w1", "go", '{"ok": true}'), home / "w1.inbox")
    refused(cli("cancel", "w1"), home / "w1.inbox")
    assert outside.read_bytes() == PRECIOUS


def test_linked_child_folder_is_refused_by_start(
    cli: Callable[..., Result], home: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home.mkdir(mode=0o700)
    (home / "esc").symlink_to(elsewhere, target_is_directory=True)

    refused(cli("start", "test_store_security:sec_flow", "[1]", "--run-id", "esc/r2"), home / "esc")
    args = ("start", "test_store_security:sec_flow", "[1]", "--run-id", "esc/deeper/r3", "--detach")
    refused(cli(*args), home / "esc")
    assert list(elsewhere.iterdir()) == []  # no journal, no folder written outside
    assert cli("show", "esc/r2").exit_code == 1


# -- the whole kind, through the store and the engine ----------------------------------------
@pytest.fixture
def store_with_runs(home: Path) -> Iterator[FileStore]:
    """A store with a finished run "done", a waiting run "w" and a child folder "p"."""
    with Engine(str(home), threads=2) as engine:
        engine.run(sec_flow, 1, run_id="done")
        engine.run(sec_flow, 2, run_id="p/1/c")
        engine.start(sec_waiter, run_id="w")
    store = FileStore(home)
    yield store
    store.close()


def _link(path: Path, target: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        os.replace(path, target)  # the real folder moves outside, a link takes its place
    elif path.exists():
        path.unlink()
    path.symlink_to(target)


def test_no_store_file_is_opened_through_a_link(
    store_with_runs: FileStore, home: Path, tmp_path: Path, outside: Path
) -> None:
    store = store_with_runs
    # A journal that is a link (to a real journal elsewhere): no read, claim, lock probe
    os.replace(home / "done.jsonl", tmp_path / "done.jsonl")
    (home / "done.jsonl").symlink_to(tmp_path / "done.jsonl")
    before = (tmp_path / "done.jsonl").read_bytes()
    for call in (store.read, store.claim, store._is_claimed, store.summary):
        with pytest.raises(UnsafeStore, match=r"done\.jsonl is a symbolic link"):
            call("done")
    with Engine(store) as engine:
        with pytest.raises(UnsafeStore):
            engine.start(sec_flow, 1, run_id="done")  # an existing id: read to compare
        with pytest.raises(UnsafeStore):
            engine.resume("done")
    assert (tmp_path / "done.jsonl").read_bytes() == before

    # An inbox that is a link: no send, no read
    (home / "w.inbox").symlink_to(outside)
    with pytest.raises(UnsafeStore, match=r"w\.inbox is a symbolic link"):
        store.send("w", {"type": "signal", "name": "go", "payload": 1})
    with pytest.raises(UnsafeStore):
        store.inbox("w")

    # A child run's folder that is a link, at any depth: no create, read, exists, delete
    moved = tmp_path / "moved"
    _link(home / "p" / "1", moved)
    kept = sorted(p.name for p in moved.iterdir())
    for probe in (store.read, store.exists, store.delete, store._is_claimed):
        with pytest.raises(UnsafeStore, match=f"{home / 'p' / '1'} is a symbolic link"):
            probe("p/1/c")
    with pytest.raises(UnsafeStore):
        store.create("p/1/new", {"type": "run_started", "workflow": "x", "ts": 1.0})
    assert sorted(p.name for p in moved.iterdir()) == kept

    # The engines' lock folder, or one engine's lock, as a link: never created through
    (home / ".engines").mkdir(exist_ok=True)
    (home / ".engines" / "e1.lock").symlink_to(outside)
    with pytest.raises(UnsafeStore, match=r"e1\.lock is a symbolic link"):
        store.lease_owner("e1")
    with pytest.raises(UnsafeStore):
        store._owner_alive("e1")
    _link(home / ".engines", tmp_path / "engines-elsewhere")
    with pytest.raises(UnsafeStore, match=r"\.engines is a symbolic link"):
        store.lease_owner("e2")
    assert not (tmp_path / "engines-elsewhere" / "e2.lock").exists()

    # The doorbell as a link: neither rung nor read
    (home / ".doorbell").unlink(missing_ok=True)
    (home / ".doorbell").symlink_to(outside)
    with pytest.raises(UnsafeStore, match=r"\.doorbell is a symbolic link"):
        store.create("rung", {"type": "run_started", "workflow": "x", "ts": 1.0})  # rings
    with pytest.raises(UnsafeStore):
        store.wait(0, 0)
    with pytest.raises(UnsafeStore):
        Engine(store)  # an engine follows the doorbell from its start
    assert outside.read_bytes() == PRECIOUS

    # Listing shows each unsafe run as unreadable, names the link, and follows none
    listed = {i.run_id: i for i in store.list_runs()}
    assert listed["done"].status is intemporal.RunStatus.UNREADABLE
    assert "is a symbolic link" in (listed["done"].error or "")
    # A run the index knows below a folder now linked is not read through the link: it is
    # listed unreadable, naming the link
    if "p/1/c" in listed:
        assert listed["p/1/c"].status is intemporal.RunStatus.UNREADABLE
        assert "is a symbolic link" in (listed["p/1/c"].error or "")


def test_delete_removes_a_link_itself_never_its_target(home: Path, outside: Path) -> None:
    store = FileStore(home)
    assert store.create("r", {"type": "run_started", "workflow": "x", "ts": 1.0})
    (home / "r.inbox").symlink_to(outside)
    store.delete("r")
    assert not (home / "r.inbox").is_symlink() and not (home / "r.jsonl").exists()
    assert outside.read_bytes() == PRECIOUS


# -- a child run's files: the parent stops, its code never sees the error ----------------------
@intemporal.workflow(name="security.kid")
def sec_kid() -> int:
    return sec_step(1)


@intemporal.workflow(name="security.careful_parent")
def sec_careful_parent() -> str:
    try:
        return f"child gave {sec_kid()}"
    except Exception as exc:  # a store's error must never land here
        return f"WORKFLOW CAUGHT {type(exc).__name__}"


def _plant_child_link(home: Path, outside: Path, what: str) -> None:
    if what == "folder":  # the child's folder is a link to a folder elsewhere
        target = outside.parent / "elsewhere"
        target.mkdir()
        (home / "p").symlink_to(target)
        return
    (home / "p").mkdir(parents=True)
    if what == "inbox":
        (home / "p" / "1.inbox").symlink_to(outside)
    elif what == "journal":
        (home / "p" / "1.jsonl").symlink_to(outside)
    else:  # a damaged journal already stands at the child's id
        (home / "p" / "1.jsonl").write_bytes(b'{"type": "run_started", "workflow": \n')


@pytest.mark.parametrize("what", ["folder", "inbox", "journal", "damaged"])
def test_a_child_run_on_unsafe_or_damaged_files_stops_its_parent_unrecorded(
    home: Path, outside: Path, what: str
) -> None:
    # Given a parent that catches every Exception around its child, whose files are unsafe
    home.mkdir(mode=0o700)
    _plant_child_link(home, outside, what)
    expected = intemporal.JournalCorrupted if what == "damaged" else UnsafeStore
    with Engine(home, threads=2) as engine:
        # When it runs: the caller gets the error at once (no hang), naming the path
        with pytest.raises(expected, match=r"p/1|/p\b"):
            engine.start(sec_careful_parent, run_id="p").result(timeout=20)
        # Then the workflow never saw it: the run is neither completed nor failed
        info = engine.get_run("p")
        assert not info.status.finished, info
    assert outside.read_bytes() == PRECIOUS


# -- modes ---------------------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_store_folders_are_0700_and_files_0600(home: Path) -> None:
    old = os.umask(0)  # the modes are asked for, not left to the umask
    try:
        with Engine(str(home), threads=2) as engine:
            engine.run(sec_flow, 1, run_id="a")
            engine.run(sec_flow, 1, run_id="parent/1/child")
            handle = engine.start(sec_waiter, run_id="w")
            engine.signal("w", "go", 1)
            assert handle.result(timeout=10) == 1
            engine.store.lease_owner("probe")  # the engines' lock folder and a lock file
    finally:
        os.umask(old)
    folders = [home, home / "parent", home / "parent" / "1", home / ".engines"]
    files = [p for p in home.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"a.jsonl", "child.jsonl", "w.inbox", ".doorbell"}
    assert {str(p): _mode(p) for p in folders} == {str(p): 0o700 for p in folders}
    assert {str(p): _mode(p) for p in files} == {str(p): 0o600 for p in files}


# -- a store others may write to -----------------------------------------------------------
def test_untrusted_store_warns_once_and_strict_refuses(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home.mkdir()
    home.chmod(0o777)  # as another local user could have left it
    with pytest.warns(UserWarning, match="writable by group and others") as caught:
        Engine(str(home), worker=False).close()
    assert str(home) in str(caught[0].message) and "strict" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: a second open stays quiet
        Engine(str(home), worker=False).close()
    with pytest.raises(UnsafeStore, match="writable by group and others") as info:
        Engine(str(home), strict=True)
    assert info.value.path == str(home)

    home.chmod(0o700)  # fixed: strict accepts it
    Engine(str(home), strict=True, worker=False).close()
    home.chmod(0o720)
    with pytest.raises(UnsafeStore, match="writable by group"):
        open_store(str(home), strict=True)

    # Owned by another user: what this process sees as another uid than its own
    home.chmod(0o700)
    monkeypatch.setattr(os, "geteuid", lambda: home.stat().st_uid + 1)
    with pytest.raises(UnsafeStore, match="owned by another user"):
        Engine(str(home), strict=True)
    other = home.parent / "other"
    other.mkdir(mode=0o700)
    with pytest.warns(UserWarning, match="owned by another user"):
        FileStore(other)


def test_a_store_created_here_is_trusted_without_a_warning(home: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Engine(str(home), strict=True, worker=False).close()  # made now, 0700
        Engine(str(home), strict=True, worker=False).close()  # and opened again


def test_cli_warns_on_stderr_and_strict_refuses(
    cli: Callable[..., Result], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home.mkdir()
    home.chmod(0o757)
    listed = cli("list")
    assert listed.exit_code == 0, listed.output
    warning = [line for line in listed.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and str(home) in warning[0] and "writable by others" in warning[0]

    strict = cli("--strict", "list")
    assert strict.exit_code == 1 and "Traceback" not in strict.output
    assert strict.stderr.strip().startswith(f"error: unsafe store: {home} is writable by others")
    runner = CliRunner(env={"INTEMPORAL_STRICT": "1", "INTEMPORAL_HOME": str(home)})
    assert runner.invoke(app, ["list"]).exit_code == 1


# -- credentials in a store URL ------------------------------------------------------------
@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("postgresql://app:s3cr3t@db:5432/prod", "postgresql://app:***@db:5432/prod"),
        ("postgres://app:p@ss:w/rd?x@db/prod", "postgres://app:***@db/prod"),
        ("postgresql://:s3cr3t@db/prod", "postgresql://:***@db/prod"),
        (
            "postgresql://db/prod?user=app&password=s3cr3t",
            "postgresql://db/prod?user=app&password=***",
        ),
        (
            "host=db user=app password=s3cr3t dbname=prod",
            "host=db user=app password=*** dbname=prod",
        ),
        ("postgresql://app@db/prod", "postgresql://app@db/prod"),
        ("/var/lib/intemporal", "/var/lib/intemporal"),
        ("memory:", "memory:"),
    ],
)
def test_redact_hides_every_password_and_keeps_the_rest(location: str, shown: str) -> None:
    assert redact(location) == shown
    assert "s3cr3t" not in redact(location) and "p@ss" not in redact(location)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:hunter2@127.0.0.1:1/prod",
        "postgres://app:hunter2@nowhere.invalid/prod",
        "mysql://app:hunter2@db/prod",
        "redis://:hunter2@cache:6379/0",
    ],
)
def test_cli_never_prints_the_password_of_a_store_url(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where a URL mistaken for a path would become a folder
    runner = CliRunner(env={"INTEMPORAL_HOME": None, "INTEMPORAL_DEBUG": None})
    for args in (
        ["list"],
        ["show", "r"],
        ["resume", "--all"],
        ["worker", "--once"],
        ["gc", "--older-than", "1d"],
    ):
        result = runner.invoke(app, ["--store", url, *args])
        assert result.exit_code == 1, result.output
        assert "hunter2" not in result.output and "Traceback" not in result.output
        assert result.stderr.startswith("error: ")
    via_env = CliRunner(env={"INTEMPORAL_HOME": url}).invoke(app, ["list"])
    assert via_env.exit_code == 1 and "hunter2" not in via_env.output
    helped = CliRunner(env={"INTEMPORAL_HOME": url}).invoke(app, ["--help"])
    assert helped.exit_code == 0 and "hunter2" not in helped.output
    debug = CliRunner(env={"INTEMPORAL_HOME": url, "INTEMPORAL_DEBUG": "1"}).invoke(app, ["list"])
    assert debug.exception is not None and "hunter2" not in str(debug.exception)
    with pytest.raises((StoreUnavailable, ValueError)) as info:  # no database there
        Engine(url)
    assert "hunter2" not in str(info.value)
    assert not any("hunter2" in str(p) for p in tmp_path.rglob("*"))  # no folder named so
