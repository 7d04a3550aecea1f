"""The ready window: a queue holds only its best few thousand ready jobs in memory; the rest
wait in the journal's ready index, in start order, and are read in as the window drains.

The window is shrunk here (``QueueActor.ready_window``, ``refill_chunk``) so that a few dozen jobs
spill past it; every test checks what a user sees (start order, counts, cancel, join, recovery),
and that memory stays bounded by the window, not by the backlog.
"""

from __future__ import annotations

import random

import lmdb
import pytest
import trio
import trio.testing

import actorq
from actorq import JobState
from actorq._actor import QueueActor
from actorq._clock import wall_now
from actorq._journal import _Q, Journal
from actorq._model import Enqueued, JobRecord, Started
from tests.support import run

WINDOW, CHUNK = 8, 3


@pytest.fixture(autouse=True)
def small_window(monkeypatch):
    monkeypatch.setattr(QueueActor, "ready_window", WINDOW)
    monkeypatch.setattr(QueueActor, "refill_chunk", CHUNK)


def held(queue: actorq.Queue) -> int:
    """Ready jobs the queue holds in memory."""
    core = queue._actor.core
    return len(core.jobs) - len(core.running) - core.counts()["delayed"]


def test_a_backlog_beyond_the_window_starts_in_priority_then_enqueue_order(journal_path):
    rng = random.Random(7)
    jobs = [(i, rng.choice([0, 1, 2, 3, -4])) for i in range(60)]
    started, most_held = [], []

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            async def handler(job):
                started.append(job.payload)
                most_held.append(held(q))

            q = await actorq.spawn_queue("q", handler)
            await q.pause()
            for payload, priority in jobs:
                await q.enqueue(payload, priority=priority)
                most_held.append(held(q))
            assert q.statistics().ready == 60
            assert (await q.stats())["pending"] == 60
            await q.resume()
            await q.join()
            assert q.statistics().ready == 0

    run(main)
    assert started == [p for p, _prio in sorted(jobs, key=lambda j: (j[1], j[0]))]
    assert max(most_held) <= 2 * WINDOW + 1  # bounded by the window, not the 60 pending


def test_jobs_enqueued_while_the_backlog_drains_take_their_place(journal_path):
    """A critical job enqueued mid-drain starts next; a low one waits behind every normal
    one, although the normal ones it ranks after are not in memory."""
    started = []

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            async def handler(job):
                started.append(job.payload)
                if job.payload == "n5":
                    await q.enqueue("low", priority="low")
                    await q.enqueue("crit", priority="critical")
                    await q.enqueue("n-late")

            q = await actorq.spawn_queue("q", handler)
            await q.pause()
            await q.enqueue_batch([f"n{i}" for i in range(40)])
            await q.resume()
            await q.join()

    run(main)
    normal = [f"n{i}" for i in range(40)]
    assert started == normal[:6] + ["crit"] + normal[6:] + ["n-late", "low"]


def test_a_reopened_backlog_is_counted_whole_and_runs_in_order(journal_path):
    async def build():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler)
            await q.pause()
            await q.enqueue_batch(range(30), priority="low")
            await q.enqueue_batch(range(30, 50), priority="high")

    started, most_held = [], []
    counted = trio.Event()

    async def handler(job):
        await counted.wait()
        started.append(job.payload)
        most_held.append(held(q))

    async def reopen():
        nonlocal q
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler)
            stats = q.statistics()
            assert (stats.ready, stats.running) == (49, 1)
            counted.set()
            assert held(q) <= WINDOW  # a chunk at open, refilled round by round up to the window
            await q.join()  # returns only when the jobs beyond the window ran too
            assert (await q.stats())["completed"] == 50

    q = None
    run(build)
    run(reopen)
    assert started == list(range(30, 50)) + list(range(30))
    assert max(most_held) <= WINDOW + CHUNK


@pytest.mark.parametrize("delayed", [False, True])
def test_cancel_a_job_beyond_the_window(journal_path, delayed):
    started = []

    async def handler(job):
        started.append(job.payload)

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler)
            if delayed:
                ids = [await q.enqueue(i, delay=10 + i) for i in range(30)]
            else:
                await q.pause()
                ids = await q.enqueue_batch(range(30))
            await trio.testing.wait_all_tasks_blocked()  # the queue sheds in its next round
            assert ids[25] not in q._actor.core.jobs  # spilled: only in the journal
            assert await q.cancel(ids[25]) is True
            assert (await q.status(ids[25])).state is JobState.CANCELLED
            assert await q.cancel(ids[25]) is False
            stats = q.statistics()
            assert (stats.delayed if delayed else stats.ready) == 29
            await q.resume()
            await q.join()
            assert (await q.stats())["completed"] == 29

    run(main)
    assert started == [i for i in range(30) if i != 25]


@pytest.mark.parametrize("fails_at", [1, 2])
def test_a_retry_ranks_from_its_retry_time(journal_path, fails_at):
    """Jobs 0-19 are enqueued at t=0, 20-24 at t=1; job 0's first attempt fails at
    ``fails_at`` and is retried at once (no backoff). At t=1 its retry ties with 20-24 and goes
    first (enqueue order); at t=2 it ranks after them. Most of them are beyond the window."""
    started = []

    async def handler(job):
        started.append((job.payload, job.attempt))
        if job.payload == 0 and job.attempt == 1:
            await trio.sleep(fails_at - 1)
            raise ValueError("once")

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler,
                                         retry=actorq.Retry(max_attempts=2, backoff=0))
            await q.pause()
            await q.enqueue_batch(range(20))
            await trio.sleep(1)
            await q.enqueue_batch(range(20, 25))
            await q.resume()
            await q.join()

    run(main)
    first = [(0, 1)] + [(i, 1) for i in range(1, 20)]
    late = [(i, 1) for i in range(20, 25)]
    assert started == first + ([(0, 2)] + late if fails_at == 1 else late + [(0, 2)])


def test_interrupted_jobs_of_a_crashed_run_are_decided_and_rerun(journal_path):
    """Jobs that were running when the process died are found at open even with a backlog
    far beyond the window: each counts a failed attempt and is retried in its turn."""
    with Journal(journal_path, sync=False) as journal:
        epoch = journal.epoch
        journal.commit([Enqueued(JobRecord(id=f"j{i}", queue="q", state=JobState.PENDING,
                                           payload=i, priority=2, seq=0,
                                           created_at=1_000.0 + i, ready_at=1_000.0 + i))
                        for i in range(40)])
        journal.commit([Started(f"j{i}", 1_050.0, 1, epoch) for i in (3, 30)])
    # ...and the process died: no clean stop requeued them.
    started = []

    async def handler(job):
        started.append((job.payload, job.attempt))

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler,
                                         retry=actorq.Retry(max_attempts=3, backoff=0))
            await q.join()
            info = await q.status("j30")
            assert info.attempts == 2 and "interrupted" in info.error

    run(main)
    assert started == [(i, 1) for i in range(40) if i not in (3, 30)] + [(3, 2), (30, 2)]


def test_a_format_2_journal_gets_its_ready_index_at_open(journal_path):
    with Journal(journal_path, sync=False) as journal:
        journal.commit([Enqueued(JobRecord(id=f"j{i}", queue="q", state=JobState.PENDING,
                                           payload=i, priority=i % 3, seq=0,
                                           created_at=1_000.0, ready_at=1_000.0))
                        for i in range(9)])
        expected = journal.ready_entries("q", None, 100)
    assert [e.id for e in expected] == [f"j{i}" for i in (0, 3, 6, 1, 4, 7, 2, 5, 8)]
    env = lmdb.open(str(journal_path), max_dbs=10)  # make it what format 2 was
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"ready", txn=txn), delete=True)
        txn.put(b"format", _Q.pack(2), db=env.open_db(b"meta", txn=txn))
    env.close()
    with Journal(journal_path, sync=False) as journal:
        assert journal.ready_entries("q", None, 100) == expected
    with Journal(journal_path, sync=False) as journal:  # and once only
        assert journal.ready_entries("q", None, 100) == expected


def test_delayed_jobs_beyond_the_window_start_at_their_due_times(journal_path):
    rng = random.Random(3)
    delays = [rng.randrange(1, 500) for _ in range(60)]
    started, most_held = {}, []

    async def handler(job):
        started[job.payload] = trio.current_time() - t0
        most_held.append(len(q._actor.core.jobs))

    async def main():
        nonlocal q, t0
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler, concurrency=2)
            t0 = trio.current_time()
            for i, delay in enumerate(delays):
                await q.enqueue(i, delay=delay)
                most_held.append(len(q._actor.core.jobs))
            assert q.statistics().delayed == 60
            await q.join()

    q, t0 = None, 0.0
    run(main)
    assert started == {i: float(d) for i, d in enumerate(delays)}
    assert max(most_held) <= 2 * WINDOW + 1  # bounded by the window, not the 60 delayed


def test_a_reopened_delayed_backlog_partly_overdue_runs_in_priority_order(journal_path):
    """After downtime, every overdue job is ranked with the others (priority first), however
    far beyond the window it was; the ones not due yet start at their due times."""
    async def build():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler)
            for i in range(30):
                await q.enqueue(("low", i), delay=10 + i, priority="low")
            for i in range(30):
                await q.enqueue(("high", i), delay=40 + i, priority="high")
            for i in range(5):
                await q.enqueue(("later", i), delay=1000 + i)

    started = []
    counted = trio.Event()

    async def handler(job):
        await counted.wait()
        started.append((tuple(job.payload), trio.current_time() - t0))

    async def reopen():
        nonlocal t0
        wall_now()  # virtual wall time starts now, and moves with the sleep
        t0 = trio.current_time()
        await trio.sleep(100)  # down for 100 s: everything but "later" is overdue
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler)
            stats = q.statistics()
            assert (stats.ready, stats.delayed, stats.running) == (59, 5, 1)
            counted.set()
            await q.join()

    t0 = 0.0
    run(build)
    run(reopen)
    order = [payload for payload, _t in started]
    assert order == ([("high", i) for i in range(30)] + [("low", i) for i in range(30)]
                     + [("later", i) for i in range(5)])
    # at their due times (the two runs' virtual wall clocks start a few real ms apart)
    assert all(abs(t - (1000.0 + i)) < 0.5 for i, (_p, t) in enumerate(started[-5:]))
    assert all(t < 100.5 for _p, t in started[:-5])  # the overdue ones at once


def test_a_queue_is_idle_only_once_its_indexes_are_read_to_the_end():
    """join() answers on ``idle``: with no job in memory, a queue whose indexes may still hold
    jobs beyond its horizons is not idle until a refill found them empty."""
    from actorq._core import CoreJob, QueueCore

    core = QueueCore(1, window=4)
    core.spill_all()
    assert not core.idle  # nothing in memory, but nothing has read the indexes yet
    core.refilled([CoreJob("j", 2, 1, 0.0)], exhausted=True)
    core.refilled([], exhausted=True, kind="delayed")
    assert not core.idle
    (job,) = core.take_startable(0.0)
    core.succeeded(job.id)
    assert core.idle
