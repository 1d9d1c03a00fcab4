"""Protocols: call a service through an interface, every method call a durable activity.

    python samples/protocols.py [--store DIR]

The workflow only knows the `Inventory` interface. `intemporal.stub_protocol(Inventory)`
returns a proxy whose method calls are durable activities named "Inventory.<method>",
executed on the implementation given at start: `protocols={Inventory: InMemoryInventory()}`.
Options can be set per method: here `reserve` talks to a flaky warehouse, so it gets a
retry policy of its own (5 attempts, 10 ms apart, doubling).
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Protocol

import intemporal


class Inventory(Protocol):
    """What the order workflow needs from a warehouse."""

    def stock(self, sku: str) -> int:
        """How many units of `sku` are on hand."""
        ...

    def reserve(self, sku: str, qty: int) -> str:
        """Set `qty` units of `sku` aside; return a reservation id."""
        ...


class InMemoryInventory:
    """An implementation for the demo: a dict, and a warehouse link that drops calls."""

    def __init__(self, stock: dict[str, int], drop_first: int = 2) -> None:
        self._stock = dict(stock)
        self._drops_left = drop_first  # the first calls to `reserve` fail, as networks do
        self._next_id = 0

    def stock(self, sku: str) -> int:
        return self._stock.get(sku, 0)

    def reserve(self, sku: str, qty: int) -> str:
        if self._drops_left > 0:
            self._drops_left -= 1
            raise ConnectionError("warehouse did not answer")
        if self._stock.get(sku, 0) < qty:
            raise ValueError(f"only {self._stock.get(sku, 0)} x {sku} left")
        self._stock[sku] -= qty
        self._next_id += 1
        return f"R-{self._next_id:04d}"


inventory = intemporal.stub_protocol(
    Inventory,
    timeout=5.0,  # every method: one attempt may take at most 5 s
    methods={"reserve": {"retry": intemporal.RetryPolicy(max_attempts=5, initial_interval=0.01)}},
)


@intemporal.workflow
def place_order(order: dict[str, int]) -> dict[str, str]:
    """Reserve every line of an order whose stock suffices; report the others."""
    outcome = {}
    for sku, qty in order.items():
        if inventory.stock(sku) >= qty:
            outcome[sku] = inventory.reserve(sku, qty)
        else:
            outcome[sku] = "out of stock"
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="journal directory (default: a new temporary one)")
    opts = parser.parse_args()
    warehouse = InMemoryInventory({"apple": 10, "pear": 1})
    order = {"apple": 3, "pear": 2}
    with (
        tempfile.TemporaryDirectory(prefix="intemporal-protocols-") as tmp,
        intemporal.Engine(store=opts.store or tmp) as engine,
    ):
        handle = engine.start(place_order, order, protocols={Inventory: warehouse})
        print(f"order {order} -> {handle.result(timeout=30)}")
        print(f"journal of run {handle.run_id}:")
        for event in engine.history(handle.run_id):
            step = f"#{event['seq']} {event['name']}" if "seq" in event else ""
            detail = ""
            if event["type"] == "attempt_failed":
                detail = (
                    f"attempt {event['attempt']}: {event['error']['type']}, "
                    f"retry in {event['retry_in']} s"
                )
            print(f"  {event['type']:<20} {step:<22} {detail}".rstrip())
    print(f"apples left in the warehouse: {warehouse.stock('apple')}")


if __name__ == "__main__":
    main()
