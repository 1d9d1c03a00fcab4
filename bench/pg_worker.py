"""A worker process of the PostgreSQL benchmark: serves one database until its stdin closes.

    python bench/pg_worker.py DSN [--threads N] [--lease SECONDS]

Prints `serving <engine id>` once it takes runs (the journal names that id as the `owner`
of each event it appends). It imports `workload`, so it executes the bench's workflows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
for _p in (str(BENCH), str(BENCH.parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import workload  # noqa: E402,F401  (the workflows it executes)

from intemporal import Engine, PostgresStore  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dsn")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--lease", type=float, default=15.0)
    args = ap.parse_args()
    with Engine(PostgresStore(args.dsn, lease=args.lease), threads=args.threads) as engine:
        engine.recover()
        print("serving", engine.engine_id, flush=True)
        sys.stdin.read()  # until the bench closes it (or kills this process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
