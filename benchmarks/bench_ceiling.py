"""The ceiling: trio + LMDB with group commit and no queue logic.

The same transitions actorq journals (enqueue -> started -> completed, one LMDB put each, a
small msgpack record), the same group-commit shape (one writer; everything submitted since the
last commit goes into one write transaction; in "fsync" mode the commit runs in a worker thread,
in "os" mode inline without fsync), the same fusing of an enqueue with the start of the job when
a slot is free. No validation, no codec layer, no indexes, no log, no retention, no actors: what
is left is the cost of trio, py-lmdb and the disk. actorq cannot beat it by much; the gap is the
price of its features and its code.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import lmdb
import msgpack
import trio
from _util import latency_summary, now, rate, rmtree, work_dir


class Ceiling:
    def __init__(self, path: str, fsync: bool, concurrency: int) -> None:
        self.env = lmdb.open(path, map_size=1 << 34, sync=fsync, metasync=fsync, max_dbs=2,
                             readahead=False)
        self.jobs = self.env.open_db(b"jobs")
        self.fsync = fsync
        self.concurrency = concurrency
        self.free = concurrency
        self.ready: deque[tuple[bytes, Any]] = deque()
        self.pending: list[tuple[bytes, bytes]] = []
        self.waiters: list[trio.Event] = []
        self.wake = trio.Event()
        self.next_id = 0
        self.paused = False
        self.dispatch_send, self.dispatch_recv = trio.open_memory_channel[tuple[bytes, Any]](
            math.inf)
        self.completed = 0
        self.all_done = trio.Event()
        self.target = math.inf
        self.commits = 0

    # ---- submissions (each returns once its transition is committed)

    async def _submit(self, writes: list[tuple[bytes, bytes]]) -> None:
        self.pending.extend(writes)
        done = trio.Event()
        self.waiters.append(done)
        self.wake.set()
        await done.wait()

    async def enqueue(self, payload: Any) -> bytes:
        job_id = b"%016x" % self.next_id
        self.next_id += 1
        self.ready.append((job_id, payload))
        await self._submit([(job_id, msgpack.packb({"q": "w", "p": payload, "s": "p"}))])
        return job_id

    async def enqueue_batch(self, payloads: Any) -> None:
        writes = []
        for payload in payloads:
            job_id = b"%016x" % self.next_id
            self.next_id += 1
            self.ready.append((job_id, payload))
            writes.append((job_id, msgpack.packb({"q": "w", "p": payload, "s": "p"})))
        await self._submit(writes)

    # ---- the writer: one commit per round, starts fused in

    def _commit(self, writes: list[tuple[bytes, bytes]]) -> None:
        with self.env.begin(write=True, db=self.jobs) as txn:
            for key, value in writes:
                txn.put(key, value)

    async def writer(self) -> None:
        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            started = []
            while not self.paused and self.free and self.ready:
                self.free -= 1
                started.append(self.ready.popleft())
            writes = self.pending + [(job_id, b"r") for job_id, _ in started]
            waiters = self.waiters
            self.pending, self.waiters = [], []
            if not writes:
                continue
            if self.fsync:
                await trio.to_thread.run_sync(self._commit, writes)
            else:
                self._commit(writes)
                await trio.lowlevel.checkpoint()
            self.commits += 1
            for ev in waiters:
                ev.set()
            for job in started:
                self.dispatch_send.send_nowait(job)

    async def worker(self, handler: Any) -> None:
        async for job_id, payload in self.dispatch_recv:
            await handler(payload)
            self.free += 1
            await self._submit([(job_id, b"c")])
            self.completed += 1
            if self.completed >= self.target:
                self.all_done.set()

    def resume(self) -> None:
        self.paused = False
        self.wake.set()


async def _noop(payload: Any) -> None:
    return None


def w1(*, mode: str, variant: str, n: int, producers: int = 100, concurrency: int = 100,
       batch: int = 1000) -> dict[str, Any]:
    out: dict[str, Any] = {}

    async def run(consume: bool) -> dict[str, Any]:
        path = work_dir("ceiling-w1")
        try:
            c = Ceiling(str(path), mode == "fsync", concurrency)
            c.target = n
            c.paused = not consume
            async with trio.open_nursery() as nursery:
                nursery.start_soon(c.writer)
                for _ in range(concurrency):
                    nursery.start_soon(c.worker, _noop)
                t0 = now()
                if variant == "sequential":
                    for i in range(n):
                        await c.enqueue(i)
                elif variant == "concurrent":
                    per = math.ceil(n / producers)

                    async def producer(start: int, stop: int) -> None:
                        for i in range(start, stop):
                            await c.enqueue(i)

                    async with trio.open_nursery() as prod:
                        for p in range(producers):
                            prod.start_soon(producer, p * per, min(n, (p + 1) * per))
                else:
                    for start in range(0, n, batch):
                        await c.enqueue_batch(range(start, min(n, start + batch)))
                t1 = now()
                r: dict[str, Any] = {"enqueue_s": t1 - t0, "enqueue_rate": rate(n, t1 - t0)}
                if consume:
                    await c.all_done.wait()
                    t2 = now()
                    r.update(e2e_s=t2 - t0, e2e_rate=rate(n, t2 - t0), commits=c.commits)
                nursery.cancel_scope.cancel()
            c.env.close()
            return r
        finally:
            rmtree(path)

    r = trio.run(run, False)
    out["enqueue_s"], out["enqueue_rate"] = r["enqueue_s"], r["enqueue_rate"]
    r = trio.run(run, True)
    out.update(n=n, e2e_s=r["e2e_s"], e2e_rate=r["e2e_rate"], commits=r["commits"],
               enqueue_under_load_rate=r["enqueue_rate"])
    return out


def w2(*, mode: str, n: int, warmup: int = 50) -> dict[str, Any]:
    samples: list[float] = []

    async def run() -> None:
        path = work_dir("ceiling-w2")
        try:
            c = Ceiling(str(path), mode == "fsync", 1)
            started = {}
            holder: dict[str, trio.Event] = {}

            async def handler(payload: int) -> None:
                started[payload] = now()
                holder["ev"].set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(c.writer)
                nursery.start_soon(c.worker, handler)
                for i in range(warmup + n):
                    ev = holder["ev"] = trio.Event()
                    c.target = c.completed + 1
                    c.all_done = trio.Event()
                    t0 = now()
                    await c.enqueue(i)
                    await ev.wait()
                    if i >= warmup:
                        samples.append(started[i] - t0)
                    await c.all_done.wait()
                nursery.cancel_scope.cancel()
            c.env.close()
        finally:
            rmtree(path)

    trio.run(run)
    return latency_summary(samples)
