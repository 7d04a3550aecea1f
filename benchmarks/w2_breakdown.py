"""Where W2's latency goes: one job's path from ``enqueue`` to its handler, step by step.

    python benchmarks/w2_breakdown.py [--n 1000] [--durability fsync]

W2's workload (an idle queue, concurrency 1, one job at a time, each waited for), with a
timestamp taken at each step of the path: the ``enqueue`` call, the job built, the queue actor
taking its inbox, the round, the journal's ``prepare`` (on the event loop), the writer thread's
``write`` (the LMDB transaction and its commit: two fdatasync calls in "fsync" mode), the loop
hearing of it, the worker taking the job, the handler starting. Prints the median time of each
step and of the whole path, next to a bare durable LMDB commit measured in the same process.

The timestamps come from wrappers put around actorq's private methods at run time (nothing in
actorq changes); each adds well under a microsecond.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import rmtree, work_dir  # noqa: E402

import actorq  # noqa: E402
from actorq import _actor, _api, _journal, _writer  # noqa: E402

now = time.perf_counter
marks: dict[str, float] = {}

# (class, method, label, stamp after the call instead of before), in path order
STEPS: list[tuple[type, str, str, bool]] = [
    (_api.Queue, "_new_job", "job built and validated (Queue._new_job)", True),
    (_actor._Inbox, "take", "queue actor woken, takes its inbox", False),
    (_actor.QueueActor, "_enqueue", "round begins (window checked)", False),
    (_actor.QueueActor, "_finish_round", "message handled", False),
    (_writer.Writer, "commit", "round decided the start (Enqueued + Started)", False),
    (_journal.Journal, "prepare", "submitted to the writer", False),
    (_journal.Journal, "prepare", "prepared on the event loop (Journal.prepare)", True),
    (_journal.Journal, "write", "writer thread picks it up", False),
    (_journal.Journal, "write", "written and committed (Journal.write)", True),
    (_writer.Writer, "_written", "event loop hears of the commit", False),
    (_writer.Writer, "_written", "results to the round (Journal.finish)", True),
    (_actor._Dispatch, "send_all", "queue actor resumes, hands the job over", False),
    (_actor.QueueActor, "_job", "worker woken", False),
]


def _wrap(cls: type, name: str, label: str, after: bool) -> None:
    inner: Callable[..., Any] = getattr(cls, name)

    def stamped(*args: Any, **kwargs: Any) -> Any:
        if not after:
            marks.setdefault(label, now())
        result = inner(*args, **kwargs)
        if after:
            marks.setdefault(label, now())
        return result

    setattr(cls, name, stamped)


def lmdb_floor(n: int) -> float:
    """Median of a bare durable LMDB commit of one small put (sync and metasync), in µs."""
    import lmdb

    path = work_dir("w2b-lmdb")
    try:
        env = lmdb.open(str(path), map_size=1 << 26, sync=True, metasync=True)
        times = []
        for i in range(n):
            t = now()
            with env.begin(write=True) as txn:
                txn.put(b"%016x" % i, b"x" * 100)
            times.append(now() - t)
        env.close()
        return statistics.median(times) * 1e6
    finally:
        rmtree(path)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--durability", default="fsync", choices=("fsync", "os"))
    args = ap.parse_args()
    for step in STEPS:
        _wrap(*step)
    rows: list[dict[str, float]] = []

    async def run(path: Path) -> None:
        started: dict[str, trio.Event] = {}

        async def handler(job: actorq.Job) -> None:
            marks.setdefault("handler starts", now())
            started["ev"].set()

        async with actorq.open_runtime(path, durability=args.durability):
            queue = await actorq.spawn_queue("w2", handler)
            for i in range(50 + args.n):  # 50 warm-up jobs
                started["ev"] = trio.Event()
                marks.clear()
                marks["enqueue called"] = now()
                job_id = await queue.enqueue(i)
                await started["ev"].wait()
                sample = dict(marks)
                await queue.wait(job_id)
                if i >= 50:
                    rows.append(sample)

    path = work_dir("w2b")
    try:
        trio.run(run, path)
    finally:
        rmtree(path)
    labels = ["enqueue called"] + [label for _, _, label, _ in STEPS] + ["handler starts"]
    print(f"W2 path, {args.durability} mode, median of {len(rows)} jobs (µs, each step since "
          f"the one before):")
    for before, label in zip(labels, labels[1:]):
        steps = [(r[label] - r[before]) * 1e6 for r in rows if label in r and before in r]
        print(f"  {statistics.median(steps):8.1f}  {label}")
    total = [(r["handler starts"] - r["enqueue called"]) * 1e6 for r in rows]
    print(f"  {statistics.median(total):8.1f}  in all: enqueue called -> handler starts")
    if args.durability == "fsync":
        print(f"  {lmdb_floor(500):8.1f}  a bare durable LMDB commit (same disk, now)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
