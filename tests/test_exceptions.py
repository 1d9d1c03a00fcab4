"""Exceptions come back with the same type and the same message (issue 12, section 2).

The kinds covered, each with the test(s) that prove it:

| kind                                                   | tests                                   |
| ------------------------------------------------------ | --------------------------------------- |
| `__init__` builds the message from other arguments     | test_message_built_by_init_*, table     |
| `__init__` takes several (or keyword-only) arguments   | test_several_init_arguments_*, table    |
| builtins with state outside `args` (OSError, Unicode)  | table                                   |
| extra attributes (plain JSON, picklable, unpicklable)  | table, test_unpicklable_attribute_*     |
| `__notes__`, `__cause__`, `__context__`                | test_notes_and_causes_come_back         |
| `BaseException` subclasses, the library's own errors   | table                                   |
| a class defined in a function (same process)           | test_replay.py                          |
| a class defined in a script (`__main__.OutOfStock`)    | test_script_exception_*                 |
| a class that truly cannot be rebuilt                   | test_unrebuildable_*                    |
| `codec="json"`: rebuilt from JSON only, dill refused   | test_json_codec_*                       |
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import Calls
from script_helpers import UNTIL_WAITING, run_python, write_script

import intemporal
from intemporal import DillRefused, Engine, RemoteError, RunStatus, Store
from intemporal.failures import decode_error, encode_error

ONCE = intemporal.RetryPolicy(max_attempts=1)


class CodeError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"service answered {code}")
        self.code = code


class OddError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code, self.detail = code, detail


class KeywordError(Exception):
    def __init__(self, *, status: int) -> None:
        super().__init__(status)
        self.status = status


class StrFromAttrs(Exception):
    """No `super().__init__` call at all: `args` are the call's, `__str__` reads attributes."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def __str__(self) -> str:
        return f"cannot reach {self.host}:{self.port}"


class WithWhen(Exception):
    def __init__(self, message: str, when: datetime) -> None:
        super().__init__(message)
        self.when = when


class HoldsAGenerator(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.rows = (i for i in range(3))  # neither pickle nor dill can store a generator


class Stop(BaseException):
    def __init__(self, reason: str, code: int) -> None:
        super().__init__(f"stop: {reason} ({code})")


EXCEPTIONS: list[tuple[str, BaseException]] = [
    ("value-error", ValueError("bad value")),
    ("key-error", KeyError("k")),
    ("no-args", RuntimeError()),
    ("os-error-with-filename", FileNotFoundError(2, "No such file", "/tmp/x.txt")),
    ("unicode-decode", UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")),
    ("stop-iteration", StopIteration(5)),
    ("system-exit", SystemExit(3)),
    ("keyboard-interrupt", KeyboardInterrupt()),
    ("message-from-init", CodeError(503)),
    ("two-init-arguments", OddError(503, "busy")),
    ("keyword-only", KeywordError(status=429)),
    ("str-from-attributes", StrFromAttrs("db", 5432)),
    ("picklable-attribute", WithWhen("late", datetime(2024, 1, 2, tzinfo=UTC))),
    ("base-exception", Stop("halt", 9)),
    ("run-conflict", intemporal.RunConflict("r", "a", "b")),
    ("non-determinism", intemporal.NonDeterminismError(3, "a", "b")),
    ("remote-error", RemoteError("x.Y", "gone", "why")),
]


def _through_json(exc: BaseException, codec: str = "auto") -> BaseException:
    record = json.loads(json.dumps(encode_error(exc, codec)))
    return decode_error(record, codec)


@pytest.mark.parametrize(("label", "exc"), EXCEPTIONS, ids=[n for n, _ in EXCEPTIONS])
def test_every_kind_comes_back_with_its_type_message_and_attributes(
    label: str, exc: BaseException
) -> None:
    back = _through_json(exc)
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    assert back.args == exc.args
    assert {k: v for k, v in vars(back).items()} == vars(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ExceptionGroup("several", [ValueError("a"), CodeError(503)]),
        subprocess.CalledProcessError(2, ["ls", "x"], "out"),
        json.JSONDecodeError("bad", "{x", 1),
    ],
    ids=["exception-group", "called-process-error", "json-decode-error"],
)
def test_library_exceptions_come_back_with_their_type_and_message(exc: BaseException) -> None:
    back = _through_json(exc)
    assert type(back) is type(exc) and str(back) == str(exc)
    if isinstance(exc, ExceptionGroup):
        assert [type(e) for e in back.exceptions] == [ValueError, CodeError]  # type: ignore[attr-defined]


def test_message_built_by_init_is_not_doubled_in_the_record() -> None:
    back = _through_json(CodeError(503))
    assert str(back) == "service answered 503"
    assert back.code == 503  # type: ignore[attr-defined]


def test_unpicklable_attribute_is_left_out_but_type_and_message_stay() -> None:
    record = encode_error(HoldsAGenerator("held"))
    assert record["dropped"] == ["rows"]
    back = decode_error(json.loads(json.dumps(record)))
    assert type(back) is HoldsAGenerator and str(back) == "held"


def test_notes_and_causes_come_back() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise CodeError(500) from inner
    except CodeError as exc:
        exc.add_note("while charging order 42")
        caught = exc
    back = _through_json(caught)
    assert type(back) is CodeError and str(back) == "service answered 500"
    assert back.__notes__ == ["while charging order 42"]
    assert type(back.__cause__) is KeyError and str(back.__cause__) == "'inner'"

    try:
        try:
            raise ValueError("first")
        except ValueError:
            raise OddError(1, "during handling")  # noqa: B904 - the implicit context is the point
    except OddError as exc:
        implicit = exc
    back = _through_json(implicit)
    assert type(back.__context__) is ValueError and str(back.__context__) == "first"


JSON_ONLY = [(n, e) for n, e in EXCEPTIONS if n not in ("unicode-decode", "picklable-attribute")]


@pytest.mark.parametrize(("label", "exc"), JSON_ONLY, ids=[n for n, _ in JSON_ONLY])
def test_json_codec_rebuilds_plain_exceptions_without_pickles(
    label: str, exc: BaseException
) -> None:
    record = encode_error(exc, "json")
    assert "$dill" not in json.dumps(record)
    back = decode_error(json.loads(json.dumps(record)), "json")
    assert type(back) is type(exc) and str(back) == str(exc)


def test_an_exception_no_recorded_form_rebuilds_reads_back_as_remote_error() -> None:
    class Changing(Exception):
        def __str__(self) -> str:
            return f"at {id(self)}"  # another message for every instance

    back = _through_json(Changing())
    assert isinstance(back, RemoteError)
    assert back.type_name.endswith("Changing") and "no recorded form" in str(back)
    # json codec: a tuple in the arguments cannot be stored as JSON
    back = _through_json(KeyError((1, 2)), "json")
    assert isinstance(back, RemoteError) and back.type_name == "builtins.KeyError"


def test_json_codec_refuses_a_pickled_part_on_read() -> None:
    record = encode_error(WithWhen("late", datetime(2024, 1, 2, tzinfo=UTC)))  # auto: pickled
    back = decode_error(json.loads(json.dumps(record)), "json")
    assert isinstance(back, DillRefused)
    assert "dill" in str(back)


# -- through real runs ---------------------------------------------------------------------------


def test_message_built_by_init_survives_a_replay_after_a_sleep(engine: Engine) -> None:
    # Given an activity raising CodeError(503), caught by the workflow before a long sleep
    calls = Calls()

    @intemporal.activity(retry=ONCE)
    def call_service() -> None:
        calls.hit("call")
        raise CodeError(503)

    @intemporal.workflow
    def wf() -> list[Any]:
        try:
            call_service()
        except CodeError as exc:
            caught = [type(exc).__name__, str(exc), exc.code]
        intemporal.sleep(1.1)  # longer than an inline wait: the run parks and replays
        return caught

    # When it runs (and replays after the sleep)
    result = engine.run(wf, run_id="code")

    # Then the replayed exception has the same message, not a doubled one
    assert result == ["CodeError", "service answered 503", 503]
    assert calls["call"] == 1
    assert any(e["type"] == "run_suspended" for e in engine.history("code"))


def test_several_init_arguments_take_the_same_path_when_another_engine_resumes(
    store: Store,
) -> None:
    # Given a run that caught OddError(code, detail) and parked waiting for a signal
    calls = Calls()

    @intemporal.activity(retry=ONCE)
    def reserve() -> None:
        calls.hit("reserve")
        raise OddError(409, "taken")

    @intemporal.workflow
    def odd_wf() -> list[Any]:
        try:
            reserve()
            path: list[Any] = ["no error"]
        except OddError as exc:
            path = ["caught", exc.code, exc.detail, str(exc)]
        intemporal.wait_for_signal("go")
        return path

    with Engine(store, threads=2) as first:
        first.start(odd_wf, run_id="odd")
        deadline_ok = _wait_status(first, "odd", RunStatus.WAITING)
        assert deadline_ok

    # When another engine resumes it after the signal
    with Engine(store, threads=2) as second:
        second.signal("odd", "go")
        result = second.resume("odd").result(timeout=10)

    # Then the replay took the same except branch
    assert result == ["caught", 409, "taken", "409: taken"]
    assert calls["reserve"] == 1


def _wait_status(engine: Engine, run_id: str, status: RunStatus, timeout: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine.get_run(run_id).status is status:
            return True
        time.sleep(0.01)
    return False


def test_unrebuildable_exception_stops_the_run_unrecorded(store: Store) -> None:
    # Given a run whose recorded exception names a class no process can find any more
    calls = Calls()

    @intemporal.activity(retry=ONCE)
    def fails() -> None:
        raise CodeError(500)

    @intemporal.activity
    def after() -> None:
        calls.hit("after")

    @intemporal.workflow
    def gone_wf() -> str:
        try:
            fails()
        except CodeError:
            after()
            return "handled"
        return "no error"

    with Engine(store, threads=2) as engine:
        assert engine.run(gone_wf, run_id="orig") == "handled"
        events = store.read("orig")
        failed = next(e for e in events if e["type"] == "activity_failed")
        failed["error"] = dict(failed["error"], module="shop_that_was_deleted", type="GoneError")
        # created claimed: a run created for any worker is taken by this engine's watcher
        lease = store.create_claimed("gone", dict(events[0], run_id="gone"))
        assert lease is not None
        lease.append(dict(failed), sync=True)
        lease.release()

        # When it is resumed
        with pytest.raises(RemoteError) as info:
            engine.resume("gone").result(timeout=10)

        # Then the error names the original type, and nothing is recorded as the verdict
        assert info.value.type_name == "shop_that_was_deleted.GoneError"
        assert "journal line 2" in str(info.value) and "stops here" in str(info.value)
        assert engine.get_run("gone").status is not RunStatus.FAILED
        assert [e["type"] for e in engine.history("gone")] == ["run_started", "activity_failed"]
    assert calls["after"] == 1  # only the original run's; the replay took no other path


def test_json_codec_engine_refuses_a_pickled_exception_part_and_stops(store: Store) -> None:
    # Given a run recorded by an auto engine, whose caught exception holds a pickled attribute
    @intemporal.activity(retry=ONCE)
    def late() -> None:
        raise WithWhen("late", datetime(2024, 1, 2, tzinfo=UTC))

    @intemporal.workflow
    def when_wf() -> str:
        try:
            late()
        except WithWhen as exc:
            intemporal.wait_for_signal("go")
            return exc.when.isoformat()
        return "no error"

    with Engine(store, threads=2) as engine:
        engine.start(when_wf, run_id="when")
        assert _wait_status(engine, "when", RunStatus.WAITING)

    # When an Engine(codec="json") resumes it
    with Engine(store, threads=2, codec="json") as strict:
        strict.signal("when", "go")
        with pytest.raises(DillRefused) as info:
            strict.resume("when").result(timeout=10)

    # Then it refuses, naming the run and the line, and records no verdict
    assert "'when'" in str(info.value) and "journal line 2" in str(info.value)
    assert store.summary("when").status is not RunStatus.FAILED


# -- a class defined in a script run as `python shop.py` ------------------------------------------

SHOP = """\
import sys
import time

import intemporal


class OutOfStock(Exception):
    def __init__(self, sku, left):
        super().__init__(f"{{sku}}: only {{left}} left")
        self.sku, self.left = sku, left


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def reserve(sku):
    raise OutOfStock(sku, 0)


@intemporal.workflow(name="{name}.order")
def order(sku):
    try:
        reserve(sku)
        path = "reserved"
    except OutOfStock as exc:
        path = f"backorder {{exc.sku}} ({{exc}})"
    intemporal.wait_for_signal("restocked")
    return path


@intemporal.workflow(name="{name}.strict_order")
def strict_order(sku):
    reserve(sku)


if __name__ == "__main__":
    with intemporal.Engine({store!r}, threads=2) as engine:
        engine.start(order, "sku-1", run_id="waits")
        try:
            engine.run(strict_order, "sku-2", run_id="fails")
        except OutOfStock:
            pass
{until_waiting}"""


def test_script_exception_resolves_in_the_terminal_and_in_an_importing_application(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given `python shop_x.py`: a run caught __main__.OutOfStock and waits; another failed with it
    script = write_script(tmp_path, "shop", SHOP)
    script.run()
    recorded = Engine(str(script.store), worker=False).history("fails")[1]
    assert recorded["error"]["module"] == "__main__"

    # When the terminal signals and resumes the waiting run
    sent = script.terminal("signal", "waits", "restocked")
    assert sent.returncode == 0, sent.stderr
    resumed = script.terminal("resume", "waits", "--json")

    # Then the replay took the same except branch
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    outcome = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert outcome["result"] == "backorder sku-1 (sku-1: only 0 left)"

    # And an application importing the script as a module gets its own class back
    with script.imported(monkeypatch) as shop, Engine(str(script.store), worker=False) as app:
        with pytest.raises(shop.OutOfStock) as info:
            app.handle("fails").result(timeout=10)
    assert type(info.value) is shop.OutOfStock
    assert str(info.value) == "sku-2: only 0 left" and info.value.left == 0


def test_script_exception_replays_in_the_script_process_itself(tmp_path: Path) -> None:
    # Given a script whose workflow catches its own exception, then sleeps past an inline wait
    script = tmp_path / "sleepy_shop.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import intemporal

            class Refused(Exception):
                def __init__(self, code, why):
                    super().__init__(f"{{code}} {{why}}")

            @intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
            def pay():
                raise Refused(402, "card declined")

            @intemporal.workflow
            def checkout():
                try:
                    pay()
                except Refused as exc:
                    seen = f"{{type(exc).__module__}}.{{type(exc).__name__}}: {{exc}}"
                intemporal.sleep(1.1)
                return seen

            if __name__ == "__main__":
                with intemporal.Engine({str(tmp_path / "store")!r}, threads=2) as engine:
                    print(engine.run(checkout, run_id="c"))
            """
        )
    )
    # When it runs
    done = run_python([str(script)], tmp_path)
    # Then the replay after the sleep saw the same class and message
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "__main__.Refused: 402 card declined"


@intemporal.workflow
def failing_child() -> None:
    raise CodeError(502)


@intemporal.workflow
def parent_of_failing_child() -> str:
    try:
        failing_child()
    except CodeError as exc:
        seen = str(exc)
    intemporal.wait_for_signal("go")
    return seen


def test_a_child_error_that_cannot_be_rebuilt_stops_the_parent_unrecorded(
    file_store: intemporal.FileStore,
) -> None:
    # Given a parent that caught its child's CodeError and waits
    with Engine(file_store, threads=2) as engine:
        engine.start(parent_of_failing_child, run_id="p")
        assert _wait_status(engine, "p", RunStatus.WAITING)
    # ... and the child's journal now names a class that no longer exists
    child = file_store.root / "p" / "1.jsonl"
    text = child.read_text()
    assert '"module":"test_exceptions"' in text
    first, rest = text.split("\n", 1)  # the error's class, not the workflow's own code
    child.write_text(
        first + "\n" + rest.replace('"module":"test_exceptions"', '"module":"deleted_module"')
    )

    # When it is signalled and resumed
    with Engine(file_store, threads=2) as engine:
        engine.signal("p", "go")
        with pytest.raises(RemoteError, match=r"deleted_module\.CodeError"):
            engine.resume("p").result(timeout=10)
        # Then the parent is not recorded failed: it stops, resumable once the code is back
        assert engine.get_run("p").status is not RunStatus.FAILED
    child.write_text(text)
    with Engine(file_store, threads=2) as engine:
        assert engine.resume("p").result(timeout=10) == "service answered 502"


FLOWS = """\
import enum
import time

import intemporal


class Level(enum.Enum):
    LOW = 1


class Denied(Exception):
    def __init__(self, who, why):
        super().__init__(f"{who}: {why}")


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def ask():
    raise Denied("bob", "no budget")


@intemporal.activity
def level():
    return Level.LOW


@intemporal.workflow
def decide():
    try:
        ask()
    except Denied as exc:
        seen = str(exc)
    value = level()
    intemporal.wait_for_signal("go")
    return [seen, value is Level.LOW]


if __name__ == "__main__":
    with intemporal.Engine(STORE, threads=2) as engine:
        engine.start(decide, run_id="waits")
{until_waiting}"""


def test_classes_of_a_module_run_with_python_dash_m_resolve_by_its_name(tmp_path: Path) -> None:
    # Given `python -m pkg.flows`: its classes are `__main__.Denied`, `__main__.Level`
    pkg = f"pkg_{os.urandom(4).hex()}"
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text("")
    store = tmp_path / "store"
    text = FLOWS.replace("{until_waiting}", UNTIL_WAITING).replace("STORE", repr(str(store)))
    (tmp_path / pkg / "flows.py").write_text(text)
    started = run_python(["-m", f"{pkg}.flows"], tmp_path)
    assert started.returncode == 0, started.stderr

    # When the terminal signals and resumes the run in another process
    cli = ["-m", "intemporal.cli", "--store", str(store)]
    assert run_python([*cli, "signal", "waits", "go"], tmp_path).returncode == 0
    resumed = run_python([*cli, "resume", "waits", "--json"], tmp_path)

    # Then both classes were found again by the module's name
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert json.loads(resumed.stdout.splitlines()[-1])["result"] == ["bob: no budget", True]
