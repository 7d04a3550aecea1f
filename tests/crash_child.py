"""The child process of ``test_crash_sigkill.py``: a real actorq runtime, killed with SIGKILL.

    python crash_child.py JOURNAL SIDEFILE MODE

runs one queue on the journal at JOURNAL with ``durability="fsync"`` (the default), on trio's real
clock, and appends what it knows to SIDEFILE, one line per fact, each line written in one
``write``, flushed and fsync'ed before the child goes on:

- ``ready``: the queue is spawned (its journaled jobs are loaded);
- ``ack <id>``: ``enqueue`` (or ``enqueue_batch``) returned that id: the job is acknowledged;
- ``run <id> <attempt>``: a handler started (the start was durable before it was called);
- ``done <id>``: a handler is about to return (its completion is not durable yet);
- ``produced``: every enqueue of the mode returned; ``idle``: the queue has nothing left to do.

The child never exits by itself: once idle it sleeps until the parent kills it. The parent polls
SIDEFILE and sends SIGKILL at the point it wants. Payloads are ``{"k": "<unique key>"}`` and a
handler returns ``result_of(payload)``, so the parent can check every result.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Awaitable, Callable

import attrs
import trio

import actorq

QUEUE = "work"
RETRY = actorq.Retry(max_attempts=50, backoff=0)


def result_of(payload: dict) -> str:
    return "ok:" + payload["k"]


class Side:
    """The side file: append one line, flush, fsync, before anything else happens."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as we do

    def write(self, line: str) -> None:
        self._file.write(line + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())


@attrs.frozen
class Mode:
    produce: Callable[[actorq.Queue, Side, str], Awaitable[None]]
    concurrency: int
    sleep: Callable[[], float]  # how long a handler sleeps between "run" and "done"
    queue: str = QUEUE


# ---- producers


async def _nothing(queue: actorq.Queue, side: Side, mode: str) -> None:
    pass


async def _serial(queue: actorq.Queue, side: Side, mode: str) -> None:
    """One enqueuer, one durable enqueue after another."""
    for n in range(1000):
        job_id = await queue.enqueue({"k": f"{mode}-{n}"})
        side.write(f"ack {job_id}")


async def _burst(queue: actorq.Queue, side: Side, mode: str) -> None:
    """Ten enqueuers at once (their enqueues share group commits); odd ones enqueue batches."""

    async def enqueuer(g: int) -> None:
        if g % 2 == 0:
            for n in range(100):
                job_id = await queue.enqueue({"k": f"{mode}-{g}-{n}"})
                side.write(f"ack {job_id}")
        else:
            for b in range(20):
                ids = await queue.enqueue_batch(
                    [{"k": f"{mode}-{g}-{b}-{i}"} for i in range(5)])
                for job_id in ids:
                    side.write(f"ack {job_id}")

    async with trio.open_nursery() as nursery:
        for g in range(10):
            nursery.start_soon(enqueuer, g)


def _batch(count: int) -> Callable[[actorq.Queue, Side, str], Awaitable[None]]:
    async def produce(queue: actorq.Queue, side: Side, mode: str) -> None:
        ids = await queue.enqueue_batch([{"k": f"{mode}-{n}"} for n in range(count)])
        for job_id in ids:
            side.write(f"ack {job_id}")

    return produce


async def _one(queue: actorq.Queue, side: Side, mode: str) -> None:
    job_id = await queue.enqueue({"k": f"{mode}-0"})
    side.write(f"ack {job_id}")


MODES: dict[str, Mode] = {
    # kill after the first acknowledged enqueues (handlers of 5 ms run meanwhile)
    "serial": Mode(_serial, concurrency=4, sleep=lambda: 0.005),
    # kill in the middle of a burst of concurrent enqueues
    "burst": Mode(_burst, concurrency=4, sleep=lambda: 0.005),
    # kill while handlers run: 4 of 12 jobs run, for far longer than the test waits
    "running": Mode(_batch(12), concurrency=4, sleep=lambda: 60.0),
    # the same with every job running (the first half of a double crash)
    "running_all": Mode(_batch(4), concurrency=4, sleep=lambda: 60.0),
    # kill while many short jobs finish: completions commit in groups
    "completing": Mode(_batch(300), concurrency=32, sleep=lambda: random.uniform(0, 0.003)),
    # enqueue nothing: run what the journal holds (a restart after a crash, itself killed)
    "recover": Mode(_nothing, concurrency=2, sleep=lambda: 0.3),
    # one job on queue "q" whose handler never returns
    "interrupt": Mode(_one, concurrency=1, sleep=lambda: 3600.0, queue="q"),
}


async def main(journal: str, side_path: str, mode_name: str) -> None:
    mode = MODES[mode_name]
    side = Side(side_path)

    async def handler(job: actorq.Job) -> str:
        side.write(f"run {job.id} {job.attempt}")
        await trio.sleep(mode.sleep())
        side.write(f"done {job.id}")
        return result_of(job.payload)

    async with actorq.open_runtime(journal) as runtime:  # durability="fsync", the default
        assert runtime.durability == "fsync"
        queue = await runtime.spawn_queue(mode.queue, handler, concurrency=mode.concurrency,
                                          retry=RETRY)
        side.write("ready")
        await mode.produce(queue, side, mode_name)
        side.write("produced")
        await queue.join()
        side.write("idle")
        await trio.sleep_forever()  # until SIGKILL


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:4])
