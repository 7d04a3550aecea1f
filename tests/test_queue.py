"""Queue behaviour through the public API, in virtual time with exact time asserts."""

from __future__ import annotations

import datetime as dt
import threading

import attrs
import pytest
import trio
import trio.testing

import actorq
from actorq import JobState
from tests.support import run


def test_priority_order_among_ready_jobs(journal_path):
    started = []

    async def handler(job):
        started.append(job.payload)

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler)
            await q.pause()
            for payload, prio in [("low", "low"), ("normal1", "normal"), ("crit", "critical"),
                                  ("normal2", 2), ("high", "high"), ("minus", -5), ("ten", 10)]:
                await q.enqueue(payload, priority=prio)
            await q.resume()
            await q.join()

    run(main)
    assert started == ["minus", "crit", "high", "normal1", "normal2", "low", "ten"]


def test_within_a_priority_the_job_ready_first_starts_first(journal_path):
    started = []

    async def handler(job):
        started.append((trio.current_time(), job.payload))
        await trio.sleep(10)

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler)
            await q.enqueue("blocker")  # occupies the only slot from t=0 to t=10
            await q.enqueue("late-delayed", delay=5)  # ready at 5
            await q.enqueue("early-delayed", delay=2)  # ready at 2
            await trio.sleep(3)
            await q.enqueue("enqueued-at-3")  # ready at 3
            await q.enqueue("high-at-3", priority="high")
            await q.join()

    run(main)
    assert started == [(0, "blocker"), (10, "high-at-3"), (20, "early-delayed"),
                       (30, "enqueued-at-3"), (40, "late-delayed")]


def test_concurrency_bounds_running_handlers(journal_path):
    running = 0
    peak = 0
    finished = []

    async def handler(job):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(10)
        running -= 1
        finished.append(trio.current_time())

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler, concurrency=2)
            await q.enqueue_batch(range(5))
            await q.join()

    run(main)
    assert peak == 2
    assert finished == [10, 10, 20, 20, 30]


def test_delay_and_run_at(journal_path):
    started = {}

    async def handler(job):
        started[job.payload] = trio.current_time()

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler, concurrency=5)
            a = await q.enqueue("delay", delay=30)
            info = await q.status(a)
            assert info.state is JobState.DELAYED
            assert info.run_at == info.created_at + dt.timedelta(seconds=30)
            now = dt.datetime.now(dt.timezone.utc)
            # run_at is wall-clock; under MockClock wall time follows virtual time, so anchor it
            # to the job's own created_at.
            await q.enqueue("run_at", run_at=info.created_at + dt.timedelta(seconds=12))
            await q.enqueue("past", run_at=now - dt.timedelta(days=1))
            await q.join()

    run(main)
    assert started["past"] == 0
    assert started["run_at"] == pytest.approx(12, abs=1e-6)
    assert started["delay"] == 30


def test_status_times_and_fields(journal_path):
    async def handler(job):
        await trio.sleep(4)
        return {"ok": [1, 2]}

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler)
            job_id = await q.enqueue({"n": (1, 2)}, priority="high", delay=6)
            assert await q.wait(job_id) == {"ok": [1, 2]}
            info = await q.status(job_id)
            assert info.id == job_id and info.queue == "q"
            assert info.state is JobState.COMPLETED
            assert info.payload == {"n": [1, 2]}  # tuples are stored as lists
            assert info.priority == 1
            assert info.attempts == 1
            assert info.error is None and info.superseded_by is None
            assert info.created_at.tzinfo is not None
            assert info.started_at - info.created_at == dt.timedelta(seconds=6)
            assert info.finished_at - info.started_at == dt.timedelta(seconds=4)

    run(main)


def test_list_and_stats(journal_path):
    async def handler(job):
        if job.payload == "bad":
            raise ValueError("nope")

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler)
            assert await q.stats() == {s.value: 0 for s in JobState}
            ids = [await q.enqueue(p) for p in ["a", "bad", "c"]]
            await q.join()
            later = await q.enqueue("later", delay=100)
            stats = await q.stats()
            assert stats == {"pending": 0, "delayed": 1, "running": 0, "completed": 2,
                             "failed": 1, "cancelled": 0}
            assert [j.id for j in await q.list()] == ids + [later]
            assert [j.id for j in await q.list(limit=2)] == ids[:2]
            assert [j.id for j in await q.list("completed")] == [ids[0], ids[2]]
            assert [j.id for j in await q.list(JobState.FAILED)] == [ids[1]]
            assert [j.payload for j in await q.list(state="delayed")] == ["later"]
            with pytest.raises(ValueError, match=r"^state must be a JobState"):
                await q.list("finished")
            with pytest.raises(ValueError, match=r"^limit must be >= 0 \(got -1\)$"):
                await q.list(limit=-1)

    run(main)


def test_pause_resume_and_join(journal_path):
    started = []

    async def handler(job):
        started.append((job.payload, trio.current_time()))
        await trio.sleep(1)

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler)
            await q.enqueue("first")
            await trio.sleep(0.5)
            await q.pause()
            await q.enqueue("second")
            await trio.sleep(10)
            assert (await q.stats())["pending"] == 1  # paused: the running job finished only
            assert started == [("first", 0)]
            await q.resume()
            await q.join()
            assert trio.current_time() == 11.5

    run(main)
    assert started == [("first", 0), ("second", 10.5)]


def test_cancel_waiting_running_and_finished_jobs(journal_path):
    cancelled_hooks = []

    async def handler(job):
        await trio.sleep(100)
        return "finished"

    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            hooks = actorq.Hooks(on_cancel=lambda job: cancelled_hooks.append(job.payload))
            q = await actorq.spawn_queue("q", handler, hooks=hooks)
            running = await q.enqueue("running")
            waiting = await q.enqueue("waiting")
            delayed = await q.enqueue("delayed", delay=50)
            await trio.sleep(1)
            assert (await q.status(running)).state is JobState.RUNNING
            assert await q.cancel(waiting) is True
            assert await rt.cancel(delayed) is True
            assert await q.cancel(running) is True
            assert trio.current_time() == 1  # a running job is cancelled at once
            for job_id in (running, waiting, delayed):
                info = await q.status(job_id)
                assert info.state is JobState.CANCELLED
                assert info.finished_at is not None
                with pytest.raises(actorq.JobCancelled):
                    await q.wait(job_id)
            assert await q.cancel(running) is False
            with pytest.raises(actorq.UnknownJob):
                await q.cancel("no-such-job")
            await trio.sleep(0)
            done = await q.enqueue("done")
            await trio.sleep(0)
            q2 = await actorq.spawn_queue("other", handler)
            assert await q2.cancel(done) is True  # a handle finds jobs of any queue

    run(main)
    assert sorted(cancelled_hooks) == ["delayed", "done", "running", "waiting"]


def test_cancel_of_a_job_that_completes_first_returns_false(journal_path):
    async def handler(job):
        try:
            await trio.sleep(1)
        except trio.Cancelled:  # pragma: no cover - not reached
            raise
        return 1

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler)
            job_id = await q.enqueue(None)
            assert await q.wait(job_id) == 1
            assert await q.cancel(job_id) is False
            assert (await q.status(job_id)).state is JobState.COMPLETED

    run(main)


def test_idempotent_job_id(journal_path):
    runs = []

    async def handler(job):
        runs.append(job.payload)

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler)
            other = await actorq.spawn_queue("other", handler)
            assert await q.enqueue("first", job_id="order-1") == "order-1"
            assert await q.enqueue("second", job_id="order-1") == "order-1"
            await q.join()
            assert await q.enqueue("third", job_id="order-1") == "order-1"  # finished, still held
            assert await other.enqueue("fourth", job_id="order-1") == "order-1"
            await other.join()
            assert (await q.status("order-1")).payload == "first"
            assert (await q.stats())["completed"] == 1
            assert (await other.stats())["completed"] == 0

    run(main)
    assert runs == ["first"]


def test_enqueue_batch_is_one_transaction(journal_path):
    async def handler(job):
        return job.payload

    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            q = await actorq.spawn_queue("q", handler)
            await q.pause()
            before = rt.writer.statistics()
            ids = await q.enqueue_batch([1, 2, 3, 4], priority="high", delay=5)
            after = rt.writer.statistics()
            assert after.commits == before.commits + 1
            assert after.transitions == before.transitions + 4
            assert len(set(ids)) == 4
            infos = [await q.status(i) for i in ids]
            assert [i.payload for i in infos] == [1, 2, 3, 4]
            assert all(i.priority == 1 and i.state is JobState.DELAYED for i in infos)
            assert await q.enqueue_batch([]) == []
            with pytest.raises(TypeError, match="job_id"):
                await q.enqueue_batch([1], job_id="x")
            with pytest.raises(actorq.PayloadError, match=r"payload\['x'\]"):
                await q.enqueue_batch([1, {"x": {1, 2}}, 3])
            assert len(await q.list()) == 4  # nothing of the bad batch was recorded
            await q.resume()
            assert [await q.wait(i) for i in ids] == [1, 2, 3, 4]

    run(main)


def test_enqueue_batch_jobs_are_built_like_single_enqueues(journal_path):
    """enqueue_batch resolves its options once, for the first job, and builds the others like
    it: each job's record is the one ``Queue._new_job`` makes for it (id, payload, seq aside)."""
    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            q = await actorq.spawn_queue("q", lambda job: None)
            await q.pause()
            options = [{}, {"priority": "low", "max_attempts": 3, "timeout": 2.5},
                       {"delay": 5, "priority": -7},
                       {"run_at": dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)}]
            for opts in options:
                now = trio.current_time()  # enqueue_batch reads the clock once: the same now
                ids = await q.enqueue_batch([{"n": n} for n in range(5)], **opts)
                records = [rt.journal.get(i) for i in ids]
                assert [r.payload for r in records] == [{"n": n} for n in range(5)]
                expected, core, _given = q._new_job(
                    {"n": 0}, job_id=ids[0], now=now, wall=records[0].created_at,
                    **{"priority": "normal", "delay": None, "run_at": None,
                       "max_attempts": None, "timeout": None, "debounce_key": None, **opts})
                for r in records:
                    assert attrs.evolve(r, id=ids[0], payload={"n": 0}, seq=0, log=()) == expected
                    job = q._actor.core.jobs[r.id]
                    assert (job.priority, job.ready_at, job.max_attempts, job.timeout,
                            job.due, job.key) == (core.priority, core.ready_at,
                                                  core.max_attempts, core.timeout, core.due,
                                                  core.key)

    run(main)


@attrs.frozen
class Email:
    to: str
    subject: str
    tags: tuple[str, ...] = ()


def test_attrs_payloads_with_payload_type(journal_path):
    received = []

    async def handler(job):
        received.append(job.payload)
        return job.payload.to

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("mail", handler, payload_type=Email)
            a = await q.enqueue(Email("ada@example.com", "hi", ("x",)))
            b = await q.enqueue({"to": "bob@example.com", "subject": "yo"})
            assert (await q.status(a)).payload == {"to": "ada@example.com", "subject": "hi",
                                                    "tags": ["x"]}
            assert await q.wait(a) == "ada@example.com"
            assert await q.wait(b) == "bob@example.com"
            with pytest.raises(actorq.PayloadError, match="does not structure as Email"):
                await q.enqueue({"subject": "no recipient"})
            with pytest.raises(TypeError, match=r"^payload_type must be an attrs class"):
                await actorq.spawn_queue("bad", handler, payload_type=dict)

    run(main)
    assert received == [Email("ada@example.com", "hi", ("x",)),
                        Email("bob@example.com", "yo")]


def test_sync_handlers_run_in_worker_threads(journal_path):
    threads = []

    def handler(job):
        threads.append(threading.current_thread())
        return job.payload + 1

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler, concurrency=3)
            ids = await q.enqueue_batch(range(6))
            assert [await q.wait(i) for i in ids] == [1, 2, 3, 4, 5, 6]

    run(main)
    assert threads and all(t is not threading.main_thread() for t in threads)


def test_hooks_run_after_their_transition_is_durable(journal_path):
    seen = []

    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as rt:

            async def on_start(job):
                seen.append(("start", job.payload, (await rt.status(job.id)).state))

            def on_success(job, result):
                seen.append(("success", job.payload, result,
                             rt.journal.get(job.id).state))

            def on_error(job, exc):
                # the failed attempt is journaled (a retry may already have started)
                seen.append(("error", job.payload, type(exc).__name__, str(exc),
                             rt.journal.get(job.id).error))

            async def on_failure(job, exc):
                seen.append(("failure", job.payload, str(exc), rt.journal.get(job.id).state))

            async def handler(job):
                if job.payload == "bad":
                    raise RuntimeError(f"attempt {job.attempt}")
                return job.payload.upper()

            hooks = actorq.Hooks(on_start=on_start, on_success=on_success, on_error=on_error,
                                 on_failure=on_failure)
            q = await actorq.spawn_queue("q", handler, hooks=hooks,
                                         retry=actorq.Retry(2, backoff=0))
            await q.wait(await q.enqueue("ok"))
            with pytest.raises(actorq.JobFailed) as info:
                await q.wait(await q.enqueue("bad"))
            assert info.value.error == "RuntimeError: attempt 2"
            await trio.sleep(1)  # let the failure hooks finish

    run(main)
    r, f = JobState.RUNNING, JobState.FAILED
    assert seen == [
        ("start", "ok", r), ("success", "ok", "OK", JobState.COMPLETED),
        ("start", "bad", r), ("error", "bad", "RuntimeError", "attempt 1",
                              "RuntimeError: attempt 1"),
        ("start", "bad", r), ("error", "bad", "RuntimeError", "attempt 2",
                              "RuntimeError: attempt 2"),
        ("failure", "bad", "attempt 2", f),
    ]


def test_wait_resolves_in_the_instant_the_job_finishes(journal_path):
    async def handler(job):
        await trio.sleep(7)
        return "x"

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler)
            job_id = await q.enqueue(None)
            results = []

            async def waiter():
                results.append((await q.wait(job_id), trio.current_time()))

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(waiter)
            assert results == [("x", 7)] * 3

    run(main)


def test_generated_ids_are_unique_and_sort_in_creation_order(journal_path):
    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", lambda job: None)
            await q.pause()
            ids = [await q.enqueue(i) for i in range(50)]
            ids += await q.enqueue_batch(range(50))
            assert len(set(ids)) == 100
            assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
            assert ids == sorted(ids)

    run(main)


@pytest.mark.parametrize("durability", ["os", "fsync"])
def test_an_outcome_sent_without_waiting_is_journaled_before_the_runtime_stops(
        journal_path, durability):
    # With no hook to run, a worker hands its job's outcome to the queue actor and moves on
    # without waiting for it to be durable; a stop right after must still journal it.
    returned = trio.Event()
    ids = []

    async def handler(job):
        returned.set()
        return job.payload * 2

    async def main():
        async with actorq.open_runtime(journal_path, durability=durability):
            q = await actorq.spawn_queue("q", handler)
            ids.append(await q.enqueue(21))
            await returned.wait()
        async with actorq.open_runtime(journal_path, durability=durability) as rt:
            info = await rt.status(ids[0])
            assert info.state is JobState.COMPLETED and info.attempts == 1
            assert info.result == 42

    run(main)


def test_a_reply_wakes_its_waiter_once_and_survives_a_cancelled_wait():
    from actorq._actor import Reply

    async def main():
        r = Reply()
        with trio.move_on_after(1) as scope:
            await r.get()
        assert scope.cancelled_caught and not r.done
        r.set(1)
        r.set(2)  # a reply is answered once
        assert r.done and await r.get() == 1
        r2 = Reply()
        got = []

        async def waiter():
            try:
                await r2.get()
            except KeyError as exc:
                got.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            r2.fail(KeyError("x"))
            r2.set(3)
        assert len(got) == 1 and r2.value is None

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_worker_runs_on_after_a_timeout_and_a_cancel_with_hooks_intact(journal_path):
    # concurrency=1: one worker, whose cancel scope a timeout and a cancel use up in turn
    events = []
    held = {}

    async def handler(job):
        if job.payload == "cancel-me":
            # the cancel lands after the handler returned (no checkpoint in between): too late
            # to stop it; the job completes and its on_success hook is not cancelled
            held["queue"]._actor._scopes[job.id].cancel()
            return "done anyway"
        if job.payload in ("slow", "cancelled"):
            await trio.sleep(10)
        return job.payload

    async def on_success(job, result):
        await trio.sleep(1)
        events.append(("ok", job.payload, result))

    async def on_error(job, exc):
        await trio.sleep(1)
        events.append(("error", job.payload, type(exc).__name__))

    async def on_cancel(job):
        await trio.sleep(1)
        events.append(("cancel", job.payload))

    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            queue = held["queue"] = await actorq.spawn_queue(
                "q", handler, timeout=5,
                hooks=actorq.Hooks(on_success=on_success, on_error=on_error,
                                   on_cancel=on_cancel))
            slow = await queue.enqueue("slow")
            a = await queue.enqueue("a")
            late = await queue.enqueue("cancel-me")
            b = await queue.enqueue("b")
            with pytest.raises(actorq.JobFailed):
                await queue.wait(slow)
            assert await queue.wait(a) == "a"
            assert await queue.wait(late) == "done anyway"
            assert await queue.wait(b) == "b"
            cancelled = await queue.enqueue("cancelled")
            await trio.sleep(1)
            assert await queue.cancel(cancelled) is True
            c = await queue.enqueue("c")
            assert await queue.wait(c) == "c"
            await queue.join()
            await trio.sleep(2)
            assert (await queue.status(slow)).error.startswith("JobTimeout: attempt 1 timed out")
            assert rt.queues["q"].crashes.restarts == {}  # no worker crashed on the way

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert events == [("error", "slow", "JobTimeout"), ("ok", "a", "a"),
                      ("ok", "cancel-me", "done anyway"), ("ok", "b", "b"),
                      ("cancel", "cancelled"), ("ok", "c", "c")]


def test_a_cancel_too_late_to_stop_a_handler_without_timeout_lets_its_hook_run(journal_path):
    """No timeout: the cancel reaches the worker's scope while the handler waits shielded, and
    the handler returns without a checkpoint. The job completes, the cancel answers False, and
    on_success runs whole (outside the used-up scope), as with a timeout (test above)."""
    events = []
    held = {}

    async def handler(job):
        async def cancel():
            held["answer"] = await held["queue"].cancel(job.id)

        held["cancel"].start_soon(cancel)
        with trio.CancelScope(shield=True):
            await trio.sleep(1)  # the actor handles the cancel meanwhile
        assert job.id in held["queue"]._actor._cancel_requested
        return "done anyway"

    async def on_success(job, result):
        await trio.sleep(1)
        events.append(("ok", job.payload, result))

    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            queue = held["queue"] = await actorq.spawn_queue(
                "q", handler, hooks=actorq.Hooks(on_success=on_success))
            async with trio.open_nursery() as nursery:
                held["cancel"] = nursery
                job = await queue.enqueue("late")
                assert await queue.wait(job) == "done anyway"
            assert held["answer"] is False
            await queue.join()
            await trio.sleep(2)
            assert (await queue.status(job)).state is JobState.COMPLETED
            assert rt.queues["q"].crashes.restarts == {}

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert events == [("ok", "late", "done anyway")]


def test_a_start_the_journal_refuses_is_forgotten_and_the_next_job_starts(journal_path,
                                                                           monkeypatch):
    """A job can end in the journal between the round that picked it to start and that round's
    commit (here: a cancel journaled just before the commit). The journal refuses its Started
    event: the job must not run, the queue must forget it and start the next one."""
    from actorq._clock import wall_now
    from actorq._model import Cancelled, Started
    from actorq._writer import Writer

    ran = []
    real_commit = Writer.commit

    async def handler(job):
        ran.append(job.payload)

    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as runtime:
            q = await actorq.spawn_queue("q", handler, concurrency=1)
            await q.pause()
            first = await q.enqueue("first")
            await q.enqueue("second")

            async def commit(self, events, *args, **kwargs):
                if any(type(ev) is Started and ev.id == first for ev in events):
                    monkeypatch.setattr(Writer, "commit", real_commit)  # once
                    runtime.journal.commit_growing([Cancelled(first, wall_now())])
                return await real_commit(self, events, *args, **kwargs)

            monkeypatch.setattr(Writer, "commit", commit)
            await q.resume()
            with trio.fail_after(60):  # virtual time: a queue that lost count never idles
                await q.join()
            assert (await runtime.status(first)).state is JobState.CANCELLED
            stats = await q.stats()
            assert stats["running"] == 0 and stats["completed"] == 1, stats

    run(main)
    assert ran == ["second"]
