"""The smallest intemporal program: one activity and one protocol method in a workflow.

    python samples/hello.py                    # journals go to a fresh temporary directory
    python samples/hello.py --store .intemporal

prints
    {"activity": ["processed", 1], "protocol": ["X", "child"]}

Each call below is a durable step: its result is written to the run's journal
(`<store>/<run id>.jsonl`) before the workflow moves on, so a crashed run resumes
without doing the finished steps again.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from typing import Any, Protocol

import intemporal


@intemporal.activity
def activity_fn(a: Any) -> list[Any]:
    """A plain function made durable: inside a workflow each call is journaled."""
    return ["processed", a]


class MyActivities(Protocol):
    """An interface whose methods become durable activities through `stub_protocol`."""

    def foo(self, a: Any) -> list[Any]: ...


class Impl:
    """The implementation, given to the engine when the run starts."""

    def foo(self, a: Any) -> list[Any]:
        return [a, "child"]


# Every call on this proxy is a durable activity named "MyActivities.foo", executed on
# the implementation registered with `protocols={MyActivities: Impl()}`.
pr = intemporal.stub_protocol(MyActivities)


@intemporal.workflow
def hello_workflow(i: int) -> dict[str, Any]:
    return {"activity": activity_fn(i), "protocol": pr.foo("X")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="journal directory (default: a new temporary one)")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="intemporal-hello-") as tmp:
        with intemporal.Engine(store=opts.store or tmp) as engine:
            result = engine.run(hello_workflow, 1, protocols={MyActivities: Impl()})
        print(json.dumps(result))


if __name__ == "__main__":
    main()
