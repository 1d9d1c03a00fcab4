"""How the `intemporal` command shows runs: the `list` table, the `show` timeline, outcomes.

No argument parsing (that lives in `cli.py`); the exit code an outcome calls for is here
(`Outcome.code`, `exit_code`), so every command maps outcomes to codes the same way. Values are shown as JSON
when they are plain JSON, else as `repr`, and elided past a width so one huge result
cannot flood a terminal. `follow` waits for runs under a progress bar and prints how
each one ended.

    console.print(runs_table(store.list_runs()))
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

from .codec import is_exact_json, peek
from .errors import RunNotFound
from .events import (
    ACTIVITY_COMPLETED,
    RUN_SUSPENDED,
    SIGNAL_WAIT,
    TIMER_STARTED,
)
from .housekeeping import taken
from .store import Event, RunInfo, RunStatus

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from .engine import Engine, RunHandle

STATUS_STYLE = {
    RunStatus.PENDING: "cyan",
    RunStatus.RUNNING: "blue",
    RunStatus.WAITING: "yellow",
    RunStatus.COMPLETED: "green",
    RunStatus.FAILED: "red",
    RunStatus.CANCELLED: "magenta",
    RunStatus.UNREADABLE: "bold red",
    RunStatus.STUCK: "bold red",
}
ORPHANED_STYLE = "bold dark_orange"

PIPE_WIDTH = 160  # columns when writing to a file or a pipe: tables are not squeezed to 80


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr), made per call so it sees the current streams and $COLUMNS."""
    out = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = PIPE_WIDTH
    return out


def elide(text: str, width: int) -> str:
    """`text` cut to `width` characters, ending in "..." when cut."""
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def value_text(value: Any) -> str:
    """A value as JSON when it is plain JSON (what scripts parse), else its `repr`."""
    if is_exact_json(value):
        return json.dumps(value, ensure_ascii=False)
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def stored_text(data: Any, width: int) -> str:
    """A value in its stored (encoded) form, elided; never unpickles, never raises.

    A pickled value reads `<dill: tuple, 48 B>`, a secret `Secret(***)`.
    """
    return elide(value_text(peek(data)), width)


def error_text(err: Any) -> str:
    """ "Type: message" for an error dict recorded in the journal."""
    if not isinstance(err, dict):
        return str(err)
    return f"{err.get('type', '?')}: {err.get('message', '')}"


def fmt_time(ts: float | None, utc: bool = False, short: bool = False) -> str:
    """Epoch seconds with their zone: "2026-11-29 21:27:09 CET" (local) or "... UTC".

    `short` leaves out the year and seconds: "11-29 21:27 CET".
    """
    if not ts:
        return "-"
    try:
        when = datetime.fromtimestamp(ts, UTC) if utc else datetime.fromtimestamp(ts).astimezone()
    except (OverflowError, ValueError, OSError):  # a damaged journal's time: shown as it is
        return str(ts)
    zone = "UTC" if utc else (when.tzname() or when.strftime("%z"))
    return when.strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S") + " " + zone


def fmt_duration(seconds: float | None) -> str:
    """A short human duration: 850ms, 12.3s, 4m05s, 2h03m, 3d04h."""
    if seconds is None:
        return ""
    if not math.isfinite(seconds):  # times from a damaged journal
        return "?"
    s = max(0.0, seconds)
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


# -- how a run ended, as `start`, `resume` and `worker` print it --------------------------------
@dataclass
class Outcome:
    """How one run ended (or where it stands) when the command stopped waiting for it."""

    run_id: str
    status: str  # a RunStatus value, "error" (it could not go on) or "still-running"
    value: Any = None
    error: str | None = None  # "Type: message"
    waiting_for: str | None = None  # what a waiting run waits for: "signal 'x'", "a timer ..."
    note: str | None = None  # why nothing was done here: "another process has it"

    @property
    def ok(self) -> bool:
        """False for a failure, or a run still going when --timeout passed."""
        return self.code == EXIT_OK

    @property
    def code(self) -> int:
        """The exit code this outcome calls for (the README's table)."""
        if self.status in ("failed", "error"):
            return EXIT_FAILED
        return EXIT_TIMEOUT if self.status == "still-running" else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        value = self.value if is_exact_json(self.value) else repr(self.value)
        out = {"run_id": self.run_id, "status": self.status, "result": value, "error": self.error}
        if self.waiting_for is not None:
            out["waiting_for"] = self.waiting_for
        if self.note is not None:
            out["note"] = self.note
        return out


# Exit codes, the same for `resume`, `result`, `start` and `worker --once` (README table).
EXIT_OK = (
    0  # completed or cancelled; or left on purpose (waits for a signal, another process has it)
)
EXIT_FAILED = 1  # a run ended failed, or could not go on; or a user error
EXIT_USAGE = 2  # a usage error: a bad option value, a missing argument
EXIT_TIMEOUT = 3  # --timeout passed first: the run goes on (or stays resumable)


def exit_code(outcomes: list[Outcome]) -> int:
    """The exit code for a command that followed `outcomes`: a failure first, then a timeout."""
    codes = {o.code for o in outcomes}
    return next((c for c in (EXIT_FAILED, EXIT_TIMEOUT) if c in codes), EXIT_OK)


OUTCOME_STYLE = {"error": "bold red", "still-running": "yellow"}


def describe(exc: BaseException) -> str:
    """ "Type: message" for an exception."""
    return f"{type(exc).__name__}: {exc}"


def halted(engine: Engine, run_id: str, exc: BaseException | None = None) -> Outcome | None:
    """The outcome of a run whose execution here stopped unrecorded (`Engine.halted`), or None.

    With `exc`: only if that is the error it stopped on (a Ctrl-C of this very command
    is not the run's). A store failure, or an interrupt the workflow raised itself.
    """
    err = engine.halted.get(run_id)
    if err is None or (exc is not None and err is not exc):
        return None
    if isinstance(err, Exception):
        return Outcome(run_id, "error", error=describe(err))
    what = describe(err) if err.args else type(err).__name__
    return Outcome(
        run_id,
        "error",
        error=f"the workflow raised {what}: it stopped unrecorded and stays resumable "
        f"(intemporal resume {run_id})",
    )


def unreadable_outcome(info: RunInfo) -> Outcome:
    """The "error" outcome of a run whose journal cannot be read: said, never skipped."""
    return Outcome(info.run_id, "error", error=f"cannot be read: {info.error}")


def unreadable_outcomes(runs: list[RunInfo]) -> list[RunHandle | Outcome]:
    """An "error" outcome for each unreadable run listed: `resume --all` reports them."""
    return [unreadable_outcome(i) for i in runs if i.status is RunStatus.UNREADABLE]


def final_outcome(info: RunInfo) -> Outcome:
    """The outcome of a run as its summary records it."""
    if info.status is RunStatus.COMPLETED:
        return Outcome(info.run_id, info.status.value, value=info.result)
    return Outcome(info.run_id, info.status.value, error=info.error)


def settle(engine: Engine, run_id: str, timeout: float | None) -> Outcome:
    """Wait for a run to end, wherever it executes, and return its outcome as recorded.

    A run that continued as new is followed to the last run of its chain, whose outcome
    is the run's. For `intemporal result`: it executes nothing and decodes nothing, so a pickled result
    or error is shown as what it is (`<dill: tuple, 48 B>`), never unpickled (reading a
    store never runs its code). Polls the run's summary, backing off to 0.2 s.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    poll = 0.01
    while True:
        info = _chain_end(engine, run_id)  # continued as new: the last
        if info.status.finished:
            return replace(final_outcome(info), run_id=run_id)
        if info.status is RunStatus.UNREADABLE:
            return unreadable_outcome(info)
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return Outcome(run_id, "still-running")
        time.sleep(poll if left is None else min(poll, left))
        poll = min(poll * 2, 0.2)


def _chain_end(engine: Engine, run_id: str) -> RunInfo:
    """The run, or the last of the runs it continued as (`handle.chain_end`)."""
    from .handle import chain_end  # it loads asyncio: not for `list`

    return chain_end(engine.get_run, engine.get_run(run_id))


def report(out: Console, o: Outcome, as_json: bool) -> None:
    """Print one outcome: "RUN STATUS: result-or-error", or a JSON object with --json."""
    if as_json:
        out.file.write(json.dumps(o.to_json()) + "\n")
        out.file.flush()
        return
    out.print(outcome_text(o), soft_wrap=True)


def outcome_text(o: Outcome) -> Text:
    """One outcome as a line: "RUN STATUS: result-or-error"."""
    if o.status == RunStatus.COMPLETED:
        detail = value_text(o.value)
    elif o.error is not None:
        detail = o.error
    elif o.note is not None:
        detail = o.note
    elif o.status == RunStatus.WAITING:
        detail = (
            f"waits for {o.waiting_for}; `intemporal worker` (or `intemporal resume "
            f"{o.run_id}`) continues it then"
        )
    else:
        detail = "still running when --timeout passed; it stays resumable"
    style = OUTCOME_STYLE.get(o.status) or STATUS_STYLE.get(RunStatus(o.status), "")
    return Text.assemble((o.run_id, "bold"), " ", (o.status, style), ": ", detail)


SIGNAL_OP = "intemporal.signal:"  # how the journal names a signal wait
LONG_WAIT = 60.0  # seconds: a timer further off than this is not waited for here


def long_wait(events: list[Event]) -> str | None:
    """What a suspended run waits for, if it may take long: a signal, or a distant timer.

    Read from its last `run_suspended` event; None for a short timer or a child run,
    which the engine executing the run finishes by itself.
    """
    for ev in reversed(events):
        if ev.get("type") == RUN_SUSPENDED:
            reason, until = str(ev.get("reason", "")), ev.get("until")
            if reason.startswith(SIGNAL_OP):
                return f"signal {reason[len(SIGNAL_OP) :]!r}"
            if isinstance(until, int | float) and until - time.time() > LONG_WAIT:
                return f"a timer, due {fmt_time(until)}"
            return None
    return None


def async_long_wait(engine: Engine, run_id: str) -> str | None:
    """What an async run executed here waits for, if it may take long and no activity of it
    executes: a signal it awaits, or a timer further off than `LONG_WAIT`; else None.

    An async run does not suspend (`run_suspended`): its open waits are read from the
    journal instead, a `signal_wait` not yet answered at its step, or a `timer_started`.
    """
    from .async_replay import AsyncRunContext  # only where runs execute (not `list`)

    exe = engine.execution(run_id)
    ctx = exe.ctx if exe is not None else None
    if not isinstance(ctx, AsyncRunContext) or not ctx.idle():
        return None
    events = engine.history(run_id)
    answered = {e["seq"] for e in events if e.get("type") != SIGNAL_WAIT and "seq" in e}
    for ev in events:
        if ev.get("type") == SIGNAL_WAIT and ev["seq"] not in answered:
            return f"signal {str(ev.get('name', ''))[len(SIGNAL_OP) :]!r}"
    for ev in events:
        until = ev.get("fire_at") if ev.get("type") == TIMER_STARTED else None
        if isinstance(until, int | float) and until - time.time() > LONG_WAIT:
            return f"a timer, due {fmt_time(until)}"
    return None


def wait(
    engine: Engine,
    handle: RunHandle,
    timeout: float | None,
    on_poll: Callable[[], None] | None = None,
) -> Outcome:
    """Wait for a run to end, or for `timeout`; not for a signal or a timer far off.

    Short timers and child runs are waited for: the engine here executes them when due.
    `on_poll` is called between two looks (a progress bar reads the journal there).
    """
    rid = handle.run_id
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        step = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
        try:
            return Outcome(rid, RunStatus.COMPLETED.value, value=handle.result(timeout=step))
        except TimeoutError:  # our own timeout, or the workflow's TimeoutError
            if on_poll is not None:
                on_poll()
            info = _chain_end(engine, rid)  # continued as new: the last
            if info.status.finished:  # it may have ended just after this look timed out
                return _ended(engine, handle)
            if info.status is RunStatus.WAITING:  # parked: no process executes it now
                what = long_wait(engine.history(info.run_id))
                if what is not None:  # may take days: do not hold the terminal
                    return Outcome(rid, info.status.value, waiting_for=what)
            what = async_long_wait(engine, info.run_id)
            if what is not None:  # an async run waits without suspending: the same
                return Outcome(rid, RunStatus.WAITING.value, waiting_for=what)
            if deadline is not None and time.monotonic() >= deadline:
                return Outcome(rid, "still-running")
        except Exception as exc:
            try:
                info = engine.get_run(rid)
            except RunNotFound:  # deleted meanwhile (a `gc`): this run's error, not the command's
                return Outcome(rid, "error", error=describe(exc))
            status = info.status.value if info.status.finished else "error"
            return Outcome(rid, status, error=describe(exc))
        except BaseException as exc:  # the workflow's KeyboardInterrupt or SystemExit
            stopped = halted(engine, rid, exc)
            if stopped is None:
                raise
            return stopped


def _ended(engine: Engine, handle: RunHandle) -> Outcome:
    """The outcome of a run recorded as finished: its value, or the error it ended with."""
    try:
        return Outcome(handle.run_id, RunStatus.COMPLETED.value, value=handle.result())
    except Exception as exc:  # the workflow's own error (a TimeoutError too), or Cancelled
        info = _chain_end(engine, handle.run_id)
        return Outcome(handle.run_id, info.status.value, error=describe(exc))


def follow(
    engine: Engine,
    runs: list[RunHandle | Outcome],
    timeout: float | None,
    out: Console,
    as_json: bool,
) -> list[Outcome]:
    """Wait for each run in turn and print how it ended.

    On a terminal (and without --json) a progress bar counts the activities completed
    by the run being waited for, as its journal grows, and names its latest step; with
    more than one run, a second bar counts the runs. A pipe gets the result lines only.
    """
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TimeElapsedColumn(),
        console=out,
        transient=True,
        disable=as_json or not out.is_terminal,
    )
    outcomes = []
    with progress:
        many = len(runs) > 1
        runs_task = progress.add_task("runs", total=len(runs), count=f"0/{len(runs)} runs")
        progress.update(runs_task, visible=many)
        acts = progress.add_task("activities", total=None, count="0 activities")
        for n, item in enumerate(runs, 1):
            if not isinstance(item, Outcome):
                rid = item.run_id
                tick = functools.partial(_show_steps, engine, rid, progress, acts)
                progress.reset(acts, total=None, completed=0)
                tick()
                item = wait(engine, item, timeout, on_poll=None if progress.disable else tick)
            report(progress.console, item, as_json)
            outcomes.append(item)
            progress.update(runs_task, completed=n, count=f"{n}/{len(runs)} runs")
    return outcomes


def _show_steps(engine: Engine, run_id: str, progress: Progress, task: TaskID) -> None:
    """Set a progress task to a run's completed activities and its latest step."""
    if progress.disable:
        return
    events = engine.history(run_id)
    done = sum(e.get("type") == ACTIVITY_COMPLETED for e in events)
    last = next((e for e in reversed(events) if "seq" in e), None)
    step = f"step {last['seq']} {last.get('name', '')}" if last else "starting"
    progress.update(
        task, completed=done, description=f"{run_id}: {step}", count=f"{done} activities"
    )


def elsewhere(engine: Engine, info: RunInfo) -> Outcome | None:
    """An outcome saying another live process has the run (executes it, or keeps it waiting)."""
    held = held_by(engine, info)
    if held is None:
        return None
    note = (
        f"another process has it ({'executing' if held == 'executing' else 'keeping it waiting'}); "
        f"`intemporal result {info.run_id}` waits for its end"
    )
    status = (
        RunStatus.RUNNING if held == "executing" else info.status
    )  # a failed run it retries runs
    return Outcome(info.run_id, status.value, note=note)


def held_by(engine: Engine, info: RunInfo) -> str | None:
    """Which live process has a run: "executing" it, keeping it "waiting", or None.

    A failed run may be held too: a process that resumed it retries its failed step.
    """
    if info.status in (RunStatus.COMPLETED, RunStatus.CANCELLED):
        return None
    if info.executing or (info.status is RunStatus.FAILED and taken(engine.store, info.run_id)):
        return "executing"  # a failed run: a process resumed it, and retries its failed step
    if info.status is RunStatus.WAITING and info.owner is not None and not info.orphaned:
        return "waiting"
    return None


def awaited_signal(events: list[Event]) -> str | None:
    """The name of the signal a parked run waits for (its last `run_suspended`), or None."""
    last = next((e for e in reversed(events) if e.get("type") == RUN_SUSPENDED), None)
    reason = str(last.get("reason", "")) if last else ""
    return reason[len(SIGNAL_OP) :] if reason.startswith(SIGNAL_OP) else None
