"""Could the write-ahead log's sync overlap the run's Python? Two measures on this disk.

    python bench/sync_overlap.py [--dir DIR] [--rounds 8] [--work 0,5,10,15]
    python bench/sync_overlap.py --window            # the window a step could overlap

1. A synced 300-byte write in place into a 4 MiB zero-filled file, then `--work` µs of
   Python (what a durable step does between its outcome's append and the run's next
   effect), three ways, interleaved round by round in one process: **serial** (the log
   today: `pwritev(RWF_DSYNC)`, then the Python), **thread** (a committer thread writes and
   syncs while this thread runs the Python, then waits for it: a lock hand-off each way)
   and **sync_file_range** (an unsynced `pwrite`, `sync_file_range(SYNC_FILE_RANGE_WRITE)`
   to start the write-out, the Python, then `fdatasync`). Wall and CPU (every thread) per
   step, median of the rounds.
2. `--window`: three runs of 1,000 activities by `engine.run` on a durable `FileStore`,
   timing each step from the end of its outcome's append to the run's next `Lease.sync()`
   (the Python a sync started at the append could overlap), median.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
for _p in (str(BENCH), str(BENCH.parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

RECORD = b"r" * 299 + b"\n"
SIZE = 4 << 20
STEPS = 300
SYNC_FILE_RANGE_WRITE = 2


def _spin(us: float) -> None:
    end = time.perf_counter() + us * 1e-6
    while time.perf_counter() < end:
        pass


class _Committer:
    """A thread that writes and syncs one record when told, then says so."""

    def __init__(self, fd: int) -> None:
        self.fd, self.offset = fd, -1
        self.go, self.done = threading.Lock(), threading.Lock()
        self.go.acquire()
        self.done.acquire()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            self.go.acquire()
            if self.offset < 0:
                return
            os.pwritev(self.fd, [RECORD], self.offset, os.RWF_DSYNC)
            self.done.release()

    def stop(self) -> None:
        self.offset = -1
        self.go.release()


def overlap(folder: str, rounds: int, works: list[float]) -> None:
    fd = os.open(os.path.join(folder, "log.bin"), os.O_RDWR | os.O_CREAT, 0o600)
    zeros = bytes(1 << 16)
    for pos in range(0, SIZE, len(zeros)):  # as the log's segments are filled
        os.pwrite(fd, zeros, pos)
    os.fsync(fd)
    sfr = ctypes.CDLL(None, use_errno=True).sync_file_range
    sfr.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    committer = _Committer(fd)
    at = [0]

    def nxt() -> int:
        at[0] = (at[0] + len(RECORD)) % (SIZE - len(RECORD))
        return at[0]

    def serial(work: float) -> None:
        os.pwritev(fd, [RECORD], nxt(), os.RWF_DSYNC)
        _spin(work)

    def thread(work: float) -> None:
        committer.offset = nxt()
        committer.go.release()
        _spin(work)
        committer.done.acquire()

    def file_range(work: float) -> None:
        offset = nxt()
        os.pwrite(fd, RECORD, offset)
        sfr(fd, offset, len(RECORD), SYNC_FILE_RANGE_WRITE)
        _spin(work)
        os.fdatasync(fd)

    ways: dict[str, Callable[[float], None]] = {
        "serial": serial,
        "thread": thread,
        "sync_file_range": file_range,
    }
    for work in works:
        wall: dict[str, list[float]] = {name: [] for name in ways}
        cpu: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(rounds):
            for name, way in ways.items():
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(STEPS):
                    way(work)
                wall[name].append((time.perf_counter() - t0) / STEPS * 1e6)
                cpu[name].append((time.process_time() - c0) / STEPS * 1e6)
        print(f"{work:g} µs of Python per step:")
        for name in ways:
            print(
                f"  {name:16s} wall {statistics.median(wall[name]):6.1f} µs "
                f"({min(wall[name]):.1f}-{max(wall[name]):.1f}), "
                f"CPU {statistics.median(cpu[name]):5.1f} µs"
            )
    committer.stop()
    os.close(fd)


def window(folder: str) -> None:
    import workload

    import intemporal
    from intemporal.store import fileio

    lease = fileio.FileLease
    append, sync = lease._append_logged, lease.sync
    ended = [0]
    gaps: list[int] = []

    def timed_append(self: fileio.FileLease, data: bytes, synced: bool) -> None:
        append(self, data, synced)
        ended[0] = time.perf_counter_ns()

    def timed_sync(self: fileio.FileLease) -> None:
        if ended[0]:
            gaps.append(time.perf_counter_ns() - ended[0])
            ended[0] = 0
        sync(self)

    lease._append_logged, lease.sync = timed_append, timed_sync  # type: ignore[method-assign,assignment]
    store = intemporal.FileStore(folder)
    with intemporal.Engine(store, threads=2, durability="fsync") as engine:
        engine.run(workload.seq_workflow, 10, -1)
        gaps.clear()
        for j in range(3):
            engine.run(workload.seq_workflow, 1000, j)
    print(
        f"append → next sync: median {statistics.median(gaps) / 1e3:.1f} µs "
        f"(p10 {statistics.quantiles(gaps, n=10)[0] / 1e3:.1f}, {len(gaps)} steps)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="folder on the disk to measure")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--work", default="0,5,10,15", help="µs of Python per step, a list")
    parser.add_argument("--window", action="store_true", help="measure the window instead")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="intemporal-overlap-", dir=args.dir)
    try:
        if args.window:
            window(folder)
        else:
            overlap(folder, args.rounds, [float(w) for w in args.work.split(",")])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
