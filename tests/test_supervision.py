"""Supervision: restarts, one_for_all, intensity and escalation, failed commits."""

from __future__ import annotations

import logging

import pytest
import trio

import actorq
import actorq.testing
from actorq import JobState
from tests.support import run


def _supervisor_error(group: BaseException) -> actorq.SupervisorError:
    err = group
    while isinstance(err, BaseExceptionGroup):
        (err,) = err.exceptions
    assert isinstance(err, actorq.SupervisorError)
    return err


def test_a_crashed_worker_is_restarted_and_its_job_counts_a_failed_attempt(journal_path, caplog):
    errors = []

    async def handler(job):
        return job.attempt

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue(
                "q", handler, retry=actorq.Retry(3, backoff=2),
                hooks=actorq.Hooks(on_error=lambda job, exc: errors.append(exc)))
            assert q.statistics().total_restarts == 0
            actorq.testing.crash_next_job(q)
            job_id = await q.enqueue("x")
            assert await q.wait(job_id) == 2
            assert trio.current_time() == 2  # the crashed attempt's backoff applied
            info = await q.status(job_id)
            assert info.attempts == 2
            assert info.error == ("JobInterrupted: the worker running attempt 1 crashed: "
                                  "RuntimeError: injected worker crash (actorq.testing)")
            stats = q.statistics()
            assert stats.restarts == {"worker 0": 1}
            assert stats.last_crash.actor == "worker 0"
            assert stats.last_crash.error == "RuntimeError: injected worker crash (actorq.testing)"
            assert stats.last_crash.at.tzinfo is not None

    with caplog.at_level(logging.WARNING, logger="actorq"):
        run(main)
    assert [type(e) for e in errors] == [actorq.JobInterrupted]
    assert any("worker 0 crashed" in r.getMessage() and "restarting" in r.getMessage()
               for r in caplog.records)


def test_one_for_all_restarts_the_siblings_and_requeues_their_jobs_uncounted(journal_path):
    starts = []

    async def handler(job):
        starts.append((job.payload, job.attempt, trio.current_time()))
        await trio.sleep(10)
        return job.payload

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue(
                "q", handler, concurrency=3, retry=actorq.Retry(3, backoff=0),
                restart=actorq.Restart(strategy="one_for_all"))
            a = await q.enqueue("a")
            b = await q.enqueue("b")
            await trio.sleep(1)
            actorq.testing.crash_next_job(q)
            c = await q.enqueue("c")
            assert [await q.wait(i) for i in (a, b, c)] == ["a", "b", "c"]
            assert [(await q.status(i)).attempts for i in (a, b, c)] == [1, 1, 2]
            assert (await q.status(c)).error.startswith("JobInterrupted")
            assert (await q.status(a)).error is None
            assert q.statistics().restarts == {"workers (one_for_all)": 1}

    run(main)
    # a and b were stopped at t=1 by c's worker crashing, and started again at once
    assert sorted(starts) == [("a", 1, 0), ("a", 1, 1), ("b", 1, 0), ("b", 1, 1), ("c", 2, 1)]


def test_one_for_one_leaves_the_siblings_running(journal_path):
    starts = []

    async def handler(job):
        starts.append(job.payload)
        await trio.sleep(10)

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler, concurrency=2,
                                         retry=actorq.Retry(2, backoff=0))
            a = await q.enqueue("a")
            await trio.sleep(1)
            actorq.testing.crash_next_job(q)
            b = await q.enqueue("b")
            await q.join()
            assert trio.current_time() == 11
            assert [(await q.status(i)).attempts for i in (a, b)] == [1, 2]

    run(main)
    assert starts == ["a", "b"]


def test_more_crashes_than_the_intensity_allows_escalate(journal_path, caplog):
    async def handler(job):
        return None

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler, retry=actorq.Retry(10, backoff=1),
                                         restart=actorq.Restart(max_restarts=3, within=5))
            actorq.testing.crash_next_job(q, 4)
            await q.enqueue(None)
            await trio.sleep(1000)
            pytest.fail("the runtime should have stopped")  # pragma: no cover

    with caplog.at_level(logging.WARNING, logger="actorq"):
        with pytest.raises(BaseExceptionGroup) as info:
            run(main)
    err = _supervisor_error(info.value)
    assert str(err) == ("queue 'q': 4 crashes within 5s (max_restarts=3); last: worker 0 crashed "
                        "with RuntimeError: injected worker crash (actorq.testing)")
    assert isinstance(err.__cause__, RuntimeError)
    assert any("escalating" in r.getMessage() for r in caplog.records)


def test_crashes_spread_wider_than_the_window_do_not_escalate(journal_path):
    async def handler(job):
        return "ok"

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler, retry=actorq.Retry(10, backoff=6),
                                         restart=actorq.Restart(max_restarts=1, within=5))
            actorq.testing.crash_next_job(q, 5)
            assert await q.wait(await q.enqueue(None)) == "ok"
            assert trio.current_time() == 30
            assert q.statistics().restarts == {"worker 0": 5}

    run(main)


@pytest.mark.parametrize("durability", ["os", "fsync"])
def test_a_failed_commit_never_acknowledges(journal_path, durability):
    async def handler(job):
        return job.payload

    async def main():
        async with actorq.open_runtime(journal_path, durability=durability) as rt:
            q = await actorq.spawn_queue("q", handler)
            await q.pause()
            kept = await q.enqueue("kept")
            actorq.testing.fail_next_commits(rt, 1)
            outcomes = []

            async def enqueue(i):
                try:
                    outcomes.append(await q.enqueue(f"lost-{i}"))
                except actorq.JournalError as exc:
                    outcomes.append(exc)

            async with trio.open_nursery() as nursery:
                for i in range(5):
                    nursery.start_soon(enqueue, i)
            # every enqueue of the failed group got the error; none got an id
            failed = [o for o in outcomes if isinstance(o, actorq.JournalError)]
            assert failed and len(outcomes) == 5
            assert "injected journal commit failure" in str(failed[0])
            acked = [o for o in outcomes if isinstance(o, str)]
            # the queue actor crashed and was restarted; it works again
            await q.resume()
            assert q.statistics().restarts == {"queue actor": 1}
            after = await q.enqueue("after")
            assert await q.wait(after) == "after"
            assert await q.wait(kept) == "kept"
            payloads = sorted(j.payload for j in await q.list())
            assert payloads == sorted(["kept", "after"] + [
                (await q.status(i)).payload for i in acked])
        async with actorq.open_runtime(journal_path, durability=durability) as rt:
            assert len(await (await actorq.spawn_queue("q", handler)).list()) == 2 + len(acked)

    if durability == "fsync":
        trio.run(main)
    else:
        run(main)


def test_a_failed_completion_commit_runs_the_job_again(journal_path):
    runs = []

    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as rt:

            async def handler(job):
                runs.append(job.attempt)
                if len(runs) == 1:
                    actorq.testing.fail_next_commits(rt, 1)  # the completion will not commit
                return "done"

            q = await actorq.spawn_queue("q", handler)
            job_id = await q.enqueue(None)
            assert await q.wait(job_id) == "done"
            info = await q.status(job_id)
            assert info.state is JobState.COMPLETED and info.attempts == 1

    run(main)
    assert runs == [1, 1]  # the unacknowledged attempt was requeued uncounted and ran again


def test_a_startup_failure_propagates_from_spawn_queue(journal_path):
    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            actorq.testing.fail_next_commits(rt, 1)
            with pytest.raises(actorq.JournalError, match="injected"):
                await actorq.spawn_queue("q", lambda job: None)
            assert "q" not in rt.queues
            q = await actorq.spawn_queue("q", lambda job: 7)  # the name is free again
            assert await q.wait(await q.enqueue(None)) == 7

    run(main)


def test_fault_injection_arguments_are_checked(journal_path):
    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            await actorq.spawn_queue("q", lambda job: None)
            with pytest.raises(ValueError, match=r"^n must be an int >= 0 \(got -1\)$"):
                actorq.testing.fail_next_commits(rt, -1)
            with pytest.raises(TypeError, match=r"^queue must be an actorq Queue"):
                actorq.testing.crash_next_job(rt)

    run(main)


def test_a_restart_never_runs_a_job_twice_while_its_thread_still_runs(journal_path):
    import threading

    lock = threading.Lock()
    running = peak = 0
    calls = []
    release = threading.Event()

    def handler(job):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            calls.append(job.attempt)
        release.wait(5)
        with lock:
            running -= 1
        return "ok"

    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            # no virtual time passes while the threads work (else timeouts would jump ahead)
            trio.lowlevel.current_clock().autojump_threshold = float("inf")
            q = await actorq.spawn_queue("q", handler, retry=actorq.Retry(3))
            job_id = await q.enqueue("x")
            while not calls:
                await trio.to_thread.run_sync(release.wait, 0.01)
            actorq.testing.fail_next_commits(rt, 1)
            with pytest.raises(actorq.JournalError):
                await q.enqueue("y")  # the queue actor crashes and restarts; x is requeued
            await trio.to_thread.run_sync(release.wait, 0.3)
            assert calls == [1]  # not started again while its first thread still runs
            release.set()
            assert await q.wait(job_id) == "ok"

    run(main)
    assert peak == 1


def test_cancel_of_a_job_whose_worker_crashes_is_answered(journal_path):
    async def on_start(job):
        await trio.sleep(1)
        raise RuntimeError("hook bug")

    async def handler(job):
        await trio.sleep(10)

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", handler, retry=actorq.Retry(3, backoff=0),
                                         hooks=actorq.Hooks(on_start=on_start))
            job_id = await q.enqueue("x")
            await trio.sleep(0.5)
            with trio.fail_after(100):
                assert await q.cancel(job_id) is True
            info = await q.status(job_id)
            assert info.state is JobState.CANCELLED and info.attempts == 1

    run(main)


def test_an_enqueue_journaled_while_its_actor_crashes_is_acknowledged(journal_path):
    """fsync: a sibling crashes the queue while the actor awaits its group commit; the commit
    still happens, so its callers must be told it did (not that it failed)."""

    def on_cancel(job):
        raise RuntimeError("hook bug")  # crashes the queue right after a's cancel commits

    async def main():
        async with actorq.open_runtime(journal_path):  # fsync, real clock
            q = await actorq.spawn_queue("q", lambda job: job.payload,
                                         hooks=actorq.Hooks(on_cancel=on_cancel),
                                         restart=actorq.Restart(max_restarts=100))
            await q.pause()
            a = await q.enqueue("a")
            outcome = []

            async def enqueue_b():
                try:
                    outcome.append(await q.enqueue("b"))
                except Exception as exc:  # noqa: BLE001 - what the test looks at
                    outcome.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(q.cancel, a)
                await trio.sleep(0)
                nursery.start_soon(enqueue_b)
            (b,) = outcome
            assert isinstance(b, str), b
            await q.resume()
            with trio.fail_after(10):
                assert await q.wait(b) == "b"
            assert q.statistics().restarts.get("queue actor", 0) >= 1

    trio.run(main)


def test_one_for_all_never_loses_a_job_a_worker_took_as_its_sibling_crashed(journal_path):
    """Two jobs end in the same instant; the on_success hook of one crashes its worker while
    the other worker takes the next job from the dispatch channel. The restart must find that
    job held (and requeue it), not lose it: every job completes and join() returns."""
    started = []

    async def handler(job):
        started.append(job.payload)
        if job.payload in ("a", "boom"):
            await trio.sleep(1)
        return job.payload

    def on_success(job, result):
        if job.payload == "boom":
            raise RuntimeError("hook crash")

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue(
                "q", handler, concurrency=2, hooks=actorq.Hooks(on_success=on_success),
                restart=actorq.Restart(max_restarts=10, within=100, strategy="one_for_all"))
            await q.pause()
            ids = [await q.enqueue(p) for p in ("a", "boom", "c", "d")]
            await q.resume()
            with trio.fail_after(60):
                await q.join()
            assert [(await q.status(i)).state for i in ids] == [JobState.COMPLETED] * 4
            assert q.statistics().running == 0

    run(main)
    assert {"a", "boom", "c", "d"} <= set(started)


def test_a_failed_journal_read_between_rounds_fails_the_waiting_requests(journal_path,
                                                                          monkeypatch):
    """A queue reads its backlog's next chunk from the journal between rounds; where that read
    fails, the actor crashes and restarts, and the requests it had taken are answered with the
    error instead of waiting forever (the enqueue is not recorded; the next one is)."""
    from actorq._journal import Journal

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", lambda job: None)
            failing = [True]
            real = Journal.ready_entries

            def ready_entries(self, *args):
                if failing:
                    failing.clear()
                    raise OSError("injected read failure")
                return real(self, *args)

            monkeypatch.setattr(Journal, "ready_entries", ready_entries)
            q._actor.core.spill_all()  # the next round reads the index
            with trio.fail_after(10), pytest.raises(OSError, match="injected"):
                await q.enqueue("x")
            job_id = await q.enqueue("y")
            await q.join()
            assert (await q.status(job_id)).state is JobState.COMPLETED
            assert await q.list() == [await q.status(job_id)]

    run(main)


def test_a_failing_close_does_not_hide_the_escalation_leaving_open_runtime(journal_path,
                                                                           caplog):
    """Commits keep failing (a broken disk, injected), the queue escalates, and the final
    requeue at close fails as well: what leaves open_runtime is the SupervisorError, with the
    close's failure logged; the jobs left running are recorded interrupted at the next open."""
    from actorq._supervisor import find_supervisor_error

    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as rt:
            q = await actorq.spawn_queue("q", lambda job: None,
                                         restart=actorq.Restart(max_restarts=1, within=100))
            actorq.testing.fail_next_commits(rt, 100)
            for i in range(5):
                with pytest.raises(Exception):  # noqa: B017 - whatever the queue reports
                    await q.enqueue(i)
            await trio.sleep(5)

    with caplog.at_level(logging.WARNING, logger="actorq"), \
            pytest.raises(BaseException) as info:  # noqa: B017 - checked below
        run(main)
    assert find_supervisor_error(info.value) is not None
    assert "could not requeue the running jobs at close" in caplog.text


def test_a_worker_waiting_for_its_outcome_does_not_block_a_restart(journal_path):
    """A worker with hooks waits (shielded) for its outcome to be journaled. Where the queue
    actor crashes (a failed commit) with that outcome still in its inbox, the worker is answered
    (stale) instead of blocking the restart forever; the restarted actor requeues the job from
    the journal (its attempt uncounted), it runs again, and its hook runs once."""
    import threading

    entered, release = threading.Event(), threading.Event()
    runs, successes = [], []
    finish_first = trio.Event()
    calls = []

    def hold_then_fail():  # the next commit waits in the writer thread, then fails
        calls.append(1)
        if len(calls) == 1:
            entered.set()
            release.wait(10)
            raise OSError("injected journal commit failure (held)")

    async def handler(job):
        runs.append(job.attempt)
        if len(runs) == 1:
            await finish_first.wait()
        return "done"

    async def on_success(job, result):
        successes.append((job.id, job.attempt, result))

    async def main():
        async with actorq.open_runtime(journal_path, durability="fsync") as rt:
            q = await actorq.spawn_queue("q", handler, hooks=actorq.Hooks(on_success=on_success))
            job_id = await q.enqueue("x")
            while not runs:
                await trio.sleep(0.001)
            rt.journal.before_commit = hold_then_fail
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:

                    async def lost():
                        with pytest.raises(actorq.JournalError):
                            await q.enqueue("lost")

                    nursery.start_soon(lost)
                    await trio.to_thread.run_sync(entered.wait, 10)
                    finish_first.set()  # its outcome reaches the inbox during the commit
                    while not q._actor._inbox.msgs:
                        await trio.sleep(0.001)
                    release.set()
                assert await q.wait(job_id) == "done"
            info = await q.status(job_id)
            assert info.state is JobState.COMPLETED and info.attempts == 1
            assert q.statistics().restarts == {"queue actor": 1}

    trio.run(main)
    assert successes == [(successes[0][0], 1, "done")]
    assert runs == [1, 1]


def test_requests_to_a_queue_that_escalated_fail_with_the_supervisor_error(journal_path):
    """A request waiting when the queue's supervisor gives up, and one sent after, fail with a
    SupervisorError that names the queue and chains the escalation (not "runtime closed")."""
    got: list[BaseException] = []
    holder = {}

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = holder["q"] = await actorq.spawn_queue(
                "q", lambda job: None, retry=actorq.Retry(10, backoff=1),
                restart=actorq.Restart(max_restarts=3, within=5))

            async def joiner():
                try:
                    await q.join()
                except BaseException as exc:
                    got.append(exc)
                    raise

            async with trio.open_nursery() as nursery:
                nursery.start_soon(joiner)
                actorq.testing.crash_next_job(q, 4)
                await q.enqueue(None)
                await trio.sleep(1000)

    with pytest.raises(BaseExceptionGroup) as info:
        run(main)
    assert len(got) == 1 and isinstance(got[0], actorq.QueueStopped), got
    assert isinstance(got[0], actorq.SupervisorError)
    assert str(got[0]).startswith("queue 'q' has stopped: queue 'q': 4 crashes within 5s")
    escalation = got[0].__cause__
    assert isinstance(escalation, actorq.SupervisorError)
    assert str(escalation).startswith("queue 'q': 4 crashes within 5s")

    from actorq._supervisor import find_supervisor_error

    assert find_supervisor_error(info.value) is escalation  # what left open_runtime

    async def later():
        await holder["q"].enqueue(1)

    with pytest.raises(actorq.QueueStopped, match="queue 'q' has stopped: queue 'q': 4 "):
        trio.run(later)


def test_a_request_to_a_stopped_queue_is_not_an_escalation_of_the_requester():
    """A queue actor whose request to another, escalated queue fails (a dead letter handed
    over, a hook enqueueing elsewhere) has crashed, like with any error: its supervisor counts
    that crash under its own restart policy instead of taking the other queue's escalation
    for its own. The caller still gets a SupervisorError."""
    from actorq._supervisor import find_supervisor_error

    escalation = actorq.SupervisorError("queue 'dlq': 4 crashes within 5s")
    stopped = actorq.QueueStopped(f"queue 'dlq' has stopped: {escalation}")
    stopped.__cause__ = escalation
    assert isinstance(stopped, actorq.SupervisorError)
    assert find_supervisor_error(stopped) is None
    assert find_supervisor_error(ExceptionGroup("round", [ValueError(), stopped])) is None
    both = ExceptionGroup("nursery", [stopped, ExceptionGroup("inner", [escalation])])
    assert find_supervisor_error(both) is escalation
