"""How close can a durable step in Python come to one sync in place? Scenario 1's long-run
target (≤ 1.15x a sync in place) measured against the least a Python durable step does.

    python bench/step_floor.py                  # 5 rounds, each way interleaved
    python bench/step_floor.py --rounds 9 --n 1000
    python bench/step_floor.py --quick          # a smoke run (the test suite runs it)

Four ways, in turn within each round, on the same disk and in the same minutes:
  probe   `pwritev(RWF_DSYNC)` of a 300-byte record in place into a zero-filled file (what
          `make bench` calls "a sync in place": the write-ahead log's sync)
  floor   the least a durable step can do in Python: its result encoded as a JSON line,
          the line written to the run's journal (unsynced), a record of it (header, path,
          crc) written in place and synced as above: no engine, no lock, no thread
  warm    the floor's Python and journal write without the sync: what that work costs
          when the thread has not just slept in a sync
  engine  `engine.run` of one run of N activities (`durability="fsync"`, `FileStore`)

Prints µs per step, wall and CPU (`time.process_time`), medians of the rounds (min-max),
and each way's wall time over the probe's. The floor minus the probe, set against `warm`,
shows what the sync's sleep adds to the Python after it on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import workload  # noqa: E402

import intemporal  # noqa: E402

_HEAD = struct.Struct("<IQI")
_CRC = struct.Struct("<I")
_DSYNC = getattr(os, "RWF_DSYNC", 0)
_SEGMENT = 4 << 20


def _segment(folder: str) -> int:
    """A zero-filled file written in 64 KiB pieces and synced, as the log's segments are."""
    fd = os.open(os.path.join(folder, "segment"), os.O_RDWR | os.O_CREAT, 0o600)
    zeros = bytes(1 << 16)
    for pos in range(0, _SEGMENT, len(zeros)):
        os.pwrite(fd, zeros, pos)
    os.fsync(fd)
    return fd


def _synced(fd: int, parts: list[bytes], offset: int) -> None:
    if _DSYNC:
        os.pwritev(fd, parts, offset, _DSYNC)
    else:
        os.pwrite(fd, b"".join(parts), offset)
        os.fdatasync(fd)


def _steps(folder: str, seg: int, n: int, sync: bool, python: bool) -> tuple[float, float]:
    """`n` steps one way: (wall, CPU) µs per step."""
    journal = os.open(
        os.path.join(folder, f"{time.monotonic_ns()}.jsonl"),
        os.O_WRONLY | os.O_CREAT | os.O_APPEND,
        0o600,
    )
    record, path, off = b"r" * 296, b"run-0000/abc.jsonl", 0
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        parts = [record]
        if python:
            result = {"i": i, "x": 7, "y": 7 + i}
            line = json.dumps(
                {"seq": i, "kind": "activity_completed", "name": "step", "result": result},
                separators=(",", ":"),
            ).encode()
            os.write(journal, line + b"\n")
            body = _HEAD.pack(1, off, len(path)) + path + line
            parts = [_CRC.pack(zlib.crc32(body)), body]
        if sync:
            _synced(seg, parts, off % (_SEGMENT - 4096))
        off += sum(map(len, parts))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    os.close(journal)
    return wall / n * 1e6, cpu / n * 1e6


def _engine(folder: str, n: int) -> tuple[float, float]:
    store = intemporal.FileStore(os.path.join(folder, f"store-{time.monotonic_ns()}"))
    with intemporal.Engine(store, threads=4, durability="fsync") as engine:
        engine.run(workload.seq_workflow, 10, -1)  # warm-up: the log's first segment
        t0, c0 = time.perf_counter(), time.process_time()
        engine.run(workload.seq_workflow, n, 0)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall / n * 1e6, cpu / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=1000, help="steps per way per round")
    ap.add_argument("--tmp", default=None, help="folder on the disk to measure")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.n = 1, 20
    folder = tempfile.mkdtemp(prefix="step-floor-", dir=args.tmp or str(BENCH))
    seg = _segment(folder)
    ways: dict[str, Callable[[], tuple[float, float]]] = {
        "probe": lambda: _steps(folder, seg, args.n, sync=True, python=False),
        "floor": lambda: _steps(folder, seg, args.n, sync=True, python=True),
        "warm": lambda: _steps(folder, seg, args.n, sync=False, python=True),
        "engine": lambda: _engine(folder, args.n),
    }
    got: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    try:
        for _ in range(args.rounds):
            for name, way in ways.items():
                got[name].append(way())
    finally:
        os.close(seg)
        shutil.rmtree(folder, ignore_errors=True)
    probe = statistics.median(w for w, _ in got["probe"])
    out: dict[str, object] = {"rounds": args.rounds, "n": args.n}
    for name, pairs in got.items():
        walls, cpus = [w for w, _ in pairs], [c for _, c in pairs]
        out[name] = {
            "wall_us": round(statistics.median(walls), 1),
            "wall_min_max": [round(min(walls), 1), round(max(walls), 1)],
            "cpu_us": round(statistics.median(cpus), 1),
            "over_probe": round(statistics.median(walls) / probe, 2),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
