"""The W1/W2 procedures for the asyncio peers (procrastinate, saq), on top of a few coroutines
per peer: enqueue one, enqueue a batch, wait until n jobs are recorded complete."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

from _util import latency_summary, now, rate


async def produce(variant: str, n: int, producers: int, batch: int,
                  enqueue: Callable[[int], Awaitable[Any]],
                  enqueue_batch: Callable[[range], Awaitable[Any]] | None) -> None:
    if variant == "sequential":
        for i in range(n):
            await enqueue(i)
    elif variant == "concurrent":
        per = math.ceil(n / producers)

        async def producer(start: int, stop: int) -> None:
            for i in range(start, stop):
                await enqueue(i)

        await asyncio.gather(*(producer(p * per, min(n, (p + 1) * per))
                               for p in range(producers)))
    elif variant == "batch":
        if enqueue_batch is None:
            raise NotImplementedError("no batch enqueue API")
        for start in range(0, n, batch):
            await enqueue_batch(range(start, min(n, start + batch)))
    else:
        raise ValueError(f"unknown variant {variant!r}")


async def timed_w1(variant: str, n: int, producers: int, batch: int,
                   enqueue: Callable[[int], Awaitable[Any]],
                   enqueue_batch: Callable[[range], Awaitable[Any]] | None,
                   wait_completed: Callable[[int], Awaitable[None]] | None) -> dict[str, Any]:
    """Enqueue ``n`` jobs; where ``wait_completed`` is given (consumers running), wait until
    they are all recorded complete."""
    t0 = now()
    await produce(variant, n, producers, batch, enqueue, enqueue_batch)
    t1 = now()
    out: dict[str, Any] = {"n": n, "enqueue_s": t1 - t0, "enqueue_rate": rate(n, t1 - t0)}
    if wait_completed is not None:
        await wait_completed(n)
        t2 = now()
        out.update(e2e_s=t2 - t0, e2e_rate=rate(n, t2 - t0))
    return out


class StartSignal:
    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.at = 0.0

    def hit(self) -> None:
        self.at = now()
        self.event.set()


async def timed_w2(n: int, warmup: int, enqueue: Callable[[int], Awaitable[Any]],
                   signal: StartSignal, wait_done: Callable[[Any], Awaitable[None]],
                   timeout: float = 60.0) -> dict[str, Any]:
    """Idle-queue latency: enqueue, wait for the handler to start and for the job to be
    recorded complete, then the next. ``enqueue`` returns what ``wait_done`` takes."""
    samples = []
    for i in range(warmup + n):
        signal.event.clear()
        t0 = now()
        handle = await enqueue(i)
        await asyncio.wait_for(signal.event.wait(), timeout)
        if i >= warmup:
            samples.append(signal.at - t0)
        await asyncio.wait_for(wait_done(handle), timeout)
    return latency_summary(samples)


async def poll_until(check: Callable[[], Awaitable[bool]], interval: float = 0.001,
                     timeout: float = 600.0) -> None:
    deadline = now() + timeout
    while not await check():
        if now() > deadline:
            raise TimeoutError("jobs were not recorded complete in time")
        await asyncio.sleep(interval)
