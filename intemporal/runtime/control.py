"""Acting on existing runs: `Engine.cancel`, `terminate`, `signal` and `fork`.

`Control` is a part of `intemporal.Engine`. Each call reaches the run that carries the
given one on now (the last run of its continue-as-new chain, `lineage.py`), writes a
message to its inbox (or, for a run nobody executes, ends it here: `control.py`), and
pokes this engine so a run it executes or parks takes the message at once.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from ..codec import encode
from ..control import check_reason, terminate_run
from ..errors import IntemporalError, RunNotFound, store_call
from ..events import (
    CANCEL,
    CHILD_STARTED,
    SIGNAL,
    SIGNAL_RECEIVED,
    TERMINAL_EVENTS,
    check_version,
)
from ..handle import RunHandle, chain_end
from ..lineage import check_step, fork_run
from ..runs import new_run_id as random_id
from ..store import Event, RunInfo, RunStatus, check_run_id
from .starting import Starting

if TYPE_CHECKING:
    from collections.abc import Mapping


class Control(Starting):
    """The engine's calls on runs that exist: cancel, terminate, signal, fork (which
    executes the fork as `Starting._resume` executes a claimed run)."""

    if TYPE_CHECKING:

        def get_run(self, run_id: str) -> RunInfo: ...
        def history(self, run_id: str) -> list[Event]: ...
        def poke(self, run_id: str) -> None: ...
        def resume(
            self,
            run_id: str,
            *,
            protocols: Mapping[Any, Any] | None = None,
            imports: list[str] | None = None,
        ) -> RunHandle[Any]: ...

    def _cancel(self, run_id: str) -> None:
        run_id = self._latest(run_id)
        events = self.history(run_id)
        if events[-1]["type"] in TERMINAL_EVENTS:
            return
        with store_call(run_id, f"send a cancellation to run {run_id!r}", caller=True):
            self.store.send(run_id, {"type": CANCEL, "ts": round(self.clock.time(), 6)})
        self.poke(run_id)
        for ev in events:
            if ev["type"] == CHILD_STARTED:
                with contextlib.suppress(RunNotFound):  # recorded, never created: nothing to do
                    self._cancel(ev["child_id"])

    def _terminate(self, run_id: str, reason: str | None) -> None:
        reason, now = check_reason(reason), self.clock.time()
        run_id = self._latest(run_id)
        with store_call(run_id, f"terminate run {run_id!r}", caller=True):
            woken = terminate_run(
                self.store, run_id, reason, self.engine_id, self.codec, now, self.sync
            )
        for rid in [run_id, *woken]:
            self.poke(rid)

    def _latest(self, run_id: str) -> str:
        """The id of the run that carries `run_id` on now: `run_id` itself, or the last run of
        the chain it continued as new into (`continue_as_new`). `RunNotFound` if unknown."""
        return chain_end(self.get_run, self.get_run(run_id)).run_id

    def _fork(self, run_id: str, from_step: int, new_run_id: str | None) -> RunHandle[Any]:
        events = self.history(run_id)
        check_version(events[0])  # before a copy of it is written under the fork's id
        step = check_step(events, from_step, run_id)
        new_id = check_run_id(new_run_id) if new_run_id is not None else random_id()
        with store_call(new_id, f"create run {new_id!r}", caller=True, started=False):
            now = self.clock.time()
            lease = fork_run(self.store, run_id, events, step, new_id, now, self.version, self.sync)
        if lease is None:  # this very fork, made before
            return self.resume(new_id)
        return self._resume(new_id, None, None, lease)

    def _signal(self, run_id: str, name: str, payload: Any, signal_id: str | None) -> None:
        info = chain_end(self.get_run, self.get_run(run_id))  # continued as new: the last
        run_id = info.run_id
        if info.status.finished:
            raise IntemporalError(
                f"run {run_id!r} is {info.status.value}: it takes no more signals"
            )
        message = {
            "type": SIGNAL,
            "name": name,
            "payload": encode(payload, self.codec),
            "signal_id": signal_id or random_id(),
            "ts": round(self.clock.time(), 6),
        }
        with store_call(run_id, f"send signal {name!r} to run {run_id!r}", caller=True):
            self.store.send(run_id, message)
            self.poke(run_id)
            self._pass_on(run_id, message)

    def _pass_on(self, run_id: str, message: Event) -> None:
        """Send `message` on down the chain when run `run_id` continued as new before taking
        it: it came after the run had passed its unread signals on (`lineage.replay_signals`).
        The next run takes each signal id once, so a copy sent twice is taken once. Each
        run is looked at after the send to it: one that ends meanwhile passes on only what
        its inbox held before."""
        info = self.get_run(run_id)
        while info.status is RunStatus.COMPLETED and info.raw.get("continued_as"):
            taken = any(
                e["type"] == SIGNAL_RECEIVED and e.get("signal_id") == message["signal_id"]
                for e in self.history(info.run_id)
            )
            if taken:
                return
            nxt = str(info.raw["continued_as"])
            self.store.send(nxt, message)
            self.poke(nxt)
            info = self.get_run(nxt)
