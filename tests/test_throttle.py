"""Throttle through the runtime: the token bucket composed with priority and concurrency."""

from __future__ import annotations

import pytest
import trio

import actorq
from tests.support import run


def start_times(journal_path, throttle, n, *, concurrency=100, duration=0.0, priorities=None):
    starts = []

    async def handler(job):
        starts.append((trio.current_time(), job.payload))
        await trio.sleep(duration)

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler, concurrency=concurrency,
                                         throttle=throttle)
            await q.pause()
            for i in range(n):
                await q.enqueue(i, priority=priorities[i] if priorities else "normal")
            await q.resume()
            await q.join()

    run(main)
    return starts


def test_a_full_bucket_at_spawn_then_the_rate(journal_path):
    starts = start_times(journal_path, actorq.Throttle(2, per=1.0, burst=3), 9)
    assert [t for t, _ in starts] == [0, 0, 0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    # jobs started in the same instant may enter their handlers in any order
    assert sorted(p for _, p in starts[:3]) == [0, 1, 2]
    assert [p for _, p in starts[3:]] == list(range(3, 9))


def test_the_default_burst_is_the_rate(journal_path):
    starts = start_times(journal_path, actorq.Throttle(10, per=60.0), 12)
    times = [t for t, _ in starts]
    assert times[:10] == [0] * 10
    assert times[10:] == pytest.approx([6.0, 12.0])


@pytest.mark.parametrize(("rate", "per", "burst"), [(5, 1.0, 1), (3, 2.0, 4), (100, 60.0, None)])
def test_starts_never_exceed_burst_plus_rate_over_any_window(journal_path, rate, per, burst):
    throttle = actorq.Throttle(rate, per=per, burst=burst)
    starts = [t for t, _ in start_times(journal_path, throttle, 60)]
    capacity = throttle.capacity
    for i, t0 in enumerate(starts):
        for j in range(i, len(starts)):
            window = starts[j] - t0
            assert j - i + 1 <= capacity + rate * window / per + 1e-9
    # and the rate is actually reached: the last start is as early as the bucket allows
    expected_last = max(60 - capacity, 0) * per / rate
    assert starts[-1] == pytest.approx(expected_last, abs=1e-6)


def test_the_best_ready_job_takes_the_next_token(journal_path):
    order = []

    async def handler(job):
        order.append((trio.current_time(), job.payload))

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler, concurrency=10,
                                         throttle=actorq.Throttle(1, per=1.0, burst=1))
            await q.enqueue("first")  # takes the only token at t=0
            await q.enqueue("low", priority="low")
            await q.enqueue("normal")
            await trio.sleep(0.5)
            await q.enqueue("critical", priority="critical")  # arrives later, goes first
            await q.join()

    run(main)
    assert order == [(0, "first"), (1, "critical"), (2, "normal"), (3, "low")]


def test_a_token_is_taken_only_when_a_job_starts(journal_path):
    # One slot, jobs of 10 s, one token per 5 s with a burst of 2: waiting for the slot must not
    # spend tokens, and tokens never pile up beyond the burst.
    starts = start_times(journal_path, actorq.Throttle(1, per=5.0, burst=2), 4,
                         concurrency=1, duration=10)
    assert [t for t, _ in starts] == [0, 10, 20, 30]


def test_throttle_and_concurrency_together(journal_path):
    starts = start_times(journal_path, actorq.Throttle(4, per=1.0, burst=4), 8,
                         concurrency=2, duration=1)
    assert [t for t, _ in starts] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_a_paused_throttled_queue_does_not_spin(journal_path):
    async def handler(job):
        pass

    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            q = await actorq.spawn_queue("q", handler, throttle=actorq.Throttle(1, burst=1))
            await q.enqueue(1)
            await q.pause()
            await q.enqueue(2)
            commits = rt.writer.statistics().commits
            await trio.sleep(3600)
            assert rt.writer.statistics().commits == commits
            await q.resume()
            await q.join()

    run(main)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0}, r"^rate must be > 0 \(got 0\)$"),
        ({"rate": 1, "per": -1}, r"^per must be > 0 \(got -1\)$"),
        ({"rate": 1, "burst": 0.5}, r"^burst must be >= 1 \(got 0.5\)$"),
    ],
)
def test_throttle_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        actorq.Throttle(**kwargs)
