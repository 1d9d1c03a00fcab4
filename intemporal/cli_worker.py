"""`intemporal worker`: execute runs until stopped, and say what happens.

On a terminal a live status line counts, per queue, the runs executing, waiting, done and
failed, and the uptime; log lines ("started", "resumed", how each run ended) scroll
above it. Elsewhere (a pipe, a service log) each line starts with its time and zone;
with --json each is one JSON object with a `ts` (epoch seconds) and an `event`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.status import Status
from rich.text import Text

from . import cli_render as render
from .cli_render import Outcome, describe, exit_code, final_outcome
from .cli_support import (
    _USER_ERRORS,
    ImportOption,
    JsonOption,
    _engine,
    _import,
    _location,
    command,
)
from .engine import Engine
from .errors import StoreUnavailable
from .handle import RunHandle, chain_end
from .store import RunInfo, RunStatus, redact

DEFAULT_QUEUE = "default"


class Board:
    """What the worker says: log lines, and the live status line on a terminal."""

    def __init__(self, out: Console, as_json: bool) -> None:
        self.out, self.as_json = out, as_json
        self.live = out.is_terminal and not as_json
        self.since = time.monotonic()
        self.queue_of: dict[str, str] = {}  # run id -> its queue, for the runs watched
        self.ended: Counter[tuple[str, str]] = Counter()  # (queue, "done" | "failed")
        self.status: Status | None = None

    def say(
        self, event: str, run_id: str | None = None, text: Text | str = "", **fields: Any
    ) -> None:
        """One log line: `event` (started, resumed, completed, ...) about `run_id`."""
        if self.as_json:
            obj = {"ts": round(time.time(), 6), "event": event, "run_id": run_id, **fields}
            self.out.file.write(json.dumps(obj) + "\n")
            self.out.file.flush()
            return
        stamp = render.fmt_time(time.time())
        line = Text(stamp[11:19] + " " if self.live else stamp + " ", style="dim")
        line.append(text if text else f"{event} {run_id}")
        self.out.print(line, soft_wrap=True)

    def outcome(self, o: Outcome) -> None:
        """Log how a run ended (or where it was left) and count it."""
        queue = self.queue_of.pop(o.run_id, DEFAULT_QUEUE)
        if o.status in ("failed", "error"):
            self.ended[queue, "failed"] += 1
        elif o.status in (RunStatus.COMPLETED, RunStatus.CANCELLED):
            self.ended[queue, "done"] += 1
        self.say(o.status, o.run_id, render.outcome_text(o), **_fields(o))

    def line(self, engine: Engine) -> str:
        """The status line: per queue, runs executing / waiting / done / failed; uptime."""
        now: Counter[tuple[str, str]] = Counter()
        for rid, queue in self.queue_of.items():
            try:
                waiting = engine.get_run(rid).status is RunStatus.WAITING
            except Exception:  # deleted meanwhile
                continue
            now[queue, "waiting" if waiting else "executing"] += 1
        queues = sorted({q for q, _ in now} | {q for q, _ in self.ended}) or [DEFAULT_QUEUE]
        parts = [
            f"{q}: {now[q, 'executing']} executing, {now[q, 'waiting']} waiting, "
            f"{self.ended[q, 'done']} done, {self.ended[q, 'failed']} failed"
            for q in queues
        ]
        return " | ".join(parts) + f" | up {render.fmt_duration(time.monotonic() - self.since)}"

    @contextlib.contextmanager
    def showing(self) -> Iterator[None]:
        """Keep the status line under the log lines while the worker serves (terminal only)."""
        if not self.live:
            yield
            return
        with self.out.status("starting") as status:
            self.status = status
            yield

    def refresh(self, engine: Engine) -> None:
        if self.status is not None:
            self.status.update(self.line(engine))


def _fields(o: Outcome) -> dict[str, Any]:
    obj = o.to_json()
    obj.pop("run_id")
    obj.pop("status")
    return obj


@command()
def worker(
    ctx: typer.Context,
    queues: Annotated[
        list[str] | None,
        typer.Option(
            "--queue", "-q", metavar="Q", help="A queue to serve (repeatable).", show_default=False
        ),
    ] = None,
    imports: ImportOption = None,
    interval: Annotated[
        float, typer.Option(min=0.01, metavar="SECONDS", help="Seconds between two looks for work.")
    ] = 1.0,
    threads: Annotated[
        int, typer.Option(min=1, metavar="N", help="Runs executed at the same time.")
    ] = 8,
    once: Annotated[
        bool,
        typer.Option(
            "--once", help="Take the work there is now, watch it until it ends or parks, exit."
        ),
    ] = False,
    grace: Annotated[
        float,
        typer.Option(
            min=0,
            metavar="SECONDS",
            help="On Ctrl-C or SIGTERM, how long activities in flight may take to finish "
            "before the worker exits anyway (exit code 1; they run again elsewhere).",
        ),
    ] = 30.0,
    versions: Annotated[
        list[str] | None,
        typer.Option(
            "--version",
            metavar="V",
            help="Execute only runs started by Engine(version=V) (repeatable); runs this "
            "worker starts record the first.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Execute runs until stopped (Ctrl-C): every pending run and every orphaned one.

    Every second it resumes each unfinished run no process owns (started with --detach,
    or crashed); runs recorded meanwhile are taken at once. It says `started` for a new
    run, `resumed` for one that ran before (crashed, or parked by an engine now gone),
    and how each ended. On a terminal a status line counts runs executing, waiting, done
    and failed per queue, and the uptime; elsewhere each line starts with its time.
    --json prints one object per line (ts, event, run_id, ...). With --queue it serves
    only those queues, within the limits the imported modules declare (intemporal.Queue);
    it also fires the @intemporal.scheduled workflows they declare. On Ctrl-C or SIGTERM
    it stops taking runs, the runs stop at their next durable operation and stay
    resumable by any worker, and it exits 0 saying what it left; activities still in
    flight after --grace seconds are abandoned (exit 1), and a second Ctrl-C or SIGTERM
    exits at once. --once watches the runs it took until each ends or parks to wait for a
    signal or a distant timer, then exits with the codes of `resume`: 1 if a run ended
    failed (or could not be resumed), else 0.

    \b
    Examples:
      intemporal worker --import shop.flows
      intemporal worker --queue emails --queue billing --threads 16
      intemporal worker --once --json
    """
    for module in imports or []:
        _import(module)
    board = Board(render.console(), as_json)
    watching: dict[str, RunHandle] = {}
    reported: set[str] = set()
    ended: list[Outcome] = []  # how each run ended, for --once's exit code
    stopped = False
    with (
        _signals() as stopping,
        _engine(
            ctx,
            create=True,
            threads=threads,
            queues=queues or None,
            version=versions[0] if versions else None,
            versions=set(versions) if versions else None,
        ) as engine,
    ):
        where = redact(engine.store.location or _location(ctx))
        served = f"queues {', '.join(queues)}" if queues else "every queue"
        board.say("serving", None, f"worker on {where}, serving {served} (Ctrl-C to stop)")
        for info in _unreadable(engine):  # never skipped in silence:
            bad = render.unreadable_outcome(info)
            ended.append(bad)  # said once, and --once exits 1
            board.outcome(bad)
        try:
            with board.showing():
                pause = interval
                while True:
                    try:
                        _take(engine, board, watching, reported, ended)
                        for rid in list(watching):
                            done = _look(engine, rid, once)
                            if done is not None:
                                ended.append(done)
                                board.outcome(done)
                                del watching[rid]
                        pause = interval
                    except StoreUnavailable as exc:  # the database went away: wait for it
                        if pause == interval:
                            board.say("error", None, Text(f"{exc}; retrying", style="red"))
                        pause = min(pause * 2, max(interval, 5.0))
                    board.refresh(engine)
                    if once and not watching:
                        raise typer.Exit(exit_code(ended))
                    time.sleep(pause)
        except KeyboardInterrupt:
            stopping()
            stopped = True
            engine._stop_steps()  # no new step from now on; leaving `with` waits for them
            taken = set(engine._active)  # taken here, maybe not yet said: left too
            board.say(
                "stopping",
                None,
                "stopping: runs in flight stop at their next durable step, activities get "
                f"{grace:g} s to finish (a second Ctrl-C or SIGTERM stops at once)",
            )
            watchdog = _give_up_after(
                grace, board, lambda: sorted({*watching, *taken, *engine._active})
            )
    if stopped:
        watchdog.cancel()  # the engine is closed: the runs it executed are released
        left = sorted({*watching, *taken, *(h.run_id for h in engine.adopted)})
        text = f"stopped; left {len(left)} unfinished run(s), resumable by any worker"
        board.say("stopped", None, text + (": " + ", ".join(left) if left else ""), left=left)


def _give_up_after(grace: float, board: Board, left: Callable[[], list[str]]) -> threading.Timer:
    """Exit the process (code 1) once `grace` seconds pass, saying which runs it leaves; the
    caller cancels the timer when the engine closed in time."""

    def give_up() -> None:
        runs = left()
        text = (
            f"grace period of {grace:g} s over: exiting with activities in flight; left "
            f"{len(runs)} unfinished run(s), resumable by any worker"
        )
        board.say("stopped", None, text + (": " + ", ".join(runs) if runs else ""), left=runs)
        os._exit(1)

    timer = threading.Timer(grace, give_up)
    timer.daemon = True
    timer.start()
    return timer


def _unreadable(engine: Engine) -> Iterator[RunInfo]:
    """The damaged runs a worker would otherwise take: among the unfinished ones (the file
    store's index names them, and the runs found damaged since), not every run's journal."""
    for info in engine.store.iter_runs(unfinished=True):
        if info.status is RunStatus.UNREADABLE:
            yield info


@contextlib.contextmanager
def _signals() -> Iterator[Callable[[], None]]:
    """SIGTERM (as systemd and docker send) stops the worker as Ctrl-C does, gracefully;
    calling the function yielded makes a second SIGINT or SIGTERM end the process at once.
    The handlers before are back at the end (only the main thread may set any).

    The second signal is seen by a thread reading the signal module's wakeup pipe, not by a
    Python handler: the kernel may hand a process's signal to any thread (for one, to
    another thread while the main one creates a thread and blocks signals for a moment),
    and a handler runs only when the main thread next runs Python, which it may never do
    again while it waits for an activity that does not end."""
    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    pipe: list[int] = []

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    def stopping() -> None:
        if main and not pipe:
            pipe.extend(os.pipe())
            os.set_blocking(pipe[1], False)
            pipe.append(signal.set_wakeup_fd(pipe[1], warn_on_full_buffer=False))
            for sig in previous:
                signal.signal(sig, lambda signum, frame: os._exit(128 + signum))
            threading.Thread(
                target=_exit_on_signal, args=(pipe[0],), name="intemporal-stop", daemon=True
            ).start()

    if main:
        signal.signal(signal.SIGTERM, interrupt)
    try:
        yield stopping
    finally:
        if main:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if pipe:
                signal.set_wakeup_fd(pipe[2])
                os.close(pipe[1])  # the reading thread sees the end of the pipe and ends


def _exit_on_signal(reader: int) -> None:
    """End the process at once (code 128 + the signal's number, as a shell reports it) when
    SIGINT or SIGTERM comes through the wakeup pipe `reader`; return when the pipe closes."""
    with open(reader, "rb", buffering=0) as pipe:
        while number := pipe.read(1):
            if number[0] in (signal.SIGINT, signal.SIGTERM):
                os._exit(128 + number[0])


def _take(
    engine: Engine,
    board: Board,
    watching: dict[str, RunHandle],
    reported: set[str],
    ended: list[Outcome],
) -> None:
    """Take the runs nobody executes, and those clients recorded meanwhile; log each."""
    since = time.time()
    try:
        for handle in engine.recover():
            if handle.run_id not in watching:
                _watch(engine, board, watching, handle, since)
        while engine.adopted:  # recorded by clients meanwhile, taken at once: new runs
            handle = engine.adopted.popleft()
            if handle.run_id not in watching:
                _watch(engine, board, watching, handle, None)
    except _USER_ERRORS as exc:
        if str(exc) not in reported:  # say it once, keep serving the rest
            reported.add(str(exc))
            ended.append(Outcome("?", "error", error=describe(exc)))
            board.say("error", None, Text(f"cannot resume a run: {exc}", style="red"))


def _watch(
    engine: Engine,
    board: Board,
    watching: dict[str, RunHandle],
    handle: RunHandle,
    since: float | None,
) -> None:
    """Log "started" (a new run) or "resumed" (one that recorded steps before `since`)."""
    events = engine.history(handle.run_id)
    ran = since is not None and any(e.get("ts", since) < since for e in events[1:])
    board.queue_of[handle.run_id] = str(events[0].get("queue") or DEFAULT_QUEUE)
    watching[handle.run_id] = handle
    board.say("resumed" if ran else "started", handle.run_id)


def _look(engine: Engine, rid: str, once: bool) -> Outcome | None:
    """How a watched run ended, or where `--once` leaves it; None while it goes on."""
    stopped = render.halted(engine, rid)
    if stopped is not None:  # the store failed, or the workflow interrupted itself:
        return stopped  # say so once; it stays resumable
    info = chain_end(engine.get_run, engine.get_run(rid))  # continued as new: the last
    if info.status.finished:
        return replace(final_outcome(info), run_id=rid)
    if once and info.status is RunStatus.WAITING:  # it may take days
        what = render.long_wait(engine.history(info.run_id))
        if what is not None:  # parked: no process executes it now
            return Outcome(rid, info.status.value, waiting_for=what)
    return None
