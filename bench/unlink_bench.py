"""Unlinking many small files: Python threads against `gc`'s io_uring (`store/uring.py`).

    python bench/unlink_bench.py --files 4000 --modes t16,u64     # in the system's temp folder
    python bench/unlink_bench.py --dir /mnt/other --modes t16,t64,u16,u64,u128

Each mode gets its own folder of `--files` files of 400 bytes (a finished run's journal),
all made first, then `sync` and a pause, then unlinked: `tN` on N threads (`os.unlink`,
names dealt out in turn), `uN` through one io_uring with N kernel workers. Prints wall and
CPU (user, sys: the kernel's workers are the process's threads) per unlink, and the
discards the disk was sent meanwhile (`/proc/diskstats`, every process's: the machine's
other work shows there too). Deleting thousands of files slows creating files on ext4
without a journal for tens of seconds: do not run it beside another benchmark.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from intemporal.store import uring


def discards(path: Path) -> int:
    """Discards completed by the disk holding `path` (0 if /proc/diskstats does not say)."""
    dev = os.stat(path).st_dev
    name = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        with open("/proc/diskstats") as f:
            for line in f:
                fields = line.split()
                if f"{fields[0]}:{fields[1]}" == name and len(fields) > 14:
                    return int(fields[14])
    except OSError:
        pass
    return 0


def unlink(mode: str, dfd: int, names: list[str]) -> None:
    n = int(mode[1:])
    if mode[0] == "t":

        def part(chunk: list[str]) -> None:
            for name in chunk:
                os.unlink(name, dir_fd=dfd)

        with ThreadPoolExecutor(n) as pool:
            list(pool.map(part, [names[i::n] for i in range(n)]))
        return
    uring.WORKERS = n
    ring = uring.UnlinkRing.open(dfd)
    if ring is None:
        raise SystemExit("no io_uring on this system")
    try:
        ring.unlink([(dfd, name) for name in names])
    finally:
        ring.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--files", type=int, default=4000)
    p.add_argument("--modes", default="t16,u64")
    p.add_argument("--dir", type=Path, help="where the folders go (the system's temp folder)")
    a = p.parse_args()
    modes = a.modes.split(",")
    base = Path(tempfile.mkdtemp(prefix="unlink-bench-", dir=a.dir))
    try:
        for mode in modes:
            folder = base / mode
            folder.mkdir()
            for i in range(a.files):
                (folder / f"r{i:06d}.jsonl").write_bytes(b"x" * 400)
        os.sync()
        time.sleep(3)
        for mode in modes:
            dfd = os.open(base / mode, os.O_RDONLY)
            names = sorted(os.listdir(base / mode))
            d0, c0, t0 = discards(base), os.times(), time.perf_counter()
            unlink(mode, dfd, names)
            wall, c1, d1 = time.perf_counter() - t0, os.times(), discards(base)
            os.close(dfd)
            per = 1e6 / a.files
            print(
                f"{mode}: {wall * per:.1f} µs an unlink, CPU user {(c1.user - c0.user) * per:.1f}"
                f" sys {(c1.system - c0.system) * per:.1f} µs; {d1 - d0} discards",
                flush=True,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
