"""QueueCore: the decision engine of one queue. Pure and synchronous.

It never imports trio, lmdb or cattrs, never reads a clock (``now`` is passed in, in the runtime's
clock) and draws jitter only from the ``random.Random`` it is given. The queue actor feeds it
messages and journals what it decides; Hypothesis drives it directly in ``properties/``.

Two heaps (see DESIGN.md): delayed jobs by due time, ready jobs by ``(priority, ready_at, seq)``,
so a high-priority job that is not due yet never blocks a lower-priority one that is.
"""

from __future__ import annotations

import random
from typing import Literal

import attrs

from ._backoff import backoff_delay
from ._heap import KeyedHeap
from ._model import Retry
from ._throttle import TokenBucket

Where = Literal["delayed", "ready", "running"]


@attrs.define(eq=False)
class CoreJob:
    """What the core needs of a live job: no payload, no result."""

    id: str
    priority: int
    seq: int
    ready_at: float
    attempts: int = 0
    max_attempts: int | None = None
    timeout: float | None = None
    where: Where = "ready"
    due: float | None = None
    key: str | None = None  # debounce key


@attrs.frozen
class RetryAt:
    """The failed attempt will be retried; the job is ready at ``at``."""

    at: float
    delay: float


@attrs.frozen
class GiveUp:
    """The job has failed for good."""

    attempts: int


Decision = RetryAt | GiveUp


@attrs.define(eq=False)
class QueueCore:
    """Every scheduling rule of one queue: due times, priority order, concurrency, retries and
    the throttle. A job starts only with a free slot and, where the queue is throttled, a token;
    a token is taken only by a job that actually starts, the best ready job first."""

    concurrency: int
    retry: Retry | None = None
    rng: random.Random = attrs.field(factory=random.Random)
    paused: bool = False
    bucket: TokenBucket | None = None
    jobs: dict[str, CoreJob] = attrs.field(factory=dict)
    running: set[str] = attrs.field(factory=set)
    blocked: set[str] = attrs.field(factory=set)  # a thread of an earlier attempt still runs
    _ready: KeyedHeap = attrs.field(factory=KeyedHeap)
    _delayed: KeyedHeap = attrs.field(factory=KeyedHeap)
    _parked: dict[str, CoreJob] = attrs.field(factory=dict)  # ready but blocked

    # ---- adding and removing

    def add(self, job: CoreJob, now: float) -> Where | None:
        """Take a live job in: delayed while its due time is ahead, else ready (a job whose
        due time has passed is ready from its due time). Where it went; None (and no change)
        where its id is known already."""
        if job.id in self.jobs:
            return None
        self.jobs[job.id] = job
        if job.due is not None and job.due > now:
            self._delay(job, job.due)
        else:
            self._make_ready(job, job.ready_at if job.due is None else job.due)
        return job.where

    def add_interrupted(self, job: CoreJob, now: float) -> Decision | None:
        """Take in a job whose last attempt was cut short by a crash, and decide on it as on
        any failed attempt; None where its id is known already."""
        if job.id in self.jobs:
            return None
        job.where = "running"
        self.jobs[job.id] = job
        self.running.add(job.id)
        return self.attempt_failed(job.id, now)

    def forget(self, job_id: str) -> CoreJob | None:
        """Drop a job wherever it is (it finished, or another writer ended it)."""
        job = self.jobs.pop(job_id, None)
        if job is None:
            return None
        self._ready.remove(job_id)
        self._delayed.remove(job_id)
        self._parked.pop(job_id, None)
        self.running.discard(job_id)
        self.blocked.discard(job_id)
        return job

    # ---- time and starts

    def promote_due(self, now: float) -> list[str]:
        """Move every delayed job due at ``now`` to the ready heap; their ids, in due order."""
        promoted = []
        while (top := self._delayed.peek()) is not None and top[0][0] <= now:
            (due, _seq), job_id = self._delayed.pop()
            job = self.jobs[job_id]
            job.due = None
            self._make_ready(job, due)
            promoted.append(job_id)
        return promoted

    def take_startable(self, now: float) -> list[CoreJob]:
        """Start as many ready jobs as free slots allow, best first; each counts an attempt."""
        self.promote_due(now)
        started: list[CoreJob] = []
        while not self.paused and len(self.running) < self.concurrency:
            top = self._ready.peek()
            if top is None:
                break
            job_id = top[1]
            job = self.jobs[job_id]
            if job_id in self.blocked:
                self._ready.pop()
                self._parked[job_id] = job
                continue
            if self.bucket is not None and not self.bucket.try_take(now):
                break  # no token: the best ready job waits for the next one
            self._ready.pop()
            job.where = "running"
            job.attempts += 1
            self.running.add(job_id)
            started.append(job)
        return started

    def next_wakeup(self, now: float | None = None) -> float | None:
        """When something may next become startable: the earliest due time of a delayed job, or
        the next token where a ready job waits only for one; None where nothing is ahead.
        ``now`` is needed where the queue is throttled."""
        top = self._delayed.peek()
        wake = None if top is None else top[0][0]
        if (self.bucket is not None and not self.paused and len(self._ready)
                and len(self.running) < self.concurrency):
            if now is None:
                raise TypeError("next_wakeup() of a throttled queue needs now")
            token = self.bucket.next_token_at(now)
            wake = token if wake is None else min(wake, token)
        return wake

    # ---- outcomes

    def succeeded(self, job_id: str) -> None:
        self.forget(job_id)

    def attempt_failed(self, job_id: str, now: float, *, discard: bool = False) -> Decision:
        """A running attempt failed: retry it after its backoff, or give up."""
        job = self.jobs[job_id]
        self.running.discard(job_id)
        limit = job.max_attempts or (self.retry.max_attempts if self.retry else 1)
        if discard or job.attempts >= limit:
            self.forget(job_id)
            return GiveUp(job.attempts)
        delay = backoff_delay(self.retry.backoff, job.attempts, self.rng) if self.retry else 0.0
        at = now + delay
        if delay > 0:
            self._delay(job, at)
        else:
            self._make_ready(job, at)
        return RetryAt(at, delay)

    def requeue(self, job_id: str) -> None:
        """A running attempt was stopped by us: back to ready, the attempt uncounted."""
        job = self.jobs[job_id]
        self.running.discard(job_id)
        job.attempts = max(job.attempts - 1, 0)
        self._make_ready(job, job.ready_at)

    def cancel(self, job_id: str) -> Where | None:
        """Cancel a live job: a waiting one leaves at once; a running one is only reported."""
        job = self.jobs.get(job_id)
        if job is None:
            return None
        if job.where == "running":
            return "running"
        where = job.where
        self.forget(job_id)
        return where

    def block(self, job_id: str) -> None:
        """An abandoned thread of this job still runs: its next attempt must wait for it."""
        if job_id in self.jobs:
            self.blocked.add(job_id)

    def unblock(self, job_id: str) -> None:
        self.blocked.discard(job_id)
        job = self._parked.pop(job_id, None)
        if job is not None:
            self._make_ready(job, job.ready_at)

    # ---- views

    @property
    def idle(self) -> bool:
        """No pending, delayed or running job."""
        return not self.jobs

    def counts(self) -> dict[Where, int]:
        waiting = {"delayed": len(self._delayed), "running": len(self.running)}
        waiting["ready"] = len(self.jobs) - waiting["delayed"] - waiting["running"]
        return waiting  # type: ignore[return-value]

    def check_valid(self) -> None:
        """Assert the core's invariants (for tests)."""
        self._ready.check_valid()
        self._delayed.check_valid()
        assert len(self.running) <= self.concurrency, "more jobs running than slots"
        for job_id, job in self.jobs.items():
            places = [job_id in self._ready, job_id in self._delayed, job_id in self.running,
                      job_id in self._parked]
            assert sum(places) == 1, f"job {job_id!r} is in {sum(places)} places"
            assert (job.where == "running") == (job_id in self.running)
            assert (job.where == "delayed") == (job_id in self._delayed)
        assert self.running <= self.jobs.keys()
        assert self.blocked <= self.jobs.keys()

    # ---- internals

    def _delay(self, job: CoreJob, due: float) -> None:
        job.where = "delayed"
        job.due = due
        self._delayed.push(job.id, (due, job.seq))

    def _make_ready(self, job: CoreJob, ready_at: float) -> None:
        job.where = "ready"
        job.due = None
        job.ready_at = ready_at
        if job.id in self.blocked:
            self._parked[job.id] = job
        else:
            self._ready.push(job.id, (job.priority, ready_at, job.seq))
