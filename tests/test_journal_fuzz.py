"""Fuzzing the journal reader (issue 13): any bytes are read, or refused with JournalCorrupted.

Inputs: arbitrary bytes; JSON-ish lines built from the journal's own field names and event
types with values of any JSON type (and some that only look like a value: a `$dill`
payload whose unpickling would create a marker file); brackets nested up to 200,000 deep;
all of it cut at any byte, with stray bytes, blank lines and CRs mixed in. For each input:

- `parse_lines` and `FileStore.read` return events (dicts with a text `type`), or raise
  `JournalCorrupted` naming the file; nothing else is raised;
- a listing never raises: the run is listed, as what it is or as `unreadable`;
- nothing is executed: the marker file never appears;
- nothing hangs: each example has a deadline.

`make test` runs a fixed, derandomized few hundred examples (a few seconds); `make
test-slow` runs thousands more, random.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import pathlib
import pickle
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intemporal import FileStore, JournalCorrupted, RunStatus
from intemporal.store.fileio import parse_lines

# One folder for every example (hypothesis runs each example without a fresh fixture).
WORKDIR = pathlib.Path(tempfile.mkdtemp(prefix="intemporal-fuzz-"))
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)
MARKER = WORKDIR / "code-was-executed"


class _Planted:
    """Unpickling this creates MARKER: proof that reading ran code from the journal."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (MARKER,))


PLANTED = {"$dill": base64.b64encode(pickle.dumps(_Planted(), protocol=4)).decode()}
TYPES = [
    "run_started",
    "activity_scheduled",
    "activity_completed",
    "activity_failed",
    "run_suspended",
    "run_resumed",
    "run_completed",
    "run_failed",
    "run_cancelled",
    "signal",
]
KEYS = ["type", "ts", "seq", "name", "workflow", "args", "kwargs", "result", "error", "attempt"]
KEYS += ["parent", "queue", "owner", "reason", "until", "payload", "notes", "message"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars | st.just(PLANTED),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=16,
)
events = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | json_values},
    optional={key: json_values for key in KEYS if key != "type"},
)
# A first line that passes the first check, so the checks of every field behind it run too.
starts = st.fixed_dictionaries(
    {"type": st.just("run_started"), "workflow": st.text(max_size=8) | json_values},
    optional={key: json_values for key in KEYS if key not in ("type", "workflow")},
)


def _encode(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


deep = st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n)
lines = (
    events.map(_encode)
    | json_values.map(_encode)
    | st.binary(max_size=40)
    | deep
    | st.sampled_from([b"", b"\r", b"\xff\xfe", b"\x00", b"{", b"}", b'"', b"\\"])
)


@st.composite
def journals(draw: st.DrawFn) -> bytes:
    """Lines joined by newlines, the whole possibly cut at any byte."""
    head = [_encode(draw(starts))] if draw(st.booleans()) else []
    data = b"\n".join(head + draw(st.lists(lines, max_size=6)))
    if draw(st.booleans()):
        data += b"\n"
    if data and draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data


ODD_VALUES = [None, True, 0, -7, 1.5, float("nan"), "x", [], [1], {}, {"a": 1}, PLANTED]


def test_every_known_field_with_every_type_is_read_or_refused(tmp_path: Path) -> None:
    # The systematic half of the fuzz: each field a reader knows, in a first line, a later
    # line and an inbox message, holding each JSON type: read, or JournalCorrupted.
    store = FileStore(tmp_path)
    started = {"type": "run_started", "workflow": "w", "args": [], "kwargs": {}, "ts": 1.0}
    later = {"type": "activity_completed", "seq": 1, "name": "a", "result": 1, "ts": 2.0}
    signal = {"type": "signal", "name": "go", "payload": 1, "signal_id": "s1", "ts": 3.0}
    checked = 0
    for key in [*KEYS, "ref", "protocols", "retry_in", "fire_at", "index", "child_id"]:
        for value in ODD_VALUES:
            for at in range(3):
                lines = [dict(started), dict(later), dict(signal)]
                lines[at][key] = value
                (tmp_path / "r.jsonl").write_bytes(b"".join(_encode(e) + b"\n" for e in lines[:2]))
                (tmp_path / "r.inbox").write_bytes(_encode(lines[2]) + b"\n")
                for read in (store.read, store.inbox, store.summary_or_unreadable):
                    with contextlib.suppress(JournalCorrupted):
                        read("r")
                    checked += 1
    store.close()
    assert checked == (len(KEYS) + 6) * len(ODD_VALUES) * 3 * 3
    assert not MARKER.exists()


def check_read(data: bytes) -> None:
    path = WORKDIR / "store" / "r.jsonl"
    try:
        parsed, end = parse_lines(data, str(path))
        assert 0 <= end <= len(data)
        assert all(isinstance(e, dict) and "type" in e for e in parsed)
    except JournalCorrupted as exc:
        assert exc.path == str(path)
    store = FileStore(WORKDIR / "store")
    try:
        path.write_bytes(data)
        try:
            events_read = store.read("r")
            assert events_read and all(isinstance(e.get("type"), str) for e in events_read)
        except JournalCorrupted as exc:
            assert exc.path == str(path) and exc.line >= 1
        [listed] = store.list_runs()
        assert listed.run_id == "r" and isinstance(listed.status, RunStatus)
    finally:
        store.close()
    assert not MARKER.exists(), "reading a journal executed code from it"


def _no_planted(data: bytes) -> bool:
    # A listing summarizes a finished run's result; the codec, not the reader, owns what a
    # `$dill` value becomes there. The reader's own paths get the planted payload above.
    return b"$dill" not in data


QUICK = settings(
    max_examples=150,
    deadline=timedelta(seconds=2),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LONG = settings(
    max_examples=5_000,
    deadline=timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_the_planted_payload_is_live() -> None:
    # What the fuzz must never do is possible: unpickling the payload does create the marker.
    pickle.loads(base64.b64decode(PLANTED["$dill"]))
    assert MARKER.exists()
    MARKER.unlink()


@QUICK
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_read_or_refused(data: bytes) -> None:
    check_read(data)


@QUICK
@given(journals().filter(_no_planted))
def test_jsonish_journals_are_read_or_refused(data: bytes) -> None:
    check_read(data)


@QUICK
@given(journals())
def test_reading_a_planted_payload_executes_nothing(data: bytes) -> None:
    path = WORKDIR / "planted" / "r.jsonl"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    store = FileStore(path.parent)
    try:
        store.read("r")
    except JournalCorrupted:
        pass
    finally:
        store.close()
    assert not MARKER.exists()


@pytest.mark.slow
@LONG
@given(st.binary(max_size=4_000) | journals().filter(_no_planted))
def test_long_fuzz_of_the_journal_reader(data: bytes) -> None:
    check_read(data)
