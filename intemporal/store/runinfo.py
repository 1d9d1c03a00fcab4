"""What a listing shows of a run: `RunInfo`, built from a journal's events by `summarize`,
and the two checks every store applies to names: `check_run_id` and `redact` (a store
location with its password masked).

    info = summarize("order-42", events, claimed=False)   # status, times, result or error,
                                                            # whether a live lease holds it
    check_run_id("order-42/3")                              # ValueError if malformed
    redact("postgresql://u:pw@db/x")                        # 'postgresql://u:***@db/x'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..codec import masked, peek
from ..events import Event, RunState, RunStatus, fold

# `~<n>` ends a segment only: the ids continue-as-new gives ("order-42~3", "r/2~1")
_RUN_ID = re.compile(r"(?=.{1,200}$)(?:[A-Za-z0-9\-_.:@/]|~[0-9]+(?=/|$))+", re.S)

_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_SECRET_PARAM = re.compile(
    r"((?:^|[?&;\s])(?:password|passwd|pwd|secret|token|sslpassword)=)[^&;\s]*", re.I
)


def redact(location: str) -> str:
    """`location` (a path, a URL or a DSN) fit to print: any password in it shown as `***`.

    >>> redact("postgresql://app:s3cret@db:5432/prod?password=x")
    'postgresql://app:***@db:5432/prod?password=***'
    """
    m = _URL.match(location)
    if m:  # the user info ends at the last "@": a password may hold "@", "/" or "?"
        at = location.rfind("@", m.end())
        if at >= 0:
            user, colon, _ = location[m.end() : at].partition(":")
            location = m.group() + user + (":***" if colon else "") + location[at:]
    return _SECRET_PARAM.sub(r"\1***", location)


def check_run_id(run_id: object) -> str:
    """Return `run_id` if it is safe as a name (and a path); raise `ValueError` otherwise.

    1-200 characters of letters, digits and `-_.:@/`, no leading `/`, no empty, `.` or `..`
    segment: a run id becomes a file path in the file store and must never escape it. A
    segment may end in `~<digits>`, as the runs of a continue-as-new chain do ("r~2").
    """
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(
            f"invalid run id {run_id!r}: use 1-200 letters, digits and -_.:@/ characters"
        )
    if any(part in ("", ".", "..") for part in run_id.split("/")):
        raise ValueError(f"invalid run id {run_id!r}: no leading '/', '//', '.' or '..' segment")
    return run_id


@dataclass
class RunInfo:
    """What a run looks like from outside: `engine.get_run(id)`, `engine.list_runs()`.

    Built without running anything: `result` is the value when it is plain JSON (or a
    `Secret`), and an `intemporal.codec.DillValue` (type name and size) when it is pickled.
    """

    run_id: str
    workflow: str
    status: RunStatus
    created_at: float
    updated_at: float
    result: Any = None
    error: str | None = None
    parent: str | None = None
    steps: int = 0
    orphaned: bool = False
    owner: str | None = None  # the engine that parked a waiting run
    version: str | None = None  # the `Engine(version=...)` that started it
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    queue: str | None = None  # the queue it was started on (`start(queue=...)`)
    start_at: float | None = None  # epoch seconds: not started before (`start(delay=...)`)
    #: a live process holds the unfinished run's lease as the store looked: it executes
    #: it. Never set for a finished run (a failed one being resumed: claim it to know).
    executing: bool = False

    def matches(self, status: RunStatus | None, workflow: str | None) -> bool:
        """Whether this run passes the filters of `list_runs` (None: any)."""
        return (status is None or self.status is status) and (
            workflow is None or self.workflow == workflow
        )

    @property
    def duration(self) -> float:
        """Seconds from creation to the last recorded event."""
        return self.updated_at - self.created_at

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the summary (the result stays in its stored form)."""
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "status": self.status.value,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "duration": round(self.duration, 6),
            "steps": self.steps,
            "parent": self.parent,
            "orphaned": self.orphaned,
            "owner": self.owner,
            "result": masked(self.raw.get("result")),
            "error": self.error,
            "version": self.version,
        }


def summarize(run_id: str, events: list[Event], claimed: bool) -> RunInfo:
    """Fold a run's journal into a `RunInfo`; `claimed` says whether an owner holds it now."""
    return summarize_state(run_id, fold(events), claimed)


def summarize_state(run_id: str, state: RunState, claimed: bool) -> RunInfo:
    """A `RunInfo` from a run's folded state (a store that keeps the fold reads no journal)."""
    status = state.status
    if claimed and not status.finished:
        status = RunStatus.RUNNING
    orphaned = not claimed and status is RunStatus.RUNNING
    raw = state.outcome
    err = raw.get("error")
    return RunInfo(
        run_id=run_id,
        workflow=state.workflow,
        status=status,
        created_at=state.created_at,
        updated_at=state.updated_at,
        result=peek(raw["result"]) if "result" in raw else None,
        error=_error_text(err) if err else None,
        parent=state.parent,
        steps=state.steps,
        orphaned=orphaned,
        owner=state.owner if status is RunStatus.WAITING else None,
        version=state.code_version,
        raw=raw,
        queue=state.queue,
        start_at=state.start_at,
        executing=claimed and not status.finished,
    )


def _error_text(err: dict[str, Any]) -> str:
    text = f"{err['type']}: {err['message']}"
    return "; ".join([text, *err.get("notes", [])])
