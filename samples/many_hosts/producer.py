"""Enqueue orders for the workers of any host to execute: a client engine runs nothing.

    python producer.py --store postgresql://app@db/flows --count 100

Then run `intemporal --store postgresql://app@db/flows worker --import flows` on as many
hosts as you like (from this folder): each takes runs from the database, and a worker
killed mid-run has its runs finished by another once its lease (15 s) expires.
"""

from __future__ import annotations

import argparse
import time

from flows import order

import intemporal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="postgresql://user@host:5432/db")
    parser.add_argument("--count", type=int, default=100, help="orders to enqueue")
    parser.add_argument("--wait", action="store_true", help="wait until all have completed")
    args = parser.parse_args()
    with intemporal.Engine(store=args.store, worker=False) as client:
        batch = f"{time.time():.0f}"
        handles = [client.start(order, n, run_id=f"order-{batch}-{n}") for n in range(args.count)]
        print(f"enqueued {len(handles)} orders (order-{batch}-*)", flush=True)
        if args.wait:
            hosts = {h.result(timeout=600)[0].rsplit(" on ", 1)[1] for h in handles}
            print(f"all {len(handles)} completed, by {len(hosts)} worker process(es)")


if __name__ == "__main__":
    main()
