"""Direct against buffered writes of the file store's write-ahead log, on this disk.

    python bench/wal_direct.py [--dir DIR] [--bursts 150]

Two measures, each in one process with bursts of 20 interleaved (noise hits both alike):
1. Raw syscalls, one 250-byte record per sync into a 4 MiB zero-filled file: buffered
   `pwritev(RWF_DSYNC)` into a file made by one large write (its pages in large folios) or
   in 64 KiB pieces (as the log's segments are), and a direct `O_DIRECT | O_DSYNC` 4 KiB
   block write.
2. `WriteAheadLog.log` of a 180-byte record, buffered against direct (`wal.DIRECT`).
Prints the median, p90 and p99 latency and the CPU time of the writing thread per sync.
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from intemporal.store import wal

RECORD = b"x" * 249 + b"\n"
BLOCK = mmap.mmap(-1, 4096)


def _report(name: str, lat: list[float], cpu: float) -> None:
    q = statistics.quantiles(lat, n=100)
    print(
        f"  {name:28s} median {statistics.median(lat) * 1e6:6.1f}  p90 {q[89] * 1e6:6.1f}  "
        f"p99 {q[98] * 1e6:7.1f}  CPU {cpu / len(lat) * 1e6:5.1f} µs"
    )


def _interleaved(writers: dict[str, Callable[[int], object]], bursts: int) -> None:
    lat: dict[str, list[float]] = {k: [] for k in writers}
    cpu = dict.fromkeys(writers, 0.0)
    names = list(writers)
    for b in range(bursts):
        for name in names[b % len(names) :] + names[: b % len(names)]:
            c = time.thread_time()
            for j in range(20):
                t = time.perf_counter()
                writers[name](b * 20 + j)
                lat[name].append(time.perf_counter() - t)
            cpu[name] += time.thread_time() - c
    for name in names:
        _report(name, lat[name], cpu[name])


def _file(folder: str, name: str, one_write: bool, flags: int) -> int:
    path = os.path.join(folder, name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    if one_write:
        os.write(fd, bytes(4 << 20))
    else:
        for pos in range(0, 4 << 20, 1 << 16):
            os.pwrite(fd, bytes(1 << 16), pos)
    os.fsync(fd)
    os.close(fd)
    return os.open(path, os.O_RDWR | flags)


def raw(folder: str, bursts: int) -> None:
    dsync = os.RWF_DSYNC
    big = _file(folder, "big", True, 0)
    pieces = _file(folder, "pieces", False, 0)
    direct = _file(folder, "direct", False, os.O_DIRECT | os.O_DSYNC)
    with memoryview(BLOCK) as block:
        _interleaved(
            {
                "buffered, one 4 MiB write": lambda i: os.pwritev(big, [RECORD], i * 250, dsync),
                "buffered, 64 KiB pieces": lambda i: os.pwritev(pieces, [RECORD], i * 250, dsync),
                "direct 4 KiB block": lambda i: os.pwritev(
                    direct, [block], i * 250 // 4096 * 4096, dsync
                ),
            },
            bursts,
        )
    for fd in (big, pieces, direct):
        os.close(fd)


def _logger(log: wal.WriteAheadLog) -> Callable[[int], object]:
    data = b"x" * 180
    return lambda i: log.log("r.jsonl", i * 180, data)


def logged(folder: str, bursts: int) -> None:
    logs = {}
    for name, direct in (
        ("WriteAheadLog.log, buffered", False),
        ("WriteAheadLog.log, direct", True),
    ):
        wal.DIRECT = direct
        root = os.path.join(folder, "log-direct" if direct else "log-buffered")
        os.mkdir(root)
        log = wal.WriteAheadLog(root)
        log.open()
        if log.direct != direct:
            print(f"  ({name}: the filesystem refuses direct I/O)")
        logs[name] = log
    _interleaved({name: _logger(log) for name, log in logs.items()}, bursts)
    for log in logs.values():
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=None, help="a folder on the disk to measure (default: bench/)")
    ap.add_argument("--bursts", type=int, default=150)
    args = ap.parse_args()
    folder = tempfile.mkdtemp(dir=args.dir or os.path.dirname(os.path.abspath(__file__)))
    try:
        print("raw syscalls, one record per sync:")
        raw(folder, args.bursts)
        print("the write-ahead log, one record per sync:")
        logged(folder, args.bursts)
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
