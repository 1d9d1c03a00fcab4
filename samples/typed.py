"""Typed workflows: a type checker sees each workflow's arguments and result.

    python samples/typed.py [--store DIR]
    mypy --strict samples/typed.py

`@intemporal.workflow` and `@intemporal.activity` keep the function's signature, so
`engine.run(checkout, "order-42", 100)` is a `list[str]` to mypy, `engine.start(...)` a
`RunHandle[list[str]]`, `intemporal.submit(charge, ...)` a `DurableFuture[str]` whose
arguments are checked, and `intemporal.join_all` of such futures a `list[str]`. A
workflow's keyword arguments pass straight through (`express=True` below); the engine's
own options (`run_id=`, `queue=`, `delay=`, ...) are keyword-only. A Protocol stub is
seen as the Protocol.
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Protocol

import intemporal


class Mailer(Protocol):
    """Where the workflow sends its receipt."""

    def send(self, to: str, text: str) -> str:
        """Send `text` to `to`; return a message id."""
        ...


class Outbox:
    """A `Mailer` that keeps the messages."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, to: str, text: str) -> str:
        self.sent.append(f"{to}: {text}")
        return f"M-{len(self.sent)}"


mailer = intemporal.stub_protocol(Mailer)  # a `Mailer` to the type checker


@intemporal.activity
def charge(order_id: str, amount: int) -> str:
    return f"charged {amount} for {order_id}"


@intemporal.activity
def reserve(order_id: str, sku: str) -> str:
    return f"reserved {sku} for {order_id}"


@intemporal.workflow
def checkout(order_id: str, amount: int, *, express: bool = False) -> list[str]:
    futures = [intemporal.submit(reserve, order_id, sku) for sku in ("apple", "pear")]
    steps: list[str] = intemporal.join_all(futures)  # list[str]: the futures share a type
    steps.append(charge(order_id, amount + (5 if express else 0)))
    steps.append(mailer.send("customer@example.com", f"{order_id}: {len(steps)} steps"))
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--store", help="journal directory (default: a new temporary one)")
    opts = parser.parse_args()
    outbox = Outbox()
    with (
        tempfile.TemporaryDirectory(prefix="intemporal-typed-") as tmp,
        intemporal.Engine(store=opts.store or tmp) as engine,
    ):
        protocols = {Mailer: outbox}
        steps = engine.run(checkout, "order-1", 100, express=True, protocols=protocols)
        handle = engine.start(checkout, "order-2", 20, run_id="order-2", protocols=protocols)
        later: list[str] = handle.result(timeout=30)
        print(f"order-1: {steps}")
        print(f"order-2: {later}")
        print(f"sent: {outbox.sent}")


if __name__ == "__main__":
    main()
