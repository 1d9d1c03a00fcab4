"""Async workflows: a crawl written with `async def`, `asyncio.gather` and a race.

    python samples/async_crawl.py                  # journals go to a fresh temporary directory
    python samples/async_crawl.py --store .intemporal

`fetch` is an `async def` activity (here a fake page fetch that awaits `asyncio.sleep`,
as an httpx call would). The workflow fetches five pages at once with `asyncio.gather`
(each fetch a durable step), asks two mirrors for a checksum and keeps whichever answers
first (`asyncio.wait(..., return_when=FIRST_COMPLETED)`: the winner is journaled, so a
replay takes the same branch), stores the result with a plain `def` activity (run on the
engine's threads) and books it in a saga (`async with intemporal.saga()`). It runs on an
`AsyncEngine` inside `asyncio.run`; the sync `Engine` runs the same workflow too.

prints (the run id differs)
    5 pages fetched in 0.2 s (side by side, not 1.0 s one after the other)
    checksum from the fast mirror (the slow one was cancelled)
    stored: 5 pages, 1,950 bytes
    journal: fetch x5, mirror x2 (1 cancelled), store, run_completed
    the sync Engine ran it too: 5 pages
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid

import intemporal

PAGES = [f"https://example.com/page/{i}" for i in range(5)]


@intemporal.activity
async def fetch(url: str) -> str:
    """A slow I/O call (0.2 s), awaited on the event loop: no thread is held meanwhile."""
    await asyncio.sleep(0.2)
    return f"<html>{url}</html>" * 10


@intemporal.activity
async def checksum(mirror: str, pages: list[str]) -> str:
    """Two mirrors answer the same question; the fast one wins the race."""
    await asyncio.sleep(0.05 if mirror == "fast" else 5)
    return f"{mirror}:{sum(len(p) for p in pages)}"


@intemporal.activity
def store_pages(pages: list[str]) -> int:
    """A plain (def) activity: it runs on the engine's activity threads."""
    return sum(len(p) for p in pages)


@intemporal.activity
def release(size: int) -> None:
    """The compensation of `store_pages`."""


@intemporal.workflow
async def crawl(urls: list[str]) -> dict[str, object]:
    """Fetch every page at once, race two mirrors, then store the pages in a saga."""
    started = intemporal.now()
    pages = await asyncio.gather(*(fetch(u) for u in urls))
    took = (intemporal.now() - started).total_seconds()
    fast = asyncio.create_task(checksum("fast", pages))
    slow = asyncio.create_task(checksum("slow", pages))
    done, pending = await asyncio.wait({fast, slow}, return_when=asyncio.FIRST_COMPLETED)
    winner = done.pop().result()
    for task in pending:
        task.cancel()  # the losing activity's task is cancelled (journaled as such)
    async with intemporal.saga() as saga:
        size = await store_pages(pages)  # type: ignore[misc]  # awaitable in an async run
        saga.add_compensation(release, size)
    return {"pages": len(pages), "took": took, "checksum": winner, "bytes": size}


def journal_summary(events: list[dict[str, object]]) -> str:
    """The journal in one line: activities by name, cancelled ones counted."""
    names = [
        str(e["name"]) for e in events if e["type"] in ("activity_completed", "activity_failed")
    ]
    cancelled = sum(1 for e in events if e["type"] == "activity_failed")
    return (
        f"fetch x{names.count('fetch')}, mirror x{names.count('checksum')} "
        f"({cancelled} cancelled), store, {events[-1]['type']}"
    )


async def main(store: str) -> None:
    run_id = f"crawl-{uuid.uuid4().hex[:8]}"
    async with intemporal.AsyncEngine(store) as engine:
        result = await engine.run(crawl, PAGES, run_id=run_id)
        print(
            f"{result['pages']} pages fetched in {result['took']:.1f} s (side by side, not 1.0 s one after the other)"
        )
        mirror = str(result["checksum"]).split(":")[0]
        print(f"checksum from the {mirror} mirror (the slow one was cancelled)")
        print(f"stored: {result['pages']} pages, {result['bytes']:,} bytes")
        print("journal:", journal_summary(await engine.history(run_id)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="journal directory (default: a new temporary one)")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="intemporal-async-") as tmp:
        asyncio.run(main(opts.store or tmp))
        with intemporal.Engine(opts.store or tmp) as sync_engine:  # it owns a loop thread
            again = sync_engine.run(crawl, PAGES[:5])
            print(f"the sync Engine ran it too: {again['pages']} pages")
