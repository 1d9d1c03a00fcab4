"""A parked run (waiting without a thread) keeps its id, code and arguments, nothing more.

Issue 18: 10,000 parked runs took 131 MB, 10.8 KB each, because each kept the context of
its last execution (journal, futures) and the traceback of its suspension (the workflow's
frames and every local in them). What a parked run keeps is checked here by weak
references, not by timing or RSS: `make bench-store` measures the memory.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

from process_helpers import wait_until

import intemporal
from intemporal.replay import current

REFS: dict[str, weakref.ref[Any]] = {}


class Bulky:
    """A local of the workflow, alive while its frame is."""

    payload = b"x" * 10_000


@intemporal.workflow
def waits_holding_locals(tag: str) -> str:
    bulky = Bulky()  # a local: the suspension's traceback would keep it alive
    REFS[tag + ":local"] = weakref.ref(bulky)
    ctx = current()
    assert ctx is not None
    REFS[tag + ":context"] = weakref.ref(ctx)
    return str(intemporal.wait_for_signal("go")) + type(bulky).__name__


def test_a_parked_run_keeps_neither_its_context_nor_its_frames(tmp_path: Path) -> None:
    # Given runs parked waiting for a signal, their handles kept as a caller keeps them
    with intemporal.Engine(tmp_path, threads=2, durability="flush") as engine:
        handles = [engine.start(waits_holding_locals, f"r{i}", run_id=f"r{i}") for i in range(3)]
        waiting = intemporal.RunStatus.WAITING
        wait_until(lambda: all(h.status() is waiting for h in handles), timeout=20)
        wait_until(lambda: all(REFS.get(f"r{i}:context") for i in range(3)), timeout=20)

        # When nothing else runs
        def released() -> bool:
            gc.collect()
            return all(REFS[f"r{i}:{what}"]() is None for i in range(3) for what in REFS_KINDS)

        # Then neither the workflow's locals nor its execution context are alive
        wait_until(released, timeout=20)

        # And the runs still wake and finish where they waited
        for h in handles:
            h.signal("go", 1)
        assert [h.result(timeout=30) for h in handles] == ["1Bulky"] * 3


REFS_KINDS = ("local", "context")
