"""A scheduled workflow for the worker processes of tests/test_schedules.py.

Each run appends "tick pid" to the file named by $MARKS: one line per execution of a tick.
"""

from __future__ import annotations

import os
from datetime import datetime

import intemporal


@intemporal.scheduled("* * * * * *")
@intemporal.workflow(name="every-second")
def every_second(tick: datetime) -> str:
    with open(os.environ["MARKS"], "a") as f:
        f.write(f"{tick.isoformat()} {os.getpid()}\n")
    return tick.isoformat()
