"""When the store fails: the run stops with `StoreUnavailable`, and a resume finishes it.

    python samples/disk_full.py                    # journals go to a fresh temporary directory
    python samples/disk_full.py --store .intemporal

prints
    run() raised StoreUnavailable: store unavailable: cannot write the journal of run ...
    status: running, journal: run_started, activity_completed
    after freeing the disk: shipped order-7
    calls: reserve 1, charge 2, ship 1

The disk "fills up" while `charge` runs, so its result cannot be journaled. The workflow
does not see that error (its `except Exception` is not entered), the run is not recorded
as failed, and `run()` raises `intemporal.StoreUnavailable` instead of waiting. Once the
disk is freed, `resume` finishes the run: `reserve` is not run again, and `charge`, the
step in flight, runs once more. (A real full disk does the same; here a `FileStore`
subclass plays the disk.)
"""

from __future__ import annotations

import argparse
import collections
import errno
import tempfile
from typing import Any

import intemporal
from intemporal.store import Event, Lease

CALLS: collections.Counter[str] = collections.Counter()


class FillingDisk(intemporal.FileStore):
    """A `FileStore` whose disk is `full` on demand: every journal append then fails."""

    full = False

    def claim(self, run_id: str, owner: str = "") -> Lease | None:
        lease = super().claim(run_id, owner)
        return None if lease is None else _Guarded(lease, self)

    def create_claimed(
        self, run_id: str, first: Event, sync: bool = True, owner: str = ""
    ) -> Lease | None:
        if not self.create(run_id, first, sync, owner):  # its creator executes it: no wake-up
            return None
        return self.claim(run_id, owner)


class _Guarded(Lease):
    def __init__(self, inner: Lease, disk: FillingDisk) -> None:
        self.run_id, self._inner, self._disk = inner.run_id, inner, disk

    def append(self, event: Event, sync: bool) -> None:
        if self._disk.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._inner.append(event, sync)

    def release(self) -> None:
        self._inner.release()


DISK: dict[str, FillingDisk] = {}


@intemporal.activity
def warehouse(action: str, order: str) -> str:
    CALLS[action] += 1
    return f"{action}ped {order}" if action == "ship" else f"{action}d {order}"


@intemporal.activity
def charge(order: str) -> str:
    CALLS["charge"] += 1
    if CALLS["charge"] == 1:
        DISK["disk"].full = True  # the disk fills up while the card is charged
    return f"charged {order}"


@intemporal.workflow
def fulfil(order: str) -> str:
    try:
        warehouse("reserve", order)
        charge(order)
        return warehouse("ship", order)
    except Exception as exc:  # never entered for a store failure
        return f"gave up: {exc}"


def main(store_dir: str) -> None:
    disk = DISK["disk"] = FillingDisk(store_dir)
    with intemporal.Engine(disk) as engine:
        try:
            engine.run(fulfil, "order-7", run_id="order-7")
        except intemporal.StoreUnavailable as exc:
            print(f"run() raised StoreUnavailable: {exc}")
        events = ", ".join(e["type"] for e in engine.history("order-7"))
        print(f"status: {engine.get_run('order-7').status}, journal: {events}")
        disk.full = False  # the disk is freed
        print("after freeing the disk:", engine.resume("order-7").result(timeout=30))
    print("calls: " + ", ".join(f"{k} {CALLS[k]}" for k in ("reserve", "charge", "ship")))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", help="the store directory (default: a fresh temporary one)")
    args: Any = parser.parse_args()
    if args.store:
        main(args.store)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
