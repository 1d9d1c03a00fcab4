"""Fan-out: a small map-reduce with one child workflow per chunk.

    python samples/fan_out.py                  # journals go to a fresh temporary directory
    python samples/fan_out.py --store .intemporal

The parent splits ten inputs into chunks and submits one child workflow per chunk
(`intemporal.submit(child_wf, chunk)`: started without waiting). Each child submits one
activity per input and joins them; the parent joins the children and adds up their
results. Every child is a durable run of its own, with id `"<parent>/<seq>"` (a
subfolder of the store), so a crash resumes only the work that had not finished.

prints (the run id differs)
    map-reduce over 10 inputs in 5 chunks, one child run each:
      fan-out-1a2b3c4d/1  [1, 2]  -> 5  (completed)
      ...
      fan-out-1a2b3c4d/5  [9, 10]  -> 181  (completed)
    result: 385 (sum of the squares of 1..10)
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid

import intemporal

INPUTS = list(range(1, 11))
CHUNK = 2


def split(inputs: list[int], size: int) -> list[list[int]]:
    """The chunks of `inputs`, in order: [1, 2], [3, 4], ..."""
    return [inputs[i : i + size] for i in range(0, len(inputs), size)]


@intemporal.activity
def square(x: int) -> int:
    """The map step: slow enough (0.1 s) that running them side by side shows."""
    time.sleep(0.1)
    return x * x


@intemporal.workflow
def sum_of_squares(chunk: list[int]) -> int:
    """A child run: map its chunk with one activity per input, in parallel, then reduce."""
    futures = [intemporal.submit(square, x) for x in chunk]
    return sum(intemporal.join_all(futures))


@intemporal.workflow
def map_reduce(inputs: list[int], chunk: int) -> dict[str, int]:
    """The parent run: one child per chunk, all started at once, then joined in order."""
    chunks = split(inputs, chunk)
    children = [intemporal.submit(sum_of_squares, c) for c in chunks]
    partials = intemporal.join_all(children)
    return {"total": sum(partials), "chunks": len(chunks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="journal directory (default: a new temporary one)")
    opts = parser.parse_args()
    run_id = f"fan-out-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="intemporal-fan-out-") as tmp:
        with intemporal.Engine(store=opts.store or tmp, threads=8) as engine:
            started = time.monotonic()
            result = engine.run(map_reduce, INPUTS, CHUNK, run_id=run_id)
            elapsed = time.monotonic() - started
            children = sorted(
                (r for r in engine.list_runs() if r.parent == run_id),
                key=lambda r: int(r.run_id.rsplit("/", 1)[1]),
            )
            print(
                f"map-reduce over {len(INPUTS)} inputs in {result['chunks']} chunks, "
                "one child run each:"
            )
            for child, chunk in zip(children, split(INPUTS, CHUNK), strict=True):
                print(f"  {child.run_id}  {chunk}  -> {child.result}  ({child.status})")
        print(f"result: {result['total']} (sum of the squares of 1..{len(INPUTS)})")
        print(f"took {elapsed:.2f} s for {len(INPUTS)} activities of 0.1 s each")


if __name__ == "__main__":
    main()
