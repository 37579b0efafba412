"""How fast this host reads memory: numpy reducing a buffer far larger than the last-level cache, on as
many threads as the runtimes use (OpenVINO and llama.cpp: one per core), best of several passes. Decoding
a token reads every weight once, so TPOT can be no less than weight bytes / this; bench.py's roofline
column is that ratio.

    python benchmarks/bandwidth.py [--threads N] [--mb 2048]
"""

from __future__ import annotations

import argparse
import os
import threading
import time


def read_bandwidth_gbs(threads: int | None = None, size_mb: int = 2048, passes: int = 5) -> float:
    """Bytes read per second, best of `passes`: each of `threads` threads takes the maximum of its own
    slice of a `size_mb` buffer of 64-bit integers (numpy's reductions release the GIL, so the threads
    read in parallel). An integer maximum is the cheapest reduction, so memory is the limit: on the AMD
    EPYC host a float64 sum reached 27–37 GB/s where the maximum reached 42."""
    import numpy as np

    threads = threads or os.cpu_count() or 1
    buffer = np.ones(size_mb * 2**20 // 8, dtype=np.uint64)
    slices = np.array_split(buffer, threads)
    best = float("inf")
    for _ in range(passes):
        workers = [threading.Thread(target=np.max, args=(part,)) for part in slices]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        best = min(best, time.perf_counter() - start)
    return buffer.nbytes / best / 1e9


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--mb", type=int, default=2048)
    args = parser.parse_args()
    print(f"{read_bandwidth_gbs(args.threads, args.mb):.1f} GB/s read with {args.threads} threads "
          f"({args.mb} MB buffer)")
