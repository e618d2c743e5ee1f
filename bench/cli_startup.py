"""Wall time of one ``opentasks queues list`` against a running server: the interpreter's start,
the command's imports, the call and the table, as a user waits for it.

A server (memory://) with QUEUES queues is started once; the command then runs RUNS times (the
first run, which may fill the message cache, is not counted). Exits 1 when the median is above
``--budget`` seconds.

Usage: python bench/cli_startup.py [--runs 20] [--queues 10] [--budget 0.3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from opentasks.testing import OPENTASKS, ServerProcess


def timed_runs(server: ServerProcess, runs: int) -> list[float]:
    command = [OPENTASKS, "queues", "list", "--endpoint", server.address, "--project", "bench"]
    subprocess.run(command, check=True, capture_output=True)  # warm: the message cache, the page cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--queues", type=int, default=10)
    parser.add_argument("--budget", type=float, default=0.3, help="most seconds the median may take")
    args = parser.parse_args()
    with ServerProcess("memory://") as server:
        client = server.client()
        parent = "projects/bench/locations/us-central1"
        for index in range(args.queues):
            client.create_queue(parent=parent, queue={"name": f"{parent}/queues/q{index:03d}"})
        times = timed_runs(server, args.runs)
    median = statistics.median(times)
    print(
        f"opentasks queues list ({args.queues} queues), {args.runs} runs: median {median:.3f} s, "
        f"min {min(times):.3f} s, max {max(times):.3f} s (budget {args.budget} s)"
    )
    return 0 if median <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
