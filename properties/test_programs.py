"""Programs as data (DESIGN.md, tier 3): Hypothesis draws a whole program, one
``trio.run(..., clock=MockClock(autojump_threshold=0))`` interprets it on the real runtime
(``durability="os"``, a temporary directory), and a reference model says what must have happened.

A program is a short list of steps: enqueue a job (priority, delay, a per-job ``max_attempts``,
and its handler's behaviour as data: fail n times, then succeed or ``Discard``; how long each run
takes), cancel an earlier job, let time pass. It may also crash: from journal commit k on, every
commit fails (a ``before_commit`` hook raises), as in a process that died at that commit; the
first ``open_runtime`` is left with whatever it raises. The journal is then reopened on the same
path and every job runs to completion.

What must hold (API.md):

- every acknowledged job (its ``enqueue`` returned an id) is in the journal after the crash, and
  reaches exactly one terminal state after recovery;
- no job that was finished durably before the crash (terminal when reopened) runs again;
- the start of every attempt is journaled before the handler runs, so handler runs of a job never
  exceed its attempts plus those cut short (interrupted by the crash, or requeued by a clean
  stop), and never exceed ``max_attempts`` plus those;
- every journaled outcome agrees with the handler: a completed job's result is the value its
  handler returned in that attempt, a retried or failed attempt is one whose handler raised (or
  was interrupted), ``failed`` only after the last allowed attempt or a ``Discard``, ``cancelled``
  only for a job a step cancelled; a retry starts no earlier than its backoff allows;
- without a crash, each job's fate is exactly what its behaviour and ``max_attempts`` say.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st

import actorq
from actorq._model import (
    AttemptFailed,
    Cancelled,
    Enqueued,
    Failed,
    Interrupted,
    JobState,
    Requeued,
    Started,
    Succeeded,
)

S = JobState
TERMINAL_EVENTS = (Succeeded, Failed, Cancelled)
EPS = 1e-6  # wall-clock times in the log are trio times plus an offset: compare loosely


# ---- programs


@attrs.frozen
class Enqueue:
    priority: int
    delay: float | None
    max_attempts: int | None  # the job's override of the queue's retry policy
    fails: int  # attempts 1..fails raise ValueError
    final: str  # then: "ok" (return a value) or "discard" (raise actorq.Discard)
    duration: float  # how long each run takes (virtual seconds)


@attrs.frozen
class Cancel:
    target: int  # which earlier enqueue step (modulo their number)


@attrs.frozen
class Advance:
    dt: float


@attrs.frozen
class Program:
    steps: list[Enqueue | Cancel | Advance]
    concurrency: int
    max_attempts: int
    backoff: float
    crash_at: int | None  # the journal commit (1-based, counted from spawn) that fails first

    @property
    def enqueues(self) -> list[Enqueue]:
        return [s for s in self.steps if isinstance(s, Enqueue)]


STEPS = st.one_of(
    st.builds(
        Enqueue,
        priority=st.integers(0, 3),
        delay=st.none() | st.sampled_from([0.0, 0.5, 2.0, 5.0]),
        max_attempts=st.none() | st.integers(1, 3),
        fails=st.integers(0, 3),
        final=st.sampled_from(["ok", "ok", "discard"]),
        duration=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    ),
    st.builds(Cancel, st.integers(0, 11)),
    st.builds(Advance, st.sampled_from([0.0, 0.5, 1.0, 2.5, 10.0])),
)

PROGRAMS = st.builds(
    Program,
    steps=st.lists(STEPS, min_size=3, max_size=12),
    concurrency=st.integers(1, 3),
    max_attempts=st.integers(1, 3),
    backoff=st.sampled_from([0.0, 0.5, 2.0]),
    crash_at=st.none() | st.integers(1, 10) | st.integers(2, 6),  # a crash in 2 of 3
)


def behaviour(spec: Enqueue, attempt: int) -> str:
    """What the handler does in attempt ``attempt``: "fail", "ok" or "discard"."""
    return "fail" if attempt <= spec.fails else spec.final


def result_of(k: int, attempt: int) -> dict[str, int]:
    return {"k": k, "attempt": attempt}


# ---- the interpreter


class Crashed(Exception):
    """The injected failure of every journal commit from the crash point on."""


@attrs.define
class Run:
    k: int
    job_id: str
    attempt: int
    phase: int
    outcome: str = "running"  # -> "ok" / "fail" / "discard" / "stopped"
    value: Any = None


@attrs.define
class Trace:
    """What happened, for the checks."""

    acked: dict[int, str] = attrs.Factory(dict)  # enqueue index -> job id
    cancels: dict[str, list[bool | None]] = attrs.Factory(lambda: defaultdict(list))
    runs: list[Run] = attrs.Factory(list)
    dead: bool = False  # the crash point was reached
    commits: int = 0
    at_reopen: dict[str, S] = attrs.Factory(dict)  # job id -> state when reopened
    final: dict[str, Any] = attrs.Factory(dict)  # job id -> JobRecord after recovery
    log: list[tuple[int, Any]] = attrs.Factory(list)


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def crash_error(exc: BaseException) -> bool:
    """Whether ``exc`` is what a runtime whose journal died may raise."""
    return all(isinstance(leaf, (actorq.JournalError, actorq.SupervisorError, Crashed))
               for leaf in leaves(exc))


async def interpret(program: Program, path: str, trace: Trace) -> None:
    phase = 1
    enqueues = program.enqueues

    async def handler(job: actorq.Job) -> Any:
        k = job.payload["k"]
        run = Run(k, job.id, job.attempt, phase)
        trace.runs.append(run)
        spec = enqueues[k]
        try:
            await trio.sleep(spec.duration)
        except trio.Cancelled:
            run.outcome = "stopped"
            raise
        run.outcome = behaviour(spec, job.attempt)
        if run.outcome == "fail":
            raise ValueError(f"job {k} fails attempt {job.attempt}")
        if run.outcome == "discard":
            raise actorq.Discard(f"job {k} discarded in attempt {job.attempt}")
        run.value = result_of(k, job.attempt)
        return run.value

    def before_commit() -> None:
        trace.commits += 1
        if program.crash_at is not None and trace.commits >= program.crash_at:
            trace.dead = True
            raise Crashed(f"injected crash at journal commit {trace.commits}")

    options = dict(concurrency=program.concurrency,
                   retry=actorq.Retry(program.max_attempts, backoff=program.backoff))

    # Phase 1: the program, until it ends (then a clean stop) or the journal dies.
    try:
        async with actorq.open_runtime(path, durability="os") as runtime:
            runtime.journal.before_commit = before_commit
            try:
                queue = await runtime.spawn_queue("q", handler, **options)
                k = 0
                for step in program.steps:
                    if isinstance(step, Enqueue):
                        job_id = await queue.enqueue({"k": k}, priority=step.priority,
                                                     delay=step.delay,
                                                     max_attempts=step.max_attempts)
                        trace.acked[k] = job_id
                        k += 1
                    elif isinstance(step, Cancel):
                        if trace.acked:
                            target = sorted(trace.acked)[step.target % len(trace.acked)]
                            job_id = trace.acked[target]
                            trace.cancels[job_id].append(None)  # asked, no answer yet
                            trace.cancels[job_id][-1] = await queue.cancel(job_id)
                    else:
                        await trio.sleep(step.dt)
            except actorq.JournalError:
                if not trace.dead:
                    raise
                # the process died here: leave at once
    except (Exception, BaseExceptionGroup) as exc:
        if not (trace.dead and crash_error(exc)):
            raise

    # Phase 2: reopen, note what was finished for good, then run everything to completion.
    phase = 2
    async with actorq.open_runtime(path, durability="os") as runtime:
        for job_id in trace.acked.values():
            try:
                info = await runtime.status(job_id)
            except actorq.UnknownJob:
                raise AssertionError(f"acknowledged job {job_id} is not in the journal") from None
            trace.at_reopen[job_id] = info.state
        for rec in runtime.journal.list("q", limit=10_000):
            trace.at_reopen.setdefault(rec.id, rec.state)  # journaled, never acknowledged
        queue = await runtime.spawn_queue("q", handler, **options)
        with trio.fail_after(100_000):  # virtual seconds: a job that never ends fails here
            await queue.join()
        for rec in runtime.journal.list("q", limit=10_000):
            trace.final[rec.id] = rec
        trace.log = runtime.journal.log()


# ---- the reference model


def check_no_attempt_ran_to_its_end_twice(where: str, runs: list[Run]) -> None:
    """A handler that returned (or raised) is never run again for the same attempt: its outcome
    is journaled, or (after a crash) the attempt is recorded as interrupted and counted. A clean
    stop cancels running handlers and requeues their attempts uncounted (API.md, "Runtime");
    it must not requeue one whose handler had already finished."""
    ended = [r.attempt for r in runs if r.outcome in ("ok", "fail", "discard")]
    assert len(ended) == len(set(ended)), (
        where + f"an attempt ran to its end twice (attempts of the runs that ended: {ended}); "
                f"runs: {runs}")


def check(program: Program, trace: Trace) -> None:
    enqueues = program.enqueues
    events_of: dict[str, list[Any]] = defaultdict(list)
    for _seq, ev in trace.log:
        events_of[ev.record.id if isinstance(ev, Enqueued) else ev.id].append(ev)
    runs_of: dict[str, list[Run]] = defaultdict(list)
    for run in trace.runs:
        runs_of[run.job_id].append(run)

    assert set(trace.acked.values()) <= set(trace.final), "an acknowledged job was lost"
    for job_id, rec in trace.final.items():
        events = events_of[job_id]
        runs = runs_of[job_id]
        k = rec.payload["k"]
        spec = enqueues[k]
        limit = spec.max_attempts or program.max_attempts
        where = f"job {k} ({spec}, limit {limit}): "

        # Exactly one terminal state, reached once, last.
        assert rec.state.terminal, where + f"ended {rec.state} after recovery"
        terminal = [ev for ev in events if isinstance(ev, TERMINAL_EVENTS)]
        assert len(terminal) == 1 and events[-1] is terminal[0], (
            where + f"terminal events {terminal} in {events}")
        assert rec.attempts <= limit, where + f"{rec.attempts} attempts"

        # At reopen (before the queue is spawned) nothing runs: an attempt the crash cut short is
        # recorded as interrupted; one a clean stop cut short was requeued.
        assert trace.at_reopen.get(job_id) is not S.RUNNING, where + "running at reopen"
        if trace.dead:
            assert not any(isinstance(ev, Requeued) for ev in events), (
                where + f"requeued although the journal died (nothing can be committed after "
                        f"the crash point): {events}")
        else:
            assert not any(isinstance(ev, Interrupted) for ev in events), (
                where + f"interrupted without a crash: {events}")

        # Nothing finished before the crash runs again.
        if trace.at_reopen.get(job_id, S.PENDING).terminal:
            again = [r for r in runs if r.phase == 2]
            assert not again, where + f"was {trace.at_reopen[job_id]} at reopen, ran again {again}"

        # Write-ahead: each run had its start journaled; runs within attempts plus cut-short ones.
        starts = [ev for ev in events if isinstance(ev, Started)]
        cut_short = sum(isinstance(ev, (Interrupted, Requeued)) for ev in events)
        assert len(runs) <= len(starts), where + f"{len(runs)} runs, {len(starts)} starts"
        assert len(runs) <= limit + cut_short, (
            where + f"{len(runs)} runs > {limit} attempts + {cut_short} cut short")
        for run in runs:
            assert any(s.attempt == run.attempt for s in starts), (
                where + f"attempt {run.attempt} ran without a journaled start")
        check_no_attempt_ran_to_its_end_twice(where, runs)

        # Every journaled outcome agrees with the handler.
        ran = {(r.attempt, r.outcome): r for r in runs}
        attempt = 0
        interrupted = False
        retry_at = None
        for ev in events:
            if isinstance(ev, Enqueued):
                ready = ev.record.run_at
                if ready is not None:
                    retry_at = ready
            elif isinstance(ev, Started):
                assert ev.attempt <= limit, where + f"started attempt {ev.attempt}"
                if retry_at is not None:
                    assert ev.at >= retry_at - EPS, (
                        where + f"attempt {ev.attempt} started at {ev.at}, due at {retry_at}")
                attempt, interrupted, retry_at = ev.attempt, False, None
            elif isinstance(ev, Interrupted):
                interrupted = True
            elif isinstance(ev, Requeued):
                attempt = max(attempt - 1, 0)
            elif isinstance(ev, Succeeded):
                assert (attempt, "ok") in ran, (
                    where + f"completed in attempt {attempt}, whose handler did not return")
                assert ev.result == ran[attempt, "ok"].value == result_of(k, attempt), (
                    where + f"result {ev.result!r}")
            elif isinstance(ev, AttemptFailed):
                assert interrupted or (attempt, "fail") in ran, (
                    where + f"attempt {attempt} journaled as failed; the handler did not fail")
                assert attempt < limit, where + f"retried after attempt {attempt} of {limit}"
                if ev.retry_at is not None:
                    retry_at = ev.retry_at
                    assert ev.retry_at >= ev.at + program.backoff - EPS
                interrupted = False
            elif isinstance(ev, Failed):
                discarded = (attempt, "discard") in ran and not interrupted
                assert discarded or (attempt == limit and (
                    interrupted or (attempt, "fail") in ran)), (
                    where + f"failed for good after attempt {attempt} ({ev.error})")
            elif isinstance(ev, Cancelled):
                assert job_id in trace.cancels, where + "cancelled, but no step cancelled it"

        # A cancel that said True ended the job cancelled; one that said False found it ended.
        answers = trace.cancels.get(job_id, [])
        if True in answers:
            assert rec.state is S.CANCELLED, where + f"cancel said True, but it ended {rec.state}"
        elif answers and answers[-1] is False:
            assert rec.state is not S.CANCELLED, where + "cancel said False, but it was cancelled"

        # Without a crash, each job's fate is exactly what its behaviour says.
        if not trace.dead:
            assert job_id in trace.acked.values()
            if rec.state is S.CANCELLED:
                continue
            n = min(spec.fails + 1, limit)
            want = (S.COMPLETED if spec.final == "ok" else S.FAILED) if spec.fails < limit \
                else S.FAILED
            assert (rec.state, rec.attempts) == (want, n), (
                where + f"ended {rec.state} after {rec.attempts} attempts, "
                        f"expected {want} after {n}")
            if want is S.COMPLETED:
                assert rec.result == result_of(k, n)

    # Write-ahead: no handler ran for a job whose enqueue (and start) never became durable.
    unjournaled = [r for r in trace.runs if r.job_id not in trace.final]
    assert not unjournaled, f"handlers ran for jobs the journal never held: {unjournaled}"


@settings(deadline=None)
@given(program=PROGRAMS)
# A clean stop in the instant a handler returned: its attempt must not run again after reopening.
@example(program=Program(steps=[Enqueue(0, None, None, 0, "ok", 0.0), Advance(0.0)],
                         concurrency=1, max_attempts=1, backoff=0.0, crash_at=None))
def test_programs(program: Program) -> None:
    trace = Trace()
    with tempfile.TemporaryDirectory(prefix="actorq-program-") as tmp:
        trio.run(interpret, program, tmp + "/journal", trace,
                 clock=trio.testing.MockClock(autojump_threshold=0))
    check(program, trace)
