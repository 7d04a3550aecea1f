"""Failure handling: retries and every backoff form, timeouts, Discard, dead letters."""

from __future__ import annotations

import random
import threading
import time

import pytest
import trio

import actorq
from actorq import JobState
from actorq._backoff import backoff_delay
from tests.support import run


def attempt_times(journal_path, retry, *, fail_times=None, **enqueue):
    """Run one always-failing job; the virtual times its attempts started at."""
    times = []

    async def handler(job):
        times.append(trio.current_time())
        raise ValueError(f"attempt {job.attempt}")

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler, retry=retry)
            with pytest.raises(actorq.JobFailed):
                await q.wait(await q.enqueue(None, **enqueue))

    run(main)
    return times


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        (actorq.exponential(1.0), [0, 1, 3, 7, 15]),
        (actorq.exponential(1.0, factor=3.0, max=5.0), [0, 1, 4, 9, 14]),
        (actorq.fixed(2.5), [0, 2.5, 5, 7.5, 10]),
        (actorq.linear(2.0), [0, 2, 6, 12, 20]),
        (4, [0, 4, 8, 12, 16]),
        ([1, 10], [0, 1, 11, 21, 31]),
        (lambda n: n * n, [0, 1, 5, 14, 30]),
    ],
    ids=["exponential", "exponential-max", "fixed", "linear", "number", "list", "callable"],
)
def test_backoff_forms(journal_path, backoff, expected):
    times = attempt_times(journal_path, actorq.Retry(max_attempts=5, backoff=backoff))
    assert times == expected


def test_default_retry_is_exponential_from_one_second(journal_path):
    assert attempt_times(journal_path, actorq.Retry()) == [0, 1, 3]


def test_no_retry_means_one_attempt(journal_path):
    assert attempt_times(journal_path, None) == [0]


def test_per_job_max_attempts_overrides_the_queue(journal_path):
    times = attempt_times(journal_path, actorq.Retry(5, backoff=1), max_attempts=2)
    assert times == [0, 1]


def test_jitter_is_drawn_from_the_injected_random():
    backoff = actorq.exponential(10.0, factor=2.0, jitter=0.5)
    a = [backoff_delay(backoff, n, random.Random(7)) for n in (1, 2, 3)]
    b = [backoff_delay(backoff, n, random.Random(7)) for n in (1, 2, 3)]
    assert a == b
    for n, delay in zip((1, 2, 3), a):
        base = 10.0 * 2 ** (n - 1)
        assert base * 0.5 <= delay <= base * 1.5
    assert len({backoff_delay(backoff, 1, random.Random(s)) for s in range(20)}) > 10


def test_jitter_through_a_seeded_queue(journal_path):
    def times(seed, path):
        out = []

        async def handler(job):
            out.append(trio.current_time())
            raise ValueError("x")

        async def main():
            async with actorq.open_runtime(path, durability="os"):
                q = await actorq.spawn_queue(
                    "q", handler, rng=random.Random(seed),
                    retry=actorq.Retry(4, actorq.exponential(1.0, jitter=0.5)))
                with pytest.raises(actorq.JobFailed):
                    await q.wait(await q.enqueue(None))

        run(main)
        return out

    first = times(1, journal_path / "a")
    assert first == times(1, journal_path / "b")
    assert first != times(2, journal_path / "c")
    gaps = [b - a for a, b in zip(first, first[1:])]
    for n, gap in enumerate(gaps, start=1):
        assert 0.5 * 2 ** (n - 1) <= gap <= 1.5 * 2 ** (n - 1)


def test_discard_fails_at_once(journal_path):
    calls = []

    async def handler(job):
        calls.append(job.attempt)
        raise actorq.Discard("card declined")

    async def main():
        failures = []
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue(
                "q", handler, retry=actorq.Retry(5),
                hooks=actorq.Hooks(on_failure=lambda job, exc: failures.append(exc)))
            job_id = await q.enqueue(None)
            with pytest.raises(actorq.JobFailed) as info:
                await q.wait(job_id)
            assert info.value.job_id == job_id
            assert info.value.error == "Discard: card declined"
            status = await q.status(job_id)
            assert status.state is JobState.FAILED and status.attempts == 1
            await trio.sleep(0)
        assert [type(e) for e in failures] == [actorq.Discard]

    run(main)
    assert calls == [1]


def test_dead_letter_is_written_with_the_failure(journal_path):
    async def handler(job):
        raise KeyError(job.payload["sku"])

    dead = []

    async def on_dead(job):
        dead.append(job.payload)

    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            q = await actorq.spawn_queue("orders", handler, dead_letter="orders.dead",
                                         retry=actorq.Retry(2, backoff=1))
            job_id = await q.enqueue({"sku": "A-1"})
            with pytest.raises(actorq.JobFailed):
                await q.wait(job_id)
            # the dead-letter job was journaled right after the failure, in the same commit
            log = rt.journal.log()
            kinds = [type(ev).__name__ for _seq, ev in log]
            fail_at = kinds.index("Failed")
            assert kinds[fail_at + 1] == "Enqueued"
            assert log[fail_at + 1][0] == log[fail_at][0] + 1
            dlq_record = log[fail_at + 1][1].record
            assert dlq_record.queue == "orders.dead"
            # spawned later, the dead-letter queue picks it up from the journal
            dlq = await actorq.spawn_queue("orders.dead", on_dead)
            await dlq.join()

    run(main)
    assert len(dead) == 1
    assert dead[0] == {"job_id": dead[0]["job_id"], "queue": "orders",
                       "payload": {"sku": "A-1"}, "error": "KeyError: 'A-1'", "attempts": 2}


def test_dead_letter_to_a_running_queue(journal_path):
    async def failing(job):
        raise ValueError("no")

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            dead = []

            async def on_dead(job):
                dead.append((trio.current_time(), job.payload["job_id"]))

            dlq = await actorq.spawn_queue("dead", on_dead)
            q = await actorq.spawn_queue("q", failing, dead_letter="dead")
            job_id = await q.enqueue(None, delay=3)
            with pytest.raises(actorq.JobFailed):
                await q.wait(job_id)
            await dlq.join()
            assert dead == [(3, job_id)]

    run(main)


def test_timeout_cancels_the_attempt(journal_path):
    errors = []

    async def handler(job):
        await trio.sleep(10 if job.attempt == 1 else 1)
        return job.attempt

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue(
                "q", handler, timeout=3, retry=actorq.Retry(3, backoff=2),
                hooks=actorq.Hooks(on_error=lambda job, exc: errors.append(exc)))
            job_id = await q.enqueue(None)
            assert await q.wait(job_id) == 2
            assert trio.current_time() == 3 + 2 + 1
            assert (await q.status(job_id)).error == "JobTimeout: attempt 1 timed out after 3s"
            # a per-job timeout overrides the queue's
            other = await q.enqueue(None, timeout=20)
            t0 = trio.current_time()
            assert await q.wait(other) == 1
            assert trio.current_time() - t0 == 10

    run(main)
    assert [type(e) for e in errors] == [actorq.JobTimeout]


def test_an_unencodable_result_fails_the_attempt(journal_path):
    async def handler(job):
        return {1, 2, 3} if job.attempt == 1 else "fine"

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler, retry=actorq.Retry(2, backoff=0))
            job_id = await q.enqueue(None)
            assert await q.wait(job_id) == "fine"
            info = await q.status(job_id)
            assert info.attempts == 2
            assert info.error.startswith("PayloadError: handler result: set is not storable")

    run(main)


def test_a_sync_handler_timeout_abandons_the_thread_but_never_runs_it_twice(journal_path):
    events = []
    lock = threading.Lock()
    release = threading.Event()

    def handler(job):
        with lock:
            events.append(("start", job.attempt))
        if job.attempt == 1:
            release.wait(5)  # a thread cannot be cancelled: it runs on after the timeout
        with lock:
            events.append(("end", job.attempt))
        return job.attempt

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler, timeout=1,
                                         retry=actorq.Retry(2, backoff=0))
            job_id = await q.enqueue(None)
            while (await q.status(job_id)).attempts < 1 or \
                    (await q.status(job_id)).error is None:
                await trio.sleep(0.5)
            # attempt 1 timed out and its retry is due, but its thread still runs
            assert (await q.status(job_id)).error.startswith("JobTimeout")
            # From here on, virtual time stands still while threads run (else the clock would
            # jump to attempt 2's timeout while its thread works).
            trio.lowlevel.current_clock().autojump_threshold = float("inf")
            await trio.to_thread.run_sync(time.sleep, 0.2)
            assert events == [("start", 1)]
            release.set()
            assert await q.wait(job_id) == 2

    run(main)
    assert events == [("start", 1), ("end", 1), ("start", 2), ("end", 2)]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: actorq.Retry(max_attempts=0), r"^max_attempts must be >= 1 \(got 0\)$"),
        (lambda: actorq.Retry(backoff=-1), r"^backoff must be >= 0 \(got -1\)$"),
        (lambda: actorq.Retry(backoff=[]), r"^backoff must not be an empty list$"),
        (lambda: actorq.exponential(1, jitter=2), r"^jitter must be between 0 and 1 \(got 2\)$"),
        (lambda: actorq.exponential(1, factor=0), r"^factor must be > 0 \(got 0\)$"),
        (lambda: actorq.fixed(-2), r"^delay must be >= 0 \(got -2\)$"),
    ],
)
def test_policy_validation(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_retry_backoff_type_errors():
    with pytest.raises(TypeError, match=r"^backoff must be a number"):
        actorq.Retry(backoff="1s")
    with pytest.raises(TypeError, match=r"^max_attempts must be an int \(got 2.5\)$"):
        actorq.Retry(max_attempts=2.5)
