"""Crash tests: run a workflow script in a child process and SIGKILL it at a chosen point.

`run_and_kill` writes a script into the test's `tmp_path` (a preamble, the test's body, and
a `__main__` block that starts the workflow on an `Engine` over a `FileStore`), launches it
with this interpreter, waits (polling, with a deadline) until the side-effect file has N
lines and an optional extra condition holds, then SIGKILLs the child. The child is killed
and reaped in every case, also when the test fails.

The body defines its activities and one workflow named `WF_NAME` (unique per call, so the
test process, which later loads the script to resume the run, never confuses two scripts),
bound to the module-level name `WORKFLOW`.
Activities call `record(...)` for each side effect: one line appended with a single
unbuffered `os.write`, so it survives the SIGKILL. `hang()` blocks forever in the child
and does nothing in the test process, which is how a test pins the kill inside one activity.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHILD_ENV = "INTEMPORAL_TEST_CHILD"

PREAMBLE = '''\
import os
import threading

import intemporal

STORE = {store!r}
SIDE_EFFECTS = {side_effects!r}
WF_NAME = {wf_name!r}
IN_CHILD = os.environ.get({env!r}) == "1"


def record(*fields):
    """Append one side-effect line, written through before returning."""
    line = " ".join(str(f) for f in fields) + "\\n"
    fd = os.open(SIDE_EFFECTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def hang():
    """Block forever in the child (the test kills it here); a no-op in the test process."""
    if IN_CHILD:
        threading.Event().wait()

'''

MAIN = """

if __name__ == "__main__":
    with intemporal.Engine(STORE, threads=2) as engine:
        {call}
"""


_CALLS = {
    "start": "engine.start(WORKFLOW, *{args!r}, run_id={run_id!r}).result()",
    "run": "engine.run(WORKFLOW, *{args!r}, run_id={run_id!r})",
}


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds.

    `timeout` guards against a hang, it times nothing: a passing test returns as soon as
    the condition holds. The default covers a child process's start on a loaded CI host
    (one took over 10 s at a load average of 23). The failure names `what` and shows where
    every thread of this process stands (`thread_stacks`): a flaky timeout under load says
    what the engine was doing."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}\n{thread_stacks()}"
            )
        time.sleep(0.002)


def thread_stacks(limit: int = 6) -> str:
    """Where each thread of this process stands now: its name and innermost `limit` frames."""
    import traceback

    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame, limit=limit))
        out.append(f"--- thread {names.get(ident, ident)}\n{stack}")
    return "\n".join(out)


def read_lines(path: Path) -> list[str]:
    """The complete lines of a text file ([] when it does not exist yet)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return text.split("\n")[:-1]


def journal_events(store: Path, run_id: str) -> list[dict[str, Any]]:
    """The complete, parseable events of a file-store journal, read directly from disk."""
    return [json.loads(line) for line in read_lines(store / f"{run_id}.jsonl") if line]


@dataclass
class Crash:
    """What a killed child left behind."""

    store: Path
    side_effects: Path
    script: Path
    run_id: str
    wf_name: str
    returncode: int

    def lines(self) -> list[str]:
        return read_lines(self.side_effects)

    def counts(self) -> collections.Counter[str]:
        return collections.Counter(self.lines())

    def events(self) -> list[dict[str, Any]]:
        return journal_events(self.store, self.run_id)


def run_and_kill(
    tmp_path: Path,
    body: str,
    *,
    lines: int,
    args: tuple[Any, ...] = (),
    run_id: str = "crash-run",
    ready: Callable[[Path, str], bool] | None = None,
    timeout: float = 20.0,
    via: str = "start",
) -> Crash:
    """Run `body`'s workflow (`WORKFLOW`) in a child; SIGKILL it after `lines` side effects.

    `ready(store, run_id)`, if given, must also hold before the kill (e.g. a journal event
    is on disk). Fails if the child exits by itself first or the deadline passes. `via`:
    the child executes the run with `engine.start(...).result()` or `engine.run(...)`.
    """
    tag = uuid.uuid4().hex[:10]
    store = tmp_path / "store"
    side_effects = tmp_path / f"side_effects_{tag}.txt"
    script = tmp_path / f"crash_{tag}.py"
    wf_name = f"crash-wf-{tag}"
    source = (
        PREAMBLE.format(
            store=str(store), side_effects=str(side_effects), wf_name=wf_name, env=CHILD_ENV
        )
        + textwrap.dedent(body)
        + MAIN.format(call=_CALLS[via].format(args=tuple(args), run_id=run_id))
    )
    script.write_text(source)
    stderr_path = tmp_path / f"crash_{tag}.stderr"
    env = {**os.environ, CHILD_ENV: "1"}
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if len(read_lines(side_effects)) >= lines and (ready is None or ready(store, run_id)):
                break
            if proc.poll() is not None:
                raise AssertionError(
                    f"the child exited with {proc.returncode} before it was killed "
                    f"({len(read_lines(side_effects))} side effects); stderr:\n"
                    + stderr_path.read_text()
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the child did not reach {lines} side effects within {timeout} s; stderr:\n"
                    + stderr_path.read_text()
                )
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, stderr_path.read_text()
    return Crash(store, side_effects, script, run_id, wf_name, proc.returncode)


@contextlib.contextmanager
def ui_server(
    args: list[str], cwd: Path | str | None = None, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run `intemporal ARGS...` (a `ui` command) in a child; yield it and the URL it printed.

    Fails if no "serving http://..." line comes within 20 s. The child is stopped (SIGTERM,
    then SIGKILL) and reaped when the block ends, unless the test already stopped it.
    """
    cmd = [sys.executable, "-m", "intemporal.cli", *args]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )
    try:
        first: list[str] = []
        assert proc.stdout is not None
        reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(20)
        url = re.search(r"serving (http://\S+)", first[0] if first else "")
        if url is None:
            proc.kill()
            raise AssertionError(f"no URL printed: {first}; stderr: {proc.stderr.read()}")  # type: ignore[union-attr]
        yield proc, url.group(1)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait(timeout=10)
