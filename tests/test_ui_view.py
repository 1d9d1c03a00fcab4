"""The web view's timeline model (`intemporal.ui_view`): a journal laid out as a Gantt chart.

Pure: no web framework, no store. The pages built on it are tested in test_ui.py.
"""

from __future__ import annotations

from typing import Any

from intemporal.ui_view import timeline


def test_timeline_model_lays_out_attempts_waits_and_markers() -> None:
    # Given a hand-written journal: a retried activity, a timer, a signal, a crash, a child
    err = {"type": "ConnectionError", "message": "down", "traceback": "Traceback ...\n"}
    events: list[dict[str, Any]] = [
        {"type": "run_started", "workflow": "w", "args": [], "ts": 100.0},
        {
            "type": "attempt_failed",
            "seq": 1,
            "name": "a",
            "attempt": 1,
            "error": err,
            "retry_in": 1.0,
            "ts": 101.0,
        },
        {
            "type": "activity_completed",
            "seq": 1,
            "name": "a",
            "attempts": 2,
            "started": 102.0,
            "result": 5,
            "ts": 103.0,
        },
        {
            "type": "timer_started",
            "seq": 2,
            "name": "intemporal.sleep",
            "fire_at": 110.0,
            "seconds": 7,
            "ts": 103.0,
        },
        {"type": "run_suspended", "reason": "intemporal.sleep", "until": 110.0, "ts": 103.5},
        {
            "type": "signal_wait",
            "seq": 3,
            "name": "intemporal.signal:go",
            "deadline": None,
            "ts": 110.0,
        },
        {
            "type": "signal_received",
            "seq": 3,
            "name": "intemporal.signal:go",
            "signal": "go",
            "payload": {"$secret": "pw"},
            "ts": 112.0,
        },
        {"type": "run_recovered", "ts": 120.0},
        {"type": "child_started", "seq": 4, "name": "c", "child_id": "r/4", "ts": 120.0},
        {"type": "run_completed", "result": None, "ts": 130.0},
    ]

    # When it is laid out
    tl = timeline(events, {}, now=999.0)

    # Then: a bar per attempt (the retry starts after its backoff), waits with reasons
    rows = {r.seq: r for r in tl.rows}
    attempts = [b for b in rows[1].bars if b.attempt is not None]
    assert [(b.attempt, b.kind, b.start, b.end) for b in attempts] == [
        (1, "retry", 100.0, 101.0),
        (2, "ok", 102.0, 103.0),
    ]
    assert "ConnectionError: down" in attempts[0].detail and attempts[0].traceback
    assert (rows[2].kind, rows[2].bars[0].kind, rows[2].bars[0].label) == (
        "timer",
        "wait",
        "sleep 7.0s",
    )
    sig = rows[3].bars[0]
    assert (sig.kind, sig.start, sig.end) == ("wait", 110.0, 112.0)
    assert "Secret(***)" in sig.detail and "pw" not in sig.detail  # a secret stays hidden
    assert rows[4].child == "r/4"
    kinds = [(m.kind, m.at) for m in tl.markers]
    assert (
        ("crash", 112.0) in kinds and ("resumed", 120.0) in kinds and ("finished", 130.0) in kinds
    )
    assert [(g.start, g.end) for g in tl.gaps] == [(112.0, 120.0)]
    assert (tl.t0, tl.t1) == (100.0, 130.0)  # a finished run ends at its verdict, not "now"
    assert all(0 <= b.left <= 100 and b.width > 0 for r in tl.rows for b in r.bars)


def test_an_open_wait_runs_to_now_and_compensations_are_apart() -> None:
    # Given a journal that compensated, then waits for a signal still
    events: list[dict[str, Any]] = [
        {"type": "run_started", "workflow": "w", "ts": 0.0},
        {
            "type": "activity_completed",
            "seq": 1,
            "name": "book",
            "attempts": 1,
            "started": 0.0,
            "result": 1,
            "ts": 1.0,
        },
        {
            "type": "compensation_started",
            "seq": 2,
            "name": "intemporal.compensate",
            "compensations": ["unbook"],
            "ts": 2.0,
        },
        {
            "type": "activity_completed",
            "seq": 3,
            "name": "unbook",
            "attempts": 1,
            "started": 2.0,
            "result": None,
            "ts": 3.0,
        },
        {
            "type": "signal_wait",
            "seq": 4,
            "name": "intemporal.signal:ok",
            "deadline": None,
            "ts": 4.0,
        },
        {"type": "run_suspended", "reason": "intemporal.signal:ok", "until": None, "ts": 4.0},
    ]

    # When it is laid out at t=10
    tl = timeline(events, {}, now=10.0)

    # Then the wait ends now, says so, and only the compensation is in its group
    rows = {r.name: r for r in tl.rows}
    wait = rows["intemporal.signal:ok"].bars[0]
    assert (wait.kind, wait.start, wait.end, tl.t1) == ("wait", 4.0, 10.0, 10.0)
    assert "still waiting" in wait.label
    assert [r.name for r in tl.rows if r.compensation] == ["unbook"]
    assert [m.kind for m in tl.markers] == ["compensate", "suspended"]
    assert "waits for signal 'ok'" in tl.markers[1].label
