"""Retries, driven on QueueCore directly, against a reference written from API.md ("Policies").

- Attempts never exceed ``max_attempts`` (the job's override where it has one), and a job that
  keeps failing makes exactly that many attempts.
- Retry n never becomes ready before its backoff after failure n: the delay is the one API.md
  gives for every backoff form (fixed, linear, exponential with max and jitter, a number, a list,
  a callable), jitter drawn from a seeded ``random.Random``.
- ``Discard`` stops retries at once.
- ``GiveUp`` happens exactly once per job that does not succeed, never for one that does.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict

import attrs
from hypothesis import given
from hypothesis import strategies as st

from actorq import _backoff, _core
from actorq._model import Exponential, Fixed, Linear, Retry, exponential, fixed, linear

DELAYS = st.one_of(
    st.integers(0, 5),
    st.floats(0, 10, allow_nan=False, allow_infinity=False),
)


@attrs.frozen
class Table:
    """A callable backoff: ``f(n)`` cycles through ``delays`` (unlike a list, which repeats its
    last item)."""

    delays: tuple[float, ...]

    def __call__(self, n: int) -> float:
        return self.delays[(n - 1) % len(self.delays)]


EXPONENTIALS = st.builds(
    exponential,
    DELAYS,
    factor=st.sampled_from([1.5, 2.0, 3.0]) | st.floats(0.5, 4, allow_nan=False),
    max=st.none() | st.sampled_from([1.0, 5.0, 30.0]) | st.floats(0.5, 60, allow_nan=False),
    jitter=st.just(0.0) | st.floats(0, 1, allow_nan=False),
)
BACKOFFS = st.one_of(
    st.builds(fixed, DELAYS),
    st.builds(linear, DELAYS),
    EXPONENTIALS,
    EXPONENTIALS,  # the form with the most parameters, twice as likely
    DELAYS,  # a number: fixed
    st.lists(DELAYS, min_size=1, max_size=4),  # the n-th item, the last one repeating
    st.lists(DELAYS, min_size=1, max_size=4).map(lambda d: Table(tuple(d))),
)


def spec_delay(backoff: object, n: int, rng: random.Random) -> float:
    """The delay before retry n (n = 1 for the first retry), as API.md states it."""
    if isinstance(backoff, Fixed):
        return backoff.delay
    if isinstance(backoff, Linear):
        return backoff.delay * n
    if isinstance(backoff, Exponential):
        try:
            d = backoff.initial * backoff.factor ** (n - 1)
        except OverflowError:
            d = math.inf
        if backoff.max is not None:
            d = min(d, backoff.max)
        if backoff.jitter:  # spread uniformly over [d(1-j), d(1+j)]
            d = rng.uniform(d * (1 - backoff.jitter), d * (1 + backoff.jitter))
        return d
    if isinstance(backoff, (int, float)):
        return float(backoff)
    if isinstance(backoff, (list, tuple)):
        return float(backoff[min(n, len(backoff)) - 1])
    return float(backoff(n))  # type: ignore[operator]


def close(a: float, b: float) -> bool:
    return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


@given(backoff=BACKOFFS, seed=st.integers(0, 2**32 - 1))
def test_backoff_delay_is_the_documented_one(backoff: object, seed: int) -> None:
    """``backoff_delay`` gives API.md's delay for retries 1..12, jitter within its bounds and
    drawn from the injected ``random.Random`` only (the same seed gives the same delays)."""
    policy = Retry(max_attempts=13, backoff=backoff).backoff  # as the queue holds it
    rng, ref = random.Random(seed), random.Random(seed)
    for n in range(1, 13):
        got = _backoff.backoff_delay(policy, n, rng)
        want = spec_delay(policy, n, ref)
        assert close(got, want), f"retry {n} under {backoff!r}: {got} != {want}"
        assert got >= 0
        if isinstance(policy, Exponential) and policy.jitter:
            base = spec_delay(attrs.evolve(policy, jitter=0.0), n, ref)
            lo, hi = base * (1 - policy.jitter), base * (1 + policy.jitter)
            assert lo - 1e-9 * abs(lo) <= got <= hi + 1e-9 * abs(hi), (got, lo, hi)
    assert rng.random() == ref.random(), "backoff_delay drew from the rng more than the spec"


OUTCOMES = st.lists(st.sampled_from(["fail", "fail", "discard", "ok"]), max_size=6)


@attrs.frozen
class JobPlan:
    max_attempts: int | None  # the job's override
    outcomes: list[str]  # what each attempt does; "fail" beyond the list
    priority: int


JOB_PLANS = st.builds(JobPlan, st.none() | st.integers(1, 5), OUTCOMES, st.integers(0, 1))


def expected_attempts(plan: JobPlan, limit: int) -> tuple[int, str]:
    """How many attempts the job makes, and how it ends ("ok", "discard" or "exhausted")."""
    for n in range(1, limit + 1):
        outcome = plan.outcomes[n - 1] if n <= len(plan.outcomes) else "fail"
        if outcome in ("ok", "discard"):
            return n, outcome
    return limit, "exhausted"


@given(
    data=st.data(),
    plans=st.lists(JOB_PLANS, min_size=1, max_size=5),
    concurrency=st.integers(1, 3),
    max_attempts=st.integers(1, 5),
    backoff=BACKOFFS,
    seed=st.integers(0, 2**32 - 1),
)
def test_retries(data: st.DataObject, plans: list[JobPlan], concurrency: int,
                 max_attempts: int, backoff: object, seed: int) -> None:
    retry = Retry(max_attempts=max_attempts, backoff=backoff)
    core = _core.QueueCore(concurrency, retry, random.Random(seed))
    ref_rng = random.Random(seed)
    now = 1000.0
    ids = [f"j{i}" for i in range(len(plans))]
    plan_of = dict(zip(ids, plans))
    limit_of = {i: plan_of[i].max_attempts or max_attempts for i in ids}
    for seq, job_id in enumerate(ids):
        core.add(_core.CoreJob(job_id, plan_of[job_id].priority, seq, ready_at=now,
                               max_attempts=plan_of[job_id].max_attempts), now)
    ready_at = {i: now for i in ids}  # when the next attempt may start
    starts: dict[str, list[float]] = defaultdict(list)
    give_ups: Counter[str] = Counter()
    ended: dict[str, str] = {}

    for _step in range(1000):
        if core.idle:
            break
        for job in core.take_startable(now):
            assert job.id not in ended, f"{job.id} started after it ended ({ended[job.id]})"
            assert now >= ready_at[job.id], (
                f"{job.id} attempt {job.attempts} started at {now}, before its backoff ended "
                f"at {ready_at[job.id]}")
            starts[job.id].append(now)
            assert job.attempts == len(starts[job.id]), "attempts must count starts"
            assert job.attempts <= limit_of[job.id], (
                f"{job.id} started attempt {job.attempts} of at most {limit_of[job.id]}")
        core.check_valid()
        running = sorted(core.running)
        if not running:
            wake = core.next_wakeup()
            assert wake is not None and wake > now, (
                f"jobs {sorted(core.jobs)} wait, none runs, and nothing wakes the queue")
            now = wake
            continue
        job_id = data.draw(st.sampled_from(running), label="job that ends")
        now += data.draw(st.sampled_from([0.0, 0.25, 1.0, 4.0]), label="it ran for")
        attempt = len(starts[job_id])
        plan = plan_of[job_id]
        outcome = plan.outcomes[attempt - 1] if attempt <= len(plan.outcomes) else "fail"
        if outcome == "ok":
            core.succeeded(job_id)
            ended[job_id] = "ok"
            continue
        decision = core.attempt_failed(job_id, now, discard=outcome == "discard")
        if outcome == "discard" or attempt >= limit_of[job_id]:
            assert decision == _core.GiveUp(attempt), (
                f"{job_id} attempt {attempt}/{limit_of[job_id]} ({outcome}): {decision}")
            give_ups[job_id] += 1
            ended[job_id] = "discard" if outcome == "discard" else "exhausted"
            assert job_id not in core.jobs
            continue
        assert isinstance(decision, _core.RetryAt), (
            f"{job_id} attempt {attempt}/{limit_of[job_id]} failed: {decision}")
        want = spec_delay(retry.backoff, attempt, ref_rng)
        assert close(decision.delay, want), (
            f"{job_id}: retry {attempt} after {decision.delay}s, expected {want}s")
        assert decision.at == now + decision.delay
        ready_at[job_id] = decision.at
    else:
        raise AssertionError("the queue never drained")

    for job_id in ids:
        n, how = expected_attempts(plan_of[job_id], limit_of[job_id])
        assert len(starts[job_id]) == n, (
            f"{job_id}: {len(starts[job_id])} attempts, expected {n} (limit "
            f"{limit_of[job_id]}, outcomes {plan_of[job_id].outcomes})")
        assert ended[job_id] == how
        assert give_ups[job_id] == (0 if how == "ok" else 1), (
            f"{job_id} ({how}) gave up {give_ups[job_id]} times")


@given(
    attempts=st.integers(1, 6),
    override=st.none() | st.integers(1, 5),
    max_attempts=st.integers(1, 5),
    backoff=BACKOFFS,
    seed=st.integers(0, 2**32 - 1),
    with_retry=st.booleans(),
)
def test_interrupted_attempt_counts(attempts: int, override: int | None, max_attempts: int,
                                    backoff: object, seed: int, with_retry: bool) -> None:
    """A job taken in after a crash cut its attempt n short is decided as a failed attempt n:
    retried after retry n's backoff while n < max_attempts, else given up (once)."""
    retry = Retry(max_attempts=max_attempts, backoff=backoff) if with_retry else None
    core = _core.QueueCore(1, retry, random.Random(seed))
    now = 50.0
    job = _core.CoreJob("j", 0, 1, ready_at=now, attempts=attempts, max_attempts=override)
    decision = core.add_interrupted(job, now)
    limit = override or (max_attempts if with_retry else 1)
    core.check_valid()
    if attempts >= limit:
        assert decision == _core.GiveUp(attempts)
        assert core.idle
        return
    assert isinstance(decision, _core.RetryAt), decision
    want = spec_delay(retry.backoff, attempts, random.Random(seed)) if retry else 0.0
    assert close(decision.delay, want)
    assert decision.at == now + decision.delay
    if decision.at > now:
        assert not core.take_startable(max(now, math.nextafter(decision.at, -math.inf))), (
            "the retry started before its backoff ended")
    started = core.take_startable(decision.at)
    assert [j.id for j in started] == ["j"] and started[0].attempts == attempts + 1
