"""saq peer: RedisQueue on a local redis-server (appendonly yes, appendfsync always), an
in-process saq Worker; a job counts as recorded complete once saq has written status
"complete" (its after_process hook runs after that write)."""

from __future__ import annotations

import asyncio
from typing import Any

from _aio import StartSignal, timed_w1, timed_w2
from _util import now, proc_status

DURABILITY = "Redis 7, appendonly yes + appendfsync always (fsync per write), no RDB"


class _Done:
    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.event = asyncio.Event()

    def reset(self, target: int) -> None:
        self.count, self.target = 0, target
        self.event.clear()

    def add(self) -> None:
        self.count += 1
        if self.count >= self.target:
            self.event.set()


def _queue(url: str, name: str) -> Any:
    from saq import Queue

    return Queue.from_url(url, name=name)


def _worker(queue: Any, concurrency: int, done: _Done | None,
            on_start: StartSignal | None) -> Any:
    from saq import Worker

    async def noop(ctx: Any, *, i: int) -> None:
        if on_start is not None:
            on_start.hit()

    async def after(ctx: Any) -> None:
        if done is not None:
            done.add()

    worker = Worker(queue, functions=[("noop", noop)], concurrency=concurrency,
                    after_process=after)
    worker.SIGNALS = []  # the benchmark owns the process's signals
    return worker


async def _flush(url: str) -> None:
    from redis.asyncio import Redis

    r = Redis.from_url(url)
    await r.flushall()
    await r.aclose()


async def _stop(worker: Any, task: asyncio.Task[None] | None) -> None:
    if task is not None:
        await worker.stop()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass


def w1(*, url: str, variant: str, n: int, producers: int = 100, concurrency: int = 100,
       batch: int = 1000) -> dict[str, Any]:
    if variant == "batch":
        return {"skipped": "saq has no batch enqueue (Queue.map/batch enqueue one by one)"}
    out: dict[str, Any] = {}

    async def run(consume: bool) -> dict[str, Any]:
        await _flush(url)
        queue = _queue(url, "bench")
        await queue.connect()
        done = _Done()
        done.reset(n)
        worker = _worker(queue, concurrency, done, None)
        task = asyncio.create_task(worker.start()) if consume else None
        try:
            async def enqueue(i: int) -> Any:
                return await queue.enqueue("noop", i=i)

            async def wait_completed(k: int) -> None:
                await asyncio.wait_for(done.event.wait(), 600)

            if consume:
                await asyncio.sleep(0.1)
            return await timed_w1(variant, n, producers, batch, enqueue, None,
                                  wait_completed if consume else None)
        finally:
            await _stop(worker, task)
            await queue.disconnect()

    r = asyncio.run(run(False))
    out["enqueue_s"], out["enqueue_rate"] = r["enqueue_s"], r["enqueue_rate"]
    r = asyncio.run(run(True))
    out.update(n=n, e2e_s=r["e2e_s"], e2e_rate=r["e2e_rate"],
               enqueue_under_load_rate=r["enqueue_rate"])
    return out


def w2(*, url: str, n: int, warmup: int = 20, concurrency: int = 1) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        await _flush(url)
        queue = _queue(url, "bench")
        await queue.connect()
        signal = StartSignal()
        done = _Done()
        worker = _worker(queue, concurrency, done, signal)
        task = asyncio.create_task(worker.start())
        await asyncio.sleep(0.1)
        try:
            async def enqueue(i: int) -> Any:
                done.reset(1)
                return await queue.enqueue("noop", i=i)

            async def wait_done(_job: Any) -> None:
                await done.event.wait()

            return await timed_w2(n, warmup, enqueue, signal, wait_done)
        finally:
            await _stop(worker, task)
            await queue.disconnect()

    return asyncio.run(run())


def w3_build(*, url: str, n: int, chunk: int = 10_000) -> dict[str, Any]:
    """``n`` queued jobs (appendfsync relaxed to everysec for the build only)."""
    async def run() -> dict[str, Any]:
        from redis.asyncio import Redis

        await _flush(url)
        r = Redis.from_url(url)
        mem0 = (await r.info("memory"))["used_memory"]
        await r.config_set("appendfsync", "everysec")
        queue = _queue(url, "w3")
        await queue.connect()
        t0 = now()
        for start in range(0, n, chunk):
            await asyncio.gather(*(queue.enqueue("noop", i=i)
                                   for i in range(start, min(n, start + chunk))))
        build_s = now() - t0
        await queue.disconnect()
        await r.config_set("appendfsync", "always")
        mem1 = (await r.info("memory"))["used_memory"]
        await r.bgrewriteaof()
        await r.aclose()
        used = mem1 - mem0
        return {"n": n, "build_s": build_s, "server_ram_bytes": used,
                "server_ram_per_job": used / n}

    return asyncio.run(run())


def w3_open(*, url: str, concurrency: int = 1) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        signal = StartSignal()
        import saq  # noqa: F401  (imports are not part of recovery)
        rss0 = proc_status()
        t0 = now()
        queue = _queue(url, "w3")
        await queue.connect()
        t_ready = now()
        worker = _worker(queue, concurrency, None, signal)
        task = asyncio.create_task(worker.start())
        try:
            await asyncio.wait_for(signal.event.wait(), 60)
            return {"ready_s": t_ready - t0, "first_start_s": signal.at - t0,
                    "rss_before_open": rss0, "rss_after": proc_status()}
        finally:
            await _stop(worker, task)
            await queue.disconnect()

    return asyncio.run(run())
