"""actorq cases: W1 throughput, W2 latency, W3 recovery, W4 memory and journal size.

Each function runs in a fresh interpreter (``_case.py``) and returns a dict of numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import trio
from _util import file_size, latency_summary, now, proc_status, rate, rmtree, work_dir

import actorq


async def _noop(job: actorq.Job) -> None:
    return None


async def _produce(queue: actorq.Queue, variant: str, n: int, producers: int, batch: int) -> None:
    if variant == "sequential":
        for i in range(n):
            await queue.enqueue(i)
    elif variant == "concurrent":
        async def producer(start: int, stop: int) -> None:
            for i in range(start, stop):
                await queue.enqueue(i)

        per = math.ceil(n / producers)
        async with trio.open_nursery() as nursery:
            for p in range(producers):
                nursery.start_soon(producer, p * per, min(n, (p + 1) * per))
    elif variant == "batch":
        for start in range(0, n, batch):
            await queue.enqueue_batch(range(start, min(n, start + batch)))
    else:
        raise ValueError(f"unknown variant {variant!r}")


def w1(*, mode: str, variant: str, n: int, producers: int = 100, concurrency: int = 100,
       batch: int = 1000) -> dict[str, Any]:
    """Enqueue-only (queue paused), then end to end, each on a fresh journal."""
    only = w1_run(mode=mode, variant=variant, n=n, producers=producers,
                  concurrency=concurrency, batch=batch, consume=False)
    both = w1_run(mode=mode, variant=variant, n=n, producers=producers,
                  concurrency=concurrency, batch=batch, consume=True)
    return dict(both, enqueue_s=only["enqueue_s"], enqueue_rate=only["enqueue_rate"],
                enqueue_under_load_rate=both["enqueue_rate"])


def w1_run(*, mode: str, variant: str, n: int, producers: int = 100, concurrency: int = 100,
           batch: int = 1000, consume: bool = True) -> dict[str, Any]:
    """``n`` no-op jobs enqueued (``variant``) and, where ``consume``, processed until every one
    is recorded complete (``queue.join()`` returns after the last completion is durable)."""
    path = work_dir("actorq-w1")
    out: dict[str, Any] = {}

    async def main() -> None:
        async with actorq.open_runtime(path, durability=mode) as runtime:
            queue = await actorq.spawn_queue("w1", _noop, concurrency=concurrency)
            if not consume:
                await queue.pause()
            t0 = now()
            await _produce(queue, variant, n, producers, batch)
            t1 = now()
            out.update(n=n, enqueue_s=t1 - t0, enqueue_rate=rate(n, t1 - t0))
            if consume:
                await queue.join()
                t2 = now()
                stats = await queue.stats()
                assert stats["completed"] == n, stats
                out.update(e2e_s=t2 - t0, e2e_rate=rate(n, t2 - t0))
            w = runtime.writer.statistics()
            out.update(commits=w.commits, transitions=w.transitions, largest_group=w.largest_group)

    try:
        trio.run(main)
    finally:
        rmtree(path)
    return out


def w2(*, mode: str, n: int, warmup: int = 50) -> dict[str, Any]:
    """Idle-queue latency: enqueue one job, time until its handler starts; wait until it is
    recorded complete (the queue is idle again) before the next."""
    path = work_dir("actorq-w2")
    samples: list[float] = []
    holder: dict[str, trio.Event] = {}

    async def main() -> None:
        started: dict[int, float] = {}

        async def handler(job: actorq.Job) -> None:
            started[job.payload] = now()
            holder["ev"].set()

        async with actorq.open_runtime(path, durability=mode):
            queue = await actorq.spawn_queue("w2", handler)
            for i in range(warmup + n):
                ev = holder["ev"] = trio.Event()
                t0 = now()
                job_id = await queue.enqueue(i)
                await ev.wait()
                if i >= warmup:
                    samples.append(started[i] - t0)
                await queue.wait(job_id)

    try:
        trio.run(main)
    finally:
        rmtree(path)
    return latency_summary(samples)


# ---- W3 / W4


def w3_build(*, path: str, n: int, chunk: int = 10_000) -> dict[str, Any]:
    """A journal with ``n`` pending jobs of queue "w3", built with enqueue_batch in chunks, the
    queue paused, in "os" mode."""
    out: dict[str, Any] = {}

    async def main() -> None:
        async with actorq.open_runtime(path, durability="os"):
            queue = await actorq.spawn_queue("w3", _noop)
            await queue.pause()
            t0 = now()
            for start in range(0, n, chunk):
                await queue.enqueue_batch(range(start, min(n, start + chunk)))
            out["build_s"] = now() - t0

    Path(path).mkdir(parents=True, exist_ok=True)
    trio.run(main)
    size = file_size(Path(path) / "data.mdb")
    out.update(n=n, data_mdb_bytes=size, bytes_per_job=size / n if n else 0.0)
    return out


def w3_open(*, path: str, mode: str = "fsync") -> dict[str, Any]:
    """In this fresh process: open the journal, spawn its queue. open -> spawn_queue returned
    (the queue serves its whole backlog: counted, the head of it read into the window) and
    open -> first handler started; RSS once both."""
    out: dict[str, Any] = {}

    async def main() -> None:
        first = trio.Event()
        t_first: list[float] = []

        async def handler(job: actorq.Job) -> None:
            if not t_first:
                t_first.append(now())
                first.set()
            await trio.sleep_forever()

        out["rss_before_open"] = proc_status()
        t0 = now()
        async with actorq.open_runtime(path, durability=mode):
            t_opened = now()
            queue = await actorq.spawn_queue("w3", handler)
            t_ready = now()
            stats = queue.statistics()
            if stats.ready or stats.running:  # an empty journal (the RSS baseline) starts none
                with trio.move_on_after(60):
                    await first.wait()
            out.update(
                open_s=t_opened - t0,
                ready_s=t_ready - t0,
                first_start_s=(t_first[0] - t0) if t_first else float("nan"),
                pending=queue.statistics().ready,
                rss_after=proc_status(),
            )

    trio.run(main)
    return out


def w4_retention(*, n_total: int, sample_every: int, mode: str = "os", concurrency: int = 100,
                 chunk: int = 10_000) -> dict[str, Any]:
    """Complete ``n_total`` no-op jobs under the default Retention; data.mdb size every
    ``sample_every`` completions."""
    path = work_dir("actorq-w4")
    samples: list[dict[str, Any]] = []

    async def main() -> None:
        async with actorq.open_runtime(path, durability=mode):
            queue = await actorq.spawn_queue("w4", _noop, concurrency=concurrency)
            done = 0
            t0 = now()
            while done < n_total:
                stop = min(n_total, done + sample_every)
                for start in range(done, stop, chunk):
                    await queue.enqueue_batch(range(start, min(stop, start + chunk)))
                await queue.join()
                done = stop
                stats = await queue.stats()
                samples.append({
                    "completed_total": done,
                    "data_mdb_bytes": file_size(path / "data.mdb"),
                    "held_finished": stats["completed"],
                    "elapsed_s": now() - t0,
                })

    try:
        trio.run(main)
    finally:
        rmtree(path)
    return {"samples": samples}
