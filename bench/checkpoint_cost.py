"""What the write-ahead log's checkpoints cost the disk, rep by rep of scenario 1.

    python bench/checkpoint_cost.py                      # this checkout
    python bench/checkpoint_cost.py --tree /tmp/base     # another checkout's intemporal
    python bench/checkpoint_cost.py --reps 6 --tmp DIR
    python bench/checkpoint_cost.py --each --threads 1   # each file, one after another

Runs scenario 1's workload (`engine.run`, 300 workflows x 10 activities a rep, fsync) on a
new store and prints, for each rep: its wall time, the checkpoints made during it (files
named, how they were synced: `syncfs` or each file, milliseconds; each move of the log to
a new segment, on the commit path, milliseconds), and the device flushes
and writes the store's disk completed meanwhile (from /sys/dev/block/M:m/stat: the whole
disk's, other programs' included). The first reps are those where the log moves through
its first, small segments (64 KiB, 256 KiB, 1 MiB, then 4 MiB), each move checkpointing
every journal the segment before named.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def _disk_stat(path: str) -> tuple[int, int] | None:
    """(flushes, writes) the block device holding `path` completed so far, if known."""
    dev = os.stat(path).st_dev
    try:
        fields = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat").read_text().split()
    except OSError:
        return None
    if len(fields) < 17:
        return None
    return int(fields[15]), int(fields[4])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", help="the checkout whose intemporal to run (default: this)")
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--tmp", help="where the store goes (default: bench/.tmp)")
    parser.add_argument(
        "--each", action="store_true", help="never sync the whole filesystem (syncfs)"
    )
    parser.add_argument("--threads", type=int, help="walfile.SYNC_THREADS (files synced at once)")
    args = parser.parse_args()
    bench = Path(__file__).resolve().parent
    tree = Path(args.tree).resolve() if args.tree else bench.parent
    sys.path[:0] = [str(tree), str(bench)]
    import workload

    import intemporal
    from intemporal.store import wal, walfile

    if args.each:
        walfile.DIRTY_PER_FILE = -1
    if args.threads is not None:
        walfile.SYNC_THREADS = args.threads
    events: list[str] = []
    lock = threading.Lock()
    real_sync_files = wal.WriteAheadLog._sync_files
    real_syncfs = walfile.syncfs
    whole = threading.local()

    def syncfs(fd: int) -> None:
        whole.used = True
        real_syncfs(fd)

    def sync_files(self: Any, paths: dict[str, bool]) -> None:
        whole.used = False
        t0 = time.perf_counter()
        real_sync_files(self, paths)
        ms = (time.perf_counter() - t0) * 1e3
        with lock:
            how = "syncfs" if whole.used else "each"
            events.append(f"{len(paths)} files {how} {ms:.1f} ms")

    real_advance = wal.WriteAheadLog._advance

    def advance(self: Any, segno: int) -> tuple[int, int]:
        t0 = time.perf_counter()
        got = real_advance(self, segno)
        with lock:
            events.append(f"to segment {got[0]}: {(time.perf_counter() - t0) * 1e3:.1f} ms")
        return got

    wal.WriteAheadLog._advance = advance  # type: ignore[method-assign]
    walfile.syncfs = syncfs  # type: ignore[assignment]
    wal.WriteAheadLog._sync_files = sync_files  # type: ignore[method-assign]
    tmp = Path(args.tmp) if args.tmp else bench / ".tmp"
    tmp.mkdir(exist_ok=True)
    os.sync()
    root = tempfile.mkdtemp(dir=tmp, prefix="ckpt-")
    print(f"tree {tree}, store {root}")
    with intemporal.Engine(intemporal.FileStore(root), threads=4, durability="fsync") as engine:
        engine.run(workload.seq_workflow, 10, -1)
        for rep in range(args.reps):
            with lock:
                seen = len(events)
            before = _disk_stat(root)
            cpu, t0 = time.process_time(), time.perf_counter()
            for j in range(300):
                engine.run(workload.seq_workflow, 10, j)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu
            after = _disk_stat(root)
            disk = ""
            if before and after:
                disk = f"  flushes {after[0] - before[0]:5d}  writes {after[1] - before[1]:6d}"
            with lock:
                mine = events[seen:]
            print(f"rep {rep}: {wall:.3f} s  cpu {cpu:.3f} s{disk}  checkpoints {mine}")
    print(f"store left at {root} (delete it later: deleting just before a run slows creation)")


if __name__ == "__main__":
    main()
