"""What one checkpoint's syncs cost a thread committing to the write-ahead log meanwhile.

    python bench/checkpoint_probe.py [--files 400] [--rounds 5] [--tmp DIR]

A thread logs records one after another (`WriteAheadLog.log`: one `pwritev(RWF_DSYNC)`
each, as a sequential run's durable steps are), while the main thread, in turn, writes
`--files` new ~1.5 KB journals and syncs them the ways a checkpoint can, interleaved in
rounds: each file one after another (as before), each file on 16 threads, the whole
filesystem (`syncfs` + a flush of the folder), and nothing (the baseline). Printed per
way, medians over the rounds (min-max): how long the syncs took, the device flushes the
disk completed meanwhile (/sys/dev/block/M:m/stat: other programs' included), the
system's unwritten bytes as they began (MB), the committing thread's mean latency per
record meanwhile, and the time it lost: its records meanwhile x (that latency - its
latency in the same round's 300 ms of "nothing").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from intemporal.store import walfile  # noqa: E402
from intemporal.store.wal import WriteAheadLog  # noqa: E402


def _flushes(path: str) -> int:
    dev = os.stat(path).st_dev
    try:
        stat = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat").read_text().split()
        return int(stat[15])
    except (OSError, IndexError):
        return -1


class Committer:
    """A thread logging records back to back; `commits` are their end times."""

    def __init__(self, log: WriteAheadLog) -> None:
        self.log, self.stop, self.commits = log, threading.Event(), [time.perf_counter()]
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            self.log.log(f"probe{i % 64}.jsonl", 1 << 20, b"x" * 200)
            self.commits.append(time.perf_counter())
            i += 1

    def between(self, t0: float, t1: float) -> int:
        return sum(1 for t in self.commits if t0 <= t < t1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tmp", help="where the files go (default: bench/.tmp)")
    args = parser.parse_args()
    tmp = Path(args.tmp) if args.tmp else BENCH / ".tmp"
    tmp.mkdir(exist_ok=True)
    root = tempfile.mkdtemp(dir=tmp, prefix="probe-")
    log = WriteAheadLog(root)
    log.open()
    committer = Committer(log)
    ways = {
        "each, one after another": lambda paths: walfile.sync_each(root, paths),
        "each, 16 threads": lambda paths: walfile.sync_each(root, paths),
        "syncfs": lambda paths: walfile.sync_all(root),
        "nothing": lambda paths: None,
    }
    got: dict[str, list[tuple[float, ...]]] = {w: [] for w in ways}
    n = 0
    try:
        time.sleep(0.5)
        for _ in range(args.rounds):
            for way, sync in ways.items():
                n += 1
                folder = f"r{n}"
                os.mkdir(os.path.join(root, folder))
                paths = {}
                for i in range(args.files):
                    name = f"{folder}/{i}.jsonl"
                    fd = os.open(os.path.join(root, name), os.O_CREAT | os.O_WRONLY, 0o600)
                    os.write(fd, b"y" * 1500)
                    os.close(fd)
                    paths[name] = i == 0
                walfile.SYNC_THREADS = 1 if way.endswith("another") else 16
                time.sleep(0.3)
                dirty = (walfile.dirty_bytes() or 0) / (1 << 20)
                f0, t0 = _flushes(root), time.perf_counter()
                sync(paths)
                if way == "nothing":
                    time.sleep(0.3)
                t1, f1 = time.perf_counter(), _flushes(root)
                during = committer.between(t0, t1)
                latency = (t1 - t0) / during * 1e6 if during else 1e9
                got[way].append(((t1 - t0) * 1e3, f1 - f0, dirty, latency, during))
    finally:
        committer.stop.set()
        committer.thread.join()
        log.close()
    print(f"{args.files} files a checkpoint, {args.rounds} rounds, store {root}")

    def fmt(values: list[float], unit: str = "") -> str:
        return f"{statistics.median(values):.0f}{unit} ({min(values):.0f}-{max(values):.0f})"

    base = [row[3] for row in got["nothing"]]
    for way, rows in got.items():
        cols = [list(col) for col in zip(*rows, strict=True)]
        lost = [row[4] * (row[3] - b) / 1e3 for row, b in zip(rows, base, strict=True)]
        print(
            f"{way:24s} syncs {fmt(cols[0], ' ms')}  flushes {fmt(cols[1])}  dirty "
            f"{fmt(cols[2], ' MB')}  record {fmt(cols[3], ' us')}  lost {fmt(lost, ' ms')}"
        )


if __name__ == "__main__":
    main()
