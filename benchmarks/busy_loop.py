"""W1 beside a CPU-bound task on the same event loop: does a busy host starve actorq's commits?

    python benchmarks/busy_loop.py [--mode fsync] [--n 1000] [--busy-ms 1.0] [--idle-ms 0]
                                   [--seconds 120] [--host loop]

Runs W1's shape (100 producers awaiting ``enqueue``, concurrency 100, a no-op handler) while
another task of the same trio run holds the loop for ``--busy-ms`` of pure Python at a time,
then checkpoints (``--idle-ms`` 0) or sleeps ``--idle-ms``; with ``--host thread`` the same
work runs in a thread instead (as a CPU-bound sync handler would). Prints jobs/s, the number of
commits and how long ``Journal.write`` took (median and longest); gives up after ``--seconds``
of wall time and says how far it got. Real time, not a test: a finding, not a target.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import rmtree, work_dir  # noqa: E402

import actorq  # noqa: E402
import actorq._journal as journal_module  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="fsync", choices=("fsync", "os"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--busy-ms", type=float, default=1.0)
    ap.add_argument("--idle-ms", type=float, default=0.0)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--host", default="loop", choices=("loop", "thread"),
                    help="where the CPU-bound task runs: on the event loop, or in a thread "
                         "(as a sync handler does)")
    args = ap.parse_args()

    writes: list[float] = []
    write = journal_module.Journal.write

    def timed_write(self: journal_module.Journal, plan: journal_module.CommitPlan) -> None:
        t = time.perf_counter()
        try:
            write(self, plan)
        finally:
            writes.append(time.perf_counter() - t)

    journal_module.Journal.write = timed_write  # type: ignore[method-assign]
    path = work_dir("busy-loop")
    done = 0

    async def noop(job: actorq.Job) -> None:
        nonlocal done
        done += 1

    async def run() -> None:
        async with actorq.open_runtime(path, durability=args.mode) as runtime:
            queue = await actorq.spawn_queue("w1", noop, concurrency=100)

            stop = False

            def spin() -> None:
                t = time.perf_counter()
                while time.perf_counter() - t < args.busy_ms / 1000:
                    pass

            def spin_thread() -> None:
                while not stop:
                    spin()
                    time.sleep(args.idle_ms / 1000)

            async def host() -> None:  # the application's own CPU-bound work
                if args.host == "thread":
                    await trio.to_thread.run_sync(spin_thread, abandon_on_cancel=True)
                while True:
                    spin()
                    await trio.sleep(args.idle_ms / 1000)

            async def producer(count: int) -> None:
                for i in range(count):
                    await queue.enqueue(i)

            t0 = time.perf_counter()
            with trio.move_on_after(args.seconds) as scope:
                async with trio.open_nursery() as nursery:
                    if args.busy_ms > 0:
                        nursery.start_soon(host)
                    async with trio.open_nursery() as producers:
                        for _ in range(100):
                            producers.start_soon(producer, args.n // 100)
                    await queue.join()
                    stop = True
                    nursery.cancel_scope.cancel()
            stop = True
            elapsed = time.perf_counter() - t0
            state = "gave up after" if scope.cancelled_caught else "done in"
            print(f"{args.mode}, host ({args.host}) busy {args.busy_ms} ms / idle "
                  f"{args.idle_ms} ms: "
                  f"{done}/{args.n // 100 * 100} jobs {state} {elapsed:.2f} s "
                  f"({done / elapsed:,.0f} jobs/s); {runtime.writer.statistics().commits} "
                  f"commits; Journal.write median "
                  f"{statistics.median(writes) * 1e3 if writes else 0:.2f} ms, longest "
                  f"{max(writes, default=0) * 1e3:.1f} ms")

    try:
        trio.run(run)
    finally:
        rmtree(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
