"""Debounce through the runtime: trailing and leading bursts, max_wait, keys, restarts."""

from __future__ import annotations

import pytest
import trio

import actorq
from actorq import JobState
from tests.support import run


class Recorder:
    def __init__(self):
        self.runs = []
        self.cancelled = []

    async def handler(self, job):
        self.runs.append((trio.current_time(), job.payload))
        if job.payload == "boom":
            raise ValueError("boom")
        return job.payload

    def hooks(self):
        return actorq.Hooks(on_cancel=lambda job: self.cancelled.append(job.payload))


def test_trailing_a_burst_runs_its_last_job_wait_seconds_after_the_last_enqueue(journal_path):
    rec = Recorder()

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", rec.handler, debounce=actorq.Debounce(5),
                                         hooks=rec.hooks())
            a = await q.enqueue("a")
            await trio.sleep(1)
            b = await q.enqueue("b")
            await trio.sleep(2)
            c = await q.enqueue("c")
            assert (await q.status(c)).state is JobState.DELAYED
            assert await q.wait(a) == "c"  # follows A -> B -> C
            assert trio.current_time() == 8
            info_a, info_b = await q.status(a), await q.status(b)
            assert info_a.state is info_b.state is JobState.CANCELLED
            assert info_a.superseded_by == b and info_b.superseded_by == c
            assert (await q.stats())["cancelled"] == 2
            await trio.sleep(0)

    run(main)
    assert rec.runs == [(8, "c")]
    assert sorted(rec.cancelled) == ["a", "b"]


def test_wait_on_a_superseded_job_raises_what_the_survivor_raises(journal_path):
    rec = Recorder()

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", rec.handler, debounce=actorq.Debounce(2))
            a = await q.enqueue("fine")
            await q.enqueue("boom")
            with pytest.raises(actorq.JobFailed, match="ValueError: boom"):
                await q.wait(a)

    run(main)


def test_max_wait_caps_a_long_burst(journal_path):
    rec = Recorder()

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", rec.handler,
                                         debounce=actorq.Debounce(5, max_wait=7))
            for i in range(6):  # an enqueue every 2 s would postpone forever without max_wait
                await q.enqueue(i)
                await trio.sleep(2)
            await q.join()

    run(main)
    # burst one: enqueues at 0, 2, 4, 6 -> due at min(6 + 5, 0 + 7) = 7, carrying the last one
    # burst two: enqueues at 8, 10 -> due at min(10 + 5, 8 + 7) = 15
    assert rec.runs == [(7, 3), (15, 5)]


def test_keys_debounce_independently(journal_path):
    rec = Recorder()

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue(
                "index", rec.handler, concurrency=5,
                debounce=actorq.Debounce(3, key=lambda payload: payload["doc"]))
            await q.enqueue({"doc": "a", "v": 1})
            await q.enqueue({"doc": "b", "v": 1})
            await trio.sleep(1)
            await q.enqueue({"doc": "a", "v": 2})
            await q.enqueue({"doc": "x", "v": 9}, debounce_key="b")  # explicit key wins
            await q.join()

    run(main)
    assert sorted(rec.runs, key=lambda r: r[1]["doc"]) == [
        (4, {"doc": "a", "v": 2}), (4, {"doc": "x", "v": 9})]


def test_leading_runs_the_first_job_at_once_and_a_trailing_burst_behind_it(journal_path):
    rec = Recorder()

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", rec.handler,
                                         debounce=actorq.Debounce(5, mode="leading"))
            await q.enqueue("lead")  # t=0: runs at once
            await trio.sleep(1)
            b = await q.enqueue("b")  # within 5 s of the leading job: a trailing burst
            await trio.sleep(1)
            await q.enqueue("c")  # supersedes b; due at 2 + 5
            await trio.sleep(8)
            await q.enqueue("next-lead")  # t=10: the window and the burst are over
            await q.join()
            assert (await q.status(b)).superseded_by is not None

    run(main)
    assert rec.runs == [(0, "lead"), (7, "c"), (10, "next-lead")]


def test_tie_an_enqueue_exactly_at_the_deadline_begins_a_new_burst(journal_path):
    rec = Recorder()

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", rec.handler, debounce=actorq.Debounce(5))
            a = await q.enqueue("a")
            await trio.sleep(5)  # exactly a's deadline
            b = await q.enqueue("b")
            await q.join()
            assert (await q.status(a)).state is JobState.COMPLETED
            assert (await q.status(b)).superseded_by is None

    run(main)
    assert rec.runs == [(5, "a"), (10, "b")]


def test_cancelling_the_survivor_ends_its_burst(journal_path):
    rec = Recorder()

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", rec.handler, debounce=actorq.Debounce(5))
            a = await q.enqueue("a")
            await trio.sleep(1)
            assert await q.cancel(a) is True
            await trio.sleep(1)
            b = await q.enqueue("b")
            await q.join()
            assert (await q.status(a)).superseded_by is None
            assert (await q.status(b)).state is JobState.COMPLETED

    run(main)
    assert rec.runs == [(7, "b")]


def test_a_restart_keeps_the_burst_and_its_deadline(journal_path):
    rec = Recorder()

    async def main():
        debounce = actorq.Debounce(5, max_wait=9)
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", rec.handler, debounce=debounce)
            await q.enqueue("a")  # t=0: the burst's first enqueue
            await trio.sleep(1)
            b = await q.enqueue("b")
            await trio.sleep(1)
        await trio.sleep(2)  # down from t=2 to t=4
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", rec.handler, debounce=debounce)
            assert (await q.status(b)).state is JobState.DELAYED
            await trio.sleep(1)
            c = await q.enqueue("c")  # t=5: supersedes b; max_wait counts from t=0
            assert (await q.status(b)).superseded_by == c
            assert await q.wait(c) == "c"
            assert trio.current_time() == pytest.approx(9, abs=1e-6)

    run(main)
    assert [p for _t, p in rec.runs] == ["c"]


def test_a_restart_keeps_the_window_of_a_leading_job_that_already_finished(journal_path):
    rec = Recorder()

    async def main():
        debounce = actorq.Debounce(5, mode="leading")
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", rec.handler, debounce=debounce)
            await q.wait(await q.enqueue("lead"))  # t=0: runs and finishes at once
            await trio.sleep(1)
        await trio.sleep(1)  # down from t=1 to t=2
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", rec.handler, debounce=debounce)
            b = await q.enqueue("b")  # t=2: within 5 s of the lead: a trailing burst
            assert (await q.status(b)).state is JobState.DELAYED
            await q.join()
            await trio.sleep(4)
            await q.enqueue("next-lead")  # t=11: the window is over
            await q.join()

    run(main)
    assert rec.runs == [(0, "lead"), (7, "b"), (11, "next-lead")]


def test_a_deadline_that_passed_while_down_starts_at_once(journal_path):
    rec = Recorder()

    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", rec.handler, debounce=actorq.Debounce(5))
            a = await q.enqueue("a")
        await trio.sleep(60)
        async with actorq.open_runtime(journal_path, durability="os"):
            t0 = trio.current_time()
            q = await actorq.spawn_queue("q", rec.handler, debounce=actorq.Debounce(5))
            assert await q.wait(a) == "a"
            assert trio.current_time() == t0

    run(main)


def test_debounce_argument_rules(journal_path):
    async def main():
        async with actorq.open_runtime(journal_path, durability="os"):
            q = await actorq.spawn_queue("q", Recorder().handler, debounce=actorq.Debounce(1))
            plain = await actorq.spawn_queue("plain", Recorder().handler)
            with pytest.raises(ValueError, match=r"^delay and run_at cannot be given on a "
                                                 r"debounced queue"):
                await q.enqueue(1, delay=3)
            with pytest.raises(ValueError, match=r"^debounce_key needs a queue spawned with"):
                await plain.enqueue(1, debounce_key="k")
            with pytest.raises(TypeError, match=r"^debounce_key must be a str \(got 5\)$"):
                await q.enqueue(1, debounce_key=5)
            assert await q.list() == [] and await plain.list() == []

    run(main)


@pytest.mark.parametrize(
    ("make", "exc", "message"),
    [
        (lambda: actorq.Debounce(-1), ValueError, r"^wait must be >= 0 \(got -1\)$"),
        (lambda: actorq.Debounce(5, max_wait=2), ValueError,
         r"^max_wait must be >= wait \(5\) \(got 2\)$"),
        (lambda: actorq.Debounce(5, mode="both"), ValueError,
         r"^mode must be 'trailing' or 'leading' \(got 'both'\)$"),
        (lambda: actorq.Debounce(5, key="doc"), TypeError, r"^key must be a callable or None"),
    ],
)
def test_debounce_validation(make, exc, message):
    with pytest.raises(exc, match=message):
        make()
