"""The workflow of the many-hosts sample: an order in three steps, one short sleep each.

Every worker imports this module (`intemporal worker --import flows`); the producer only
needs the workflow's name to enqueue runs of it.
"""

from __future__ import annotations

import os
import socket
import time

import intemporal


@intemporal.activity(name="many_hosts.step")
def step(order: int, what: str) -> str:
    """One step of an order: says which host and process did it."""
    time.sleep(0.05)
    return f"{what} #{order} on {socket.gethostname()}:{os.getpid()}"


@intemporal.workflow(name="many_hosts.order")
def order(number: int) -> list[str]:
    """Reserve, charge, ship: three durable steps, resumed by any worker after a crash."""
    return [step(number, what) for what in ("reserve", "charge", "ship")]
