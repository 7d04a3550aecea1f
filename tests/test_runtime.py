"""The runtime: shutdown, recovery across reopen, boot epochs, supervision, bad arguments."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
import trio

import actorq
from actorq import JobState
from actorq._journal import Journal
from actorq._model import Started
from tests.support import run


async def noop(job):
    return None


def test_leaving_the_runtime_puts_running_jobs_back_uncounted(journal_path):
    starts = []

    async def slow(job):
        starts.append((job.payload, job.attempt))
        await trio.sleep(100)
        return "done"

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", slow, concurrency=2)
            a = await q.enqueue("a")
            b = await q.enqueue("b")
            c = await q.enqueue("c", delay=500)
            await trio.sleep(1)
            assert (await q.stats())["running"] == 2
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            for job_id in (a, b):
                info = await rt.status(job_id)
                assert info.state is JobState.PENDING
                assert info.attempts == 0  # the cancelled attempt does not count
                assert info.error is None
            assert (await rt.status(c)).state is JobState.DELAYED
            q = await actorq.spawn_queue("q", slow, concurrency=2)
            assert await q.wait(a) == "done"
            assert (await q.status(a)).attempts == 1

    run(main)
    assert sorted(starts[:2]) == sorted(starts[2:]) == [("a", 1), ("b", 1)]


def test_reopen_restores_pending_and_delayed_jobs_with_wall_clock_deadlines(journal_path):
    started = {}

    async def handler(job):
        started[job.payload] = trio.current_time()

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler)
            await q.pause()
            await q.enqueue("pending")
            await q.enqueue("soon", delay=10)
            await q.enqueue("later", delay=100)
        t_closed = trio.current_time()
        await trio.sleep(50)  # the process is "down" for 50 s: "soon" is overdue
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler)
            stats = await q.stats()
            assert stats["delayed"] == 1  # "soon" is overdue: journaled due at spawn
            assert stats["running"] + stats["pending"] + stats["completed"] == 2, stats
            await q.join()
        assert started["pending"] - t_closed == 50
        assert started["soon"] - t_closed == 50  # due while down: runs at once
        assert started["later"] - t_closed == pytest.approx(100, abs=1e-6)

    run(main)


def test_interrupted_attempts_are_recorded_at_open_and_retried(journal_path):
    """A job journaled as running under an older boot epoch was cut short by a crash."""
    runs = []
    errors = []

    async def handler(job):
        runs.append(job.attempt)
        return "second time lucky"

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", noop)
            await q.pause()
            job_id = await q.enqueue("x")
        # Simulate a crash mid-attempt: journal a start under the old epoch, as a killed
        # process would have left it.
        journal = Journal(journal_path, sync=False)
        journal.commit([Started(job_id, 0.0, 1, journal.epoch - 1)])
        journal.close()
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            info = await rt.status(job_id)
            assert info.state is JobState.PENDING
            assert "interrupted" in info.error
            assert info.attempts == 1
            q = await actorq.spawn_queue(
                "q", handler, retry=actorq.Retry(3, backoff=5),
                hooks=actorq.Hooks(on_error=lambda job, exc: errors.append(exc)))
            t0 = trio.current_time()
            assert await q.wait(job_id) == "second time lucky"
            assert trio.current_time() - t0 == 5  # the retry policy's backoff applies
            assert (await q.status(job_id)).attempts == 2

    run(main)
    assert runs == [2]
    assert [type(e) for e in errors] == [actorq.JobInterrupted]


def test_interrupted_last_attempt_fails_and_is_dead_lettered(journal_path):
    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", noop)
            await q.pause()
            job_id = await q.enqueue("x")
        journal = Journal(journal_path, sync=False)
        journal.commit([Started(job_id, 0.0, 1, journal.epoch - 1)])
        journal.close()
        failures = []
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue(
                "q", noop, dead_letter="dead",
                hooks=actorq.Hooks(on_failure=lambda job, exc: failures.append(exc)))
            with pytest.raises(actorq.JobFailed, match="interrupted"):
                await q.wait(job_id)
            dead = await actorq.spawn_queue("dead", noop)
            await trio.sleep(0)
            (letter,) = await dead.list()
            assert letter.payload["job_id"] == job_id
            assert letter.payload["attempts"] == 1
            assert "interrupted" in letter.payload["error"]
        assert [type(e) for e in failures] == [actorq.JobInterrupted]

    run(main)


def test_jobs_of_unspawned_queues_can_be_inspected_and_cancelled(journal_path):
    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("elsewhere", noop)
            await q.pause()
            a = await q.enqueue(1)
            b = await q.enqueue(2)
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            assert (await rt.status(a)).queue == "elsewhere"
            assert await rt.cancel(a) is True
            assert await rt.cancel(a) is False
            with pytest.raises(actorq.JobCancelled):
                await rt.wait(a)
            results = []

            async def wait_b():
                results.append(await rt.wait(b))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_b)
                await trio.sleep(5)
                q = await actorq.spawn_queue("elsewhere", lambda job: job.payload * 10)
            assert results == [20]

    run(main)


def test_status_of_an_unknown_job(journal_path):
    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            with pytest.raises(actorq.UnknownJob, match="nope"):
                await rt.status("nope")
            with pytest.raises(actorq.UnknownJob):
                await rt.wait("nope")

    run(main)


def test_body_exceptions_leave_unwrapped(journal_path):
    async def main():
        with pytest.raises(ZeroDivisionError):
            async with actorq.open_runtime(journal_path, durability="os"):
                q = await actorq.spawn_queue("q", noop)
                await q.enqueue(1)
                1 / 0  # noqa: B018
        # and the journal was closed cleanly: it opens again
        async with actorq.open_runtime(journal_path, durability="os"):
            pass

    run(main)


def test_spawn_queue_needs_a_runtime():
    async def main():
        with pytest.raises(RuntimeError, match="needs a runtime"):
            await actorq.spawn_queue("q", noop)

    run(main)


def test_a_queue_name_is_unique(journal_path):
    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            await rt.spawn_queue("q", noop)
            with pytest.raises(ValueError, match="^name must be unique within a runtime"):
                await actorq.spawn_queue("q", noop)

    run(main)


def test_fsync_durability_round_trip(journal_path):
    async def main():
        async with actorq.open_runtime(journal_path) as rt:  # default: fsync, on a thread
            assert rt.durability == "fsync"
            q = await actorq.spawn_queue("q", lambda job: job.payload + 1, concurrency=4)
            ids = []
            async with trio.open_nursery() as nursery:
                async def one(i):
                    ids.append(await q.enqueue(i))
                for i in range(50):
                    nursery.start_soon(one, i)
            await q.join()
            stats = rt.writer.statistics()
            assert stats.commits < stats.transitions
        async with actorq.open_runtime(journal_path) as rt:
            assert sorted([await rt.wait(i) for i in ids]) == list(range(1, 51))

    trio.run(main)


def test_a_crashing_worker_is_restarted_and_its_job_retried(journal_path):
    calls = []

    def on_start(job):
        calls.append(job.attempt)
        if job.attempt == 1:
            raise RuntimeError("hook bug")

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", lambda job: "ok", retry=actorq.Retry(3, backoff=1),
                                         hooks=actorq.Hooks(on_start=on_start))
            job_id = await q.enqueue(None)
            assert await q.wait(job_id) == "ok"
            info = await q.status(job_id)
            assert info.attempts == 2
            assert info.error.startswith("JobInterrupted: the worker running attempt 1 crashed")

    run(main)
    assert calls == [1, 2]


def test_too_many_crashes_escalate_as_supervisor_error(journal_path):
    def on_start(job):
        raise RuntimeError("always")

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue(
                "q", noop, retry=actorq.Retry(10, backoff=0),
                restart=actorq.Restart(max_restarts=2, within=5),
                hooks=actorq.Hooks(on_start=on_start))
            await q.enqueue(None)
            await trio.sleep(100)

    with pytest.raises(BaseExceptionGroup) as info:
        run(main)
    errors = info.value.subgroup(actorq.SupervisorError).exceptions
    err = errors[0]
    while isinstance(err, BaseExceptionGroup):
        err = err.exceptions[0]
    assert isinstance(err, actorq.SupervisorError)
    assert isinstance(err.__cause__, RuntimeError)
    assert "3 crashes within 5s (max_restarts=2)" in str(err)


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"concurrency": 0}, ValueError, r"^concurrency must be >= 1 \(got 0\)$"),
        ({"concurrency": 1.5}, TypeError, r"^concurrency must be an int \(got 1.5\)$"),
        ({"timeout": 0}, ValueError, r"^timeout must be > 0 \(got 0\)$"),
        ({"retry": 3}, TypeError, r"^retry must be an actorq.Retry or None \(got 3\)$"),
        ({"dead_letter": "q"}, ValueError, r"^dead_letter must name another queue"),
        ({"hooks": {}}, TypeError, r"^hooks must be an actorq.Hooks or None"),
    ],
)
def test_spawn_queue_validation(journal_path, kwargs, exc, message):
    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            with pytest.raises(exc, match=message):
                await actorq.spawn_queue("q", noop, **kwargs)
            assert "q" not in rt.queues

    run(main)


def test_handler_must_be_callable(journal_path):
    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            with pytest.raises(TypeError, match=r"^handler must be callable \(got 42\)$"):
                await actorq.spawn_queue("q", 42)

    run(main)


def test_unknown_durability():
    async def main():
        with pytest.raises(ValueError, match=r"^durability must be 'fsync' or 'os' \(got 'x'\)$"):
            async with actorq.open_runtime("/nonexistent-never-created", durability="x"):
                pass

    run(main)


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"priority": "urgent"}, ValueError, r"^priority must be one of 'critical', 'high', "),
        ({"priority": True}, TypeError, r"^priority must be a priority name or an int"),
        ({"priority": 1.5}, TypeError, r"^priority must be a priority name or an int"),
        ({"delay": -1}, ValueError, r"^delay must be >= 0 \(got -1\)$"),
        ({"delay": 1, "run_at": dt.datetime.now(dt.timezone.utc)}, ValueError,
         r"^delay and run_at cannot both be given$"),
        ({"run_at": dt.datetime(2030, 1, 1)}, ValueError, r"^run_at must be timezone-aware"),
        ({"max_attempts": 0}, ValueError, r"^max_attempts must be >= 1 \(got 0\)$"),
        ({"timeout": 0}, ValueError, r"^timeout must be > 0 \(got 0\)$"),
        ({"job_id": 5}, TypeError, r"^job_id must be a str \(got 5\)$"),
        ({"job_id": ""}, ValueError, r"^job_id must be 1 to 200 bytes"),
    ],
)
def test_enqueue_validation_records_nothing(journal_path, kwargs, exc, message):
    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", noop)
            with pytest.raises(exc, match=message):
                await q.enqueue("payload", **kwargs)
            assert await q.list() == []

    run(main)


def test_payload_errors_record_nothing(journal_path):
    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", noop)
            for bad in [b"bytes", {1: "int key"}, {"a": [1, object()]}, 2**64, -(2**63) - 1]:
                with pytest.raises(actorq.PayloadError):
                    await q.enqueue(bad)
            assert await q.stats() == {s.value: 0 for s in JobState}
            assert issubclass(actorq.PayloadError, TypeError)

    run(main)


def test_a_handle_used_after_the_runtime_closed_raises(journal_path):
    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", noop)
        with pytest.raises(RuntimeError, match="has stopped"):
            await q.enqueue(1)
        with pytest.raises(RuntimeError, match="has stopped"):
            await q.join()

    run(main)


def test_callers_waiting_outside_the_runtime_are_released_when_it_closes(journal_path):
    async def slow(job):
        await trio.sleep(100)

    async def main():
        outcomes = []
        async with trio.open_nursery() as outer:
            async with actorq.open_runtime(journal_path, durability="os") as rt:
                q = await actorq.spawn_queue("q", slow)
                job_id = await q.enqueue(None)

                async def join():
                    try:
                        await q.join()
                    except RuntimeError as exc:
                        outcomes.append(("join", str(exc)))

                async def wait():
                    try:
                        await rt.wait(job_id)
                    except RuntimeError as exc:
                        outcomes.append(("wait", str(exc)))

                outer.start_soon(join)
                outer.start_soon(wait)
                await trio.sleep(1)
        assert sorted(kind for kind, _ in outcomes) == ["join", "wait"]
        assert trio.current_time() == 1

    run(main)


def test_reads_after_close_raise_a_clear_error(journal_path):
    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            q = await actorq.spawn_queue("q", noop)
            job_id = await q.enqueue(1)
        for call in (lambda: rt.status(job_id), q.stats, q.list):
            with pytest.raises(RuntimeError, match="is closed"):
                await call()

    run(main)


def test_an_outcome_reached_before_closing_is_journaled_not_rerun(journal_path):
    runs = []

    async def quick(job):
        runs.append(job.attempt)
        return "done"

    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            q = await actorq.spawn_queue("q", quick)
            job_id = await q.enqueue(None)
            await trio.sleep(0)  # the handler returns; its outcome is not journaled yet
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            assert (await rt.status(job_id)).state is JobState.COMPLETED
            await actorq.spawn_queue("q", quick)
            await trio.sleep(1)

    for _ in range(20):  # several interleavings of the handler and the shutdown
        runs.clear()
        shutil.rmtree(journal_path, ignore_errors=True)
        run(main)
        assert runs == [1]


def test_generated_job_ids_are_unique_and_not_shared_with_a_forked_child():
    import os

    from actorq._api import new_job_id

    ids = [new_job_id() for _ in range(3000)]  # more than one buffer of random bits
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_job_id()[16:].encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert len(child) == 16 and child != new_job_id()[16:]
