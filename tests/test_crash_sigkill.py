"""Crash durability: a real child process runs actorq (``durability="fsync"``) and is SIGKILLed.

The child (``crash_child.py``) appends to a side file, fsync'ed per line, what it was told:
``ack <id>`` once ``enqueue`` returned, ``run <id> <attempt>`` when a handler starts, ``done <id>``
just before it returns. The parent kills it at a chosen point, reopens the journal, and checks:

(a) no acknowledged job is lost: every acked id (and every id a handler saw) is in the journal;
(b) no durably completed job runs again: the jobs the journal shows ``completed`` at reopen never
    run after it; every other job runs exactly once more and every job ends ``completed``; a job
    that was running at the kill comes back ``pending`` with an "interrupted" error, its attempt
    counted.

These are the tests allowed to use real time and real processes. Every wait is bounded.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import trio

import actorq
from actorq import JobState
from tests.crash_child import QUEUE, RETRY, result_of

CHILD = Path(__file__).with_name("crash_child.py")
KILL_POINT_TIMEOUT = 20.0  # seconds a child may take to reach its kill point
POLL = 0.002
# Once its kill point is reached, a child lives on for a random 0 to 10 ms, so that over many
# runs the kill lands in every phase: a commit in flight, replies going out, a handler starting.
KILL_JITTER = 0.010


# ---------------------------------------------------------------------------------------------
# The side file


@attrs.frozen
class Facts:
    """What one or more children wrote in the side file (complete lines only)."""

    lines: tuple[str, ...]

    def _ids(self, verb: str) -> list[str]:
        return [line.split()[1] for line in self.lines if line.split()[0] == verb]

    @property
    def acked(self) -> list[str]:
        return self._ids("ack")

    @property
    def done(self) -> list[str]:
        return self._ids("done")

    @property
    def runs(self) -> list[tuple[str, int]]:
        return [(w[1], int(w[2])) for w in map(str.split, self.lines) if w[0] == "run"]

    @property
    def ids(self) -> set[str]:
        return set(self.acked) | set(self.done) | {job_id for job_id, _ in self.runs}


class SideReader:
    """Reads the side file as it grows; a partly written last line is kept for later."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.lines: list[str] = []

    def poll(self) -> Facts:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return Facts(tuple(self.lines))
        self._offset += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        self.lines.extend(line.decode() for line in complete)
        return Facts(tuple(self.lines))


def run_child_until(tmp_path: Path, journal: Path, mode: str,
                    kill_when: Callable[[Facts], bool]) -> tuple[Facts, Facts]:
    """Run ``crash_child.py`` in ``mode`` and SIGKILL it once ``kill_when(facts of this child)``;
    what the side file holds once it is dead: of every child so far, and of this child."""
    side = tmp_path / "side.txt"
    reader = SideReader(side)
    before = len(reader.poll().lines)
    log_path = tmp_path / f"child-{mode}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(CHILD), str(journal), str(side), mode],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + KILL_POINT_TIMEOUT
        while True:
            facts = Facts(reader.poll().lines[before:])
            if kill_when(facts):
                break
            problem = None
            if proc.poll() is not None:
                problem = f"the child exited (status {proc.returncode})"
            elif "idle" in facts.lines:
                problem = "the child finished its work"
            elif time.monotonic() > deadline:
                problem = f"the child took over {KILL_POINT_TIMEOUT}s"
            if problem:
                pytest.fail(f"{problem} before reaching its kill point ({mode}); "
                            f"{len(facts.lines)} side lines; child output:\n"
                            f"{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(POLL)
        time.sleep(random.uniform(0, KILL_JITTER))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL, log_path.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    facts = reader.poll()  # with the lines the child wrote between the check and the kill
    return facts, Facts(facts.lines[before:])


# ---------------------------------------------------------------------------------------------
# Reopen, run to completion, check


@attrs.frozen
class Outcome:
    at_open: dict[str, actorq.JobInfo]     # every id of the side file, right after reopening
    lost: list[str]                        # ids of the side file the journal does not hold
    runs_after: list[tuple[str, int]]      # (id, attempt) of every handler call after reopening
    final: list[actorq.JobInfo]            # every job of the queue once it is idle
    stats: dict[str, int]
    after: dict[str, actorq.JobInfo]       # every id of the side file, at the end

    @property
    def completed_at_open(self) -> set[str]:
        return {i for i, info in self.at_open.items() if info.state is JobState.COMPLETED}

    @property
    def interrupted_at_open(self) -> set[str]:
        return {i for i, info in self.at_open.items()
                if info.error is not None and "interrupted" in info.error}


def reopen_and_drain(journal: Path, facts: Facts, durability: str = "os") -> Outcome:
    ids = sorted(facts.ids)

    async def main() -> Outcome:
        runs_after: list[tuple[str, int]] = []

        async def handler(job: actorq.Job) -> str:
            runs_after.append((job.id, job.attempt))
            await trio.sleep(0)
            return result_of(job.payload)

        with trio.fail_after(25):
            async with actorq.open_runtime(journal, durability=durability) as runtime:
                at_open, lost = {}, []
                for job_id in ids:  # before the queue is spawned: as the journal was reopened
                    try:
                        at_open[job_id] = await runtime.status(job_id)
                    except actorq.UnknownJob:
                        lost.append(job_id)
                queue = await runtime.spawn_queue(QUEUE, handler, concurrency=8, retry=RETRY)
                await queue.join()
                final = await queue.list(limit=1_000_000)
                stats = await queue.stats()
                after = {i: await runtime.status(i) for i in ids if i not in lost}
        return Outcome(at_open, lost, runs_after, final, stats, after)

    return trio.run(main)


def check_invariants(facts: Facts, out: Outcome) -> None:
    # (a) every acknowledged job, and every job a handler saw, survived the kill
    assert not [i for i in facts.acked if i in out.lost], "acknowledged jobs were lost"
    assert not out.lost, "jobs whose handler ran (so whose start was durable) were lost"

    ran_before = {job_id for job_id, _ in facts.runs}
    max_attempt: dict[str, int] = {}
    for job_id, attempt in facts.runs:
        max_attempt[job_id] = max(attempt, max_attempt.get(job_id, 0))
    completed = out.completed_at_open
    for job_id, info in out.at_open.items():
        assert info.id == job_id and info.queue == QUEUE
        if info.state is JobState.COMPLETED:
            # a completion is journaled after the handler returned, so after its "done" line
            assert job_id in facts.done, f"{job_id} completed without its handler returning"
            assert info.result == result_of(info.payload)
            continue
        # a kill leaves no job running: at open it is recorded as an interrupted attempt
        assert info.state is JobState.PENDING, (job_id, info)
        if job_id in ran_before:
            # its start was durable before the handler ran, and it did not complete durably
            assert info.error is not None and "interrupted" in info.error, (job_id, info)
            assert info.attempts >= max_attempt[job_id], (job_id, info)
        elif info.error is not None:  # started durably, killed before its handler wrote "run"
            assert "interrupted" in info.error, (job_id, info)

    # (b) a durably completed job never runs again; every other job runs exactly once more
    runs = Counter(job_id for job_id, _ in out.runs_after)
    again = sorted(completed & set(runs))
    assert not again, (f"{len(again)} durably completed jobs ran again after reopening, "
                       f"e.g. {again[:5]}")
    final_ids = {info.id for info in out.final}
    assert len(final_ids) == len(out.final)
    assert set(facts.acked) <= final_ids
    assert set(runs) <= final_ids
    for info in out.final:
        assert info.state is JobState.COMPLETED, info
        assert info.result == result_of(info.payload), info
        expected_runs = 0 if info.id in completed else 1
        assert runs[info.id] == expected_runs, (info, runs[info.id])
    for job_id, attempt in out.runs_after:
        if job_id in out.at_open:  # the interrupted attempt counted: the next one is one more
            assert attempt == out.at_open[job_id].attempts + 1, (job_id, attempt,
                                                                 out.at_open[job_id])
    # nothing was enqueued twice: one job per payload
    duplicates = [k for k, n in Counter(i.payload["k"] for i in out.final).items() if n > 1]
    assert not duplicates
    # a completed job's record did not change after reopening
    for job_id in completed:
        assert out.after[job_id] == out.at_open[job_id]
    assert all(info.state is JobState.COMPLETED for info in out.after.values())
    assert out.stats == {
        "pending": 0, "delayed": 0, "running": 0,
        "completed": len(out.final), "failed": 0, "cancelled": 0,
    }


# ---------------------------------------------------------------------------------------------
# Kill points


def crash_and_check(tmp_path: Path, steps: list[tuple[str, Callable[[Facts], bool]]]
                    ) -> tuple[Facts, Outcome, list[Facts]]:
    """Run and kill one child per step, in turn, on one journal; then reopen and check.
    The facts of every child together, the outcome, and the facts of each child."""
    journal = tmp_path / "journal"
    facts, children = Facts(()), []
    for mode, kill_when in steps:
        facts, child = run_child_until(tmp_path, journal, mode, kill_when)
        children.append(child)
    outcome = reopen_and_drain(journal, facts)
    check_invariants(facts, outcome)
    return facts, outcome, children


def acks_at_least(n: int) -> Callable[[Facts], bool]:
    return lambda facts: len(facts.acked) >= n


def after_first_ack(facts: Facts, out: Outcome, children: list[Facts]) -> None:
    assert facts.acked


def after_25_acks(facts: Facts, out: Outcome, children: list[Facts]) -> None:
    assert len(facts.acked) >= 25


def in_a_burst(facts: Facts, out: Outcome, children: list[Facts]) -> None:
    assert len(facts.acked) >= 150
    if "produced" in facts.lines:
        assert len(out.final) == 1000


def while_handlers_run(facts: Facts, out: Outcome, children: list[Facts]) -> None:
    # the four handlers sleep a minute: all four were interrupted and ran again, as attempt 2
    running = {job_id for job_id, _ in facts.runs}
    assert len(running) == 4
    assert out.interrupted_at_open == running
    assert not out.completed_at_open
    assert sorted(a for i, a in out.runs_after if i in running) == [2, 2, 2, 2]
    assert len(out.final) == 12


def while_completions_commit(facts: Facts, out: Outcome, children: list[Facts]) -> None:
    # a handler starts only once the commit that freed its slot is durable: with 32 slots,
    # 100 handlers that returned mean that at least 68 completions were durable
    assert len(out.completed_at_open) >= 68
    assert len(out.final) == 300


def while_recovering(facts: Facts, out: Outcome, children: list[Facts]) -> None:
    first, second = children
    assert len(first.runs) == 4
    # in the second child every run was the retry of an attempt the first kill interrupted
    assert second.runs and all(attempt == 2 for _, attempt in second.runs)
    for job_id, _ in second.runs:
        assert out.at_open[job_id].attempts >= 2
    assert len(out.final) == 4


KILL_POINTS = [
    pytest.param([("serial", acks_at_least(1))], after_first_ack, id="after-first-ack"),
    pytest.param([("serial", acks_at_least(25))], after_25_acks, id="after-25-acks"),
    pytest.param([("burst", acks_at_least(150))], in_a_burst, id="in-a-burst-of-enqueues"),
    pytest.param([("running", lambda f: len(f.acked) >= 12 and len(f.runs) >= 4)],
                 while_handlers_run, id="while-handlers-run"),
    pytest.param([("completing", lambda f: len(f.done) >= 100)], while_completions_commit,
                 id="while-completions-commit"),
    pytest.param([("running_all", lambda f: len(f.acked) >= 4 and len(f.runs) >= 4),
                  ("recover", lambda f: len(f.runs) >= 3)],
                 while_recovering, id="twice-the-second-while-recovering"),
]


@pytest.mark.parametrize(("steps", "check_kill_point"), KILL_POINTS)
def test_sigkill_loses_no_acknowledged_job_and_reruns_no_completed_one(
        tmp_path, steps, check_kill_point):
    facts, outcome, children = crash_and_check(tmp_path, steps)
    check_kill_point(facts, outcome, children)  # the kill hit the point it was meant to


# ---------------------------------------------------------------------------------------------
# The interrupted attempt, as reported at reopen


def test_reopen_after_sigkill_reports_the_interrupted_attempt(tmp_path):
    journal = tmp_path / "journal"
    facts, _ = run_child_until(tmp_path, journal, "interrupt",
                               lambda facts: len(facts.runs) >= 1 and len(facts.acked) >= 1)
    (job_id,) = facts.acked
    assert facts.runs == [(job_id, 1)]

    async def main():
        failures: list[BaseException] = []
        failed = trio.Event()
        dead_letters: list[dict] = []

        def on_failure(job, exc):
            failures.append(exc)
            failed.set()

        async def never(job):
            raise AssertionError("an interrupted job ran with max_attempts=1")

        async def record(job):
            dead_letters.append(job.payload)
            return "seen"

        with trio.fail_after(20):
            async with actorq.open_runtime(journal) as runtime:
                info = await runtime.status(job_id)  # before its queue is spawned
                assert info.state is JobState.PENDING
                assert info.error is not None and "interrupted" in info.error
                assert info.attempts == 1
                assert info.finished_at is None

                queue = await runtime.spawn_queue(
                    "q", never, retry=actorq.Retry(max_attempts=1), dead_letter="dlq",
                    hooks=actorq.Hooks(on_failure=on_failure))
                await queue.join()
                info = await queue.status(job_id)
                assert info.state is JobState.FAILED
                assert "interrupted" in info.error
                assert info.attempts == 1
                with pytest.raises(actorq.JobFailed) as caught:
                    await queue.wait(job_id)
                assert caught.value.job_id == job_id
                assert await queue.stats() == {
                    "pending": 0, "delayed": 0, "running": 0,
                    "completed": 0, "failed": 1, "cancelled": 0,
                }
                await failed.wait()
                assert len(failures) == 1
                assert isinstance(failures[0], actorq.JobInterrupted)

                # the dead letter was journaled with the failure: spawning "dlq" picks it up
                dlq = await runtime.spawn_queue("dlq", record)
                await dlq.join()
                (dead,) = await dlq.list()
                assert dead.state is JobState.COMPLETED and dead.result == "seen"
                assert dead_letters == [dead.payload]
                assert dead.payload["job_id"] == job_id
                assert dead.payload["queue"] == "q"
                assert dead.payload["payload"] == {"k": "interrupt-0"}
                assert dead.payload["attempts"] == 1
                assert "interrupted" in dead.payload["error"]

    trio.run(main)
