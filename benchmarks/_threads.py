"""A harness for the thread-based peers (huey, persist-queue, litequeue): producer threads,
a completion counter, and the W1/W2 procedures on top of three callables per peer."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from _util import latency_summary, now, rate


class Counter:
    """Completed jobs, and an event set once ``target`` of them are done."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.target = math.inf
        self.done = threading.Event()

    def reset(self, target: int) -> None:
        with self.lock:
            self.count = 0
            self.target = target
            self.done.clear()

    def add(self, k: int = 1) -> None:
        with self.lock:
            self.count += k
            if self.count >= self.target:
                self.done.set()


def produce(variant: str, n: int, producers: int, batch: int,
            enqueue: Callable[[int], Any],
            enqueue_batch: Callable[[range], Any] | None) -> None:
    """Enqueue ``n`` jobs: one at a time from one thread ("sequential") or from ``producers``
    threads ("concurrent"), or with the peer's batch call ("batch")."""
    if variant == "sequential":
        for i in range(n):
            enqueue(i)
    elif variant == "concurrent":
        per = math.ceil(n / producers)
        errors: list[BaseException] = []

        def producer(start: int, stop: int) -> None:
            try:
                for i in range(start, stop):
                    enqueue(i)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=producer, args=(p * per, min(n, (p + 1) * per)))
                   for p in range(producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
    elif variant == "batch":
        if enqueue_batch is None:
            raise NotImplementedError("no batch enqueue API")
        for start in range(0, n, batch):
            enqueue_batch(range(start, min(n, start + batch)))
    else:
        raise ValueError(f"unknown variant {variant!r}")


def timed_w1(variant: str, n: int, producers: int, batch: int, consume: bool,
             enqueue: Callable[[int], Any], enqueue_batch: Callable[[range], Any] | None,
             start_consumers: Callable[[], None], counter: Counter,
             timeout: float = 600.0) -> dict[str, Any]:
    counter.reset(n)
    if consume:
        start_consumers()
    t0 = now()
    produce(variant, n, producers, batch, enqueue, enqueue_batch)
    t1 = now()
    out: dict[str, Any] = {"n": n, "enqueue_s": t1 - t0, "enqueue_rate": rate(n, t1 - t0)}
    if consume:
        if not counter.done.wait(timeout):
            raise TimeoutError(f"only {counter.count} of {n} jobs completed in {timeout}s")
        t2 = now()
        out.update(e2e_s=t2 - t0, e2e_rate=rate(n, t2 - t0))
    return out


class StartSignal:
    """W2: the handler stamps its start; the producer waits for it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.at = 0.0

    def hit(self) -> None:
        self.at = now()
        self.event.set()


def timed_w2(n: int, warmup: int, enqueue: Callable[[int], Any], signal: StartSignal,
             counter: Counter, timeout: float = 60.0) -> dict[str, Any]:
    """Idle-queue latency: enqueue, wait for the handler to start and the job to be recorded
    complete, then the next."""
    samples = []
    for i in range(warmup + n):
        signal.event.clear()
        counter.reset(1)
        t0 = now()
        enqueue(i)
        if not signal.event.wait(timeout):
            raise TimeoutError(f"job {i} did not start within {timeout}s")
        if i >= warmup:
            samples.append(signal.at - t0)
        if not counter.done.wait(timeout):
            raise TimeoutError(f"job {i} did not complete within {timeout}s")
    return latency_summary(samples)
