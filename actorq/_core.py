"""QueueCore: the decision engine of one queue. Pure and synchronous.

It never imports trio, lmdb or cattrs, never reads a clock (``now`` is passed in, in the runtime's
clock) and draws jitter only from the ``random.Random`` it is given. The queue actor feeds it
messages and journals what it decides; Hypothesis drives it directly in ``properties/``.

Two heaps (see DESIGN.md): delayed jobs by due time, ready jobs by ``(priority, ready_at, seq)``,
so a high-priority job that is not due yet never blocks a lower-priority one that is.

Two time domains meet here: ``now`` and ``due`` are in the clock the core is driven by (trio's, in
the runtime), while ``ready_at`` is the time a job is ranked by among ready jobs, in the domain the
journal stores (wall-clock seconds in the runtime). The core never compares the two: it only moves
``ready_at`` by a retry's delay (``attempt_failed(wall=)``). Driven alone (tests), both are ``now``.

**The window.** A queue with a ``window`` holds at most about that many ready jobs in memory; the
rest stay ("spilled") in the journal's ready index, in the same ``(priority, ready_at, seq)``
order; the journal counts them. ``horizon`` is the rank of the last ready job taken in from the
index: every ready job in memory ranks before it, every spilled one after it, so the best job in
memory is the best job of the queue. A job that becomes ready ranked after the horizon is spilled
(it is in the index once the round that made it ready commits); the shell refills the window from
the index after a commit (:meth:`QueueCore.refill_wanted`, :meth:`QueueCore.refilled`) and lets it
shed jobs when it grows too large (:meth:`QueueCore.shed`). Delayed jobs have a window of their
own, over the journal's index of delayed jobs by due time (``delayed_horizon``): the ones due first
are in memory. Without a window, every job is in memory.
"""

from __future__ import annotations

import math
import random
from typing import Literal

import attrs

from ._backoff import backoff_delay
from ._heap import KeyedHeap
from ._model import Retry
from ._throttle import TokenBucket

Where = Literal["delayed", "ready", "running", "spilled"]

#: The ``seq`` of a job not journaled yet: it ranks after every journaled job (the journal gives
#: it the next sequence number when the round commits).
UNASSIGNED_SEQ = 1 << 64

Rank = tuple[int, float, int]


@attrs.define(eq=False)
class CoreJob:
    """What the core needs of a live job: no payload, no result."""

    id: str
    priority: int
    seq: int  # enqueue order (UNASSIGNED_SEQ until journaled)
    ready_at: float  # ranking time: when it became, or (delayed) will become, ready
    attempts: int = 0
    max_attempts: int | None = None
    timeout: float | None = None
    where: Where = "ready"
    due: float | None = None
    key: str | None = None  # debounce key

    @property
    def rank(self) -> Rank:
        """The order among ready jobs: lower starts first."""
        return (self.priority, self.ready_at, self.seq)


def _when(job: CoreJob) -> tuple[float, int]:
    """A delayed job's place in the journal's index of delayed jobs: its due time as journaled
    (``ready_at``), then enqueue order."""
    return (job.ready_at, job.seq)


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
    window: int | None = None  # at most about this many ready jobs in memory (None: all)
    low_water: int | None = None  # refill below this many (None: half the window)
    horizon: Rank | None = None  # every spilled ready job ranks after this (None: none spilled)
    # the same for delayed jobs, by when they are due: ``(ready_at, seq)``
    delayed_horizon: tuple[float, int] | None = None

    # ---- adding and removing

    def add(self, job: CoreJob, now: float) -> Where | None:
        """Take a live job in: delayed while its due time is ahead, else ready (a delayed job's
        ``ready_at`` is its due time, in the ranking domain). Where it went (also for a job
        spilled past a horizon); None (and no change) where its id is known already."""
        if job.id in self.jobs:
            return None
        self.jobs[job.id] = job
        if job.due is not None and job.due > now:
            self._delay(job, job.due)
            return "delayed"
        self._make_ready(job)
        return "ready"

    def add_interrupted(self, job: CoreJob, now: float, *, wall: float | None = None
                        ) -> Decision | None:
        """Take in a job whose last attempt was cut short by a crash, and decide on it as on
        any failed attempt; None where its id is known already."""
        if job.id in self.jobs:
            return None
        job.where = "running"
        self.jobs[job.id] = job
        self.running.add(job.id)
        return self.attempt_failed(job.id, now, wall=wall)

    def journaled(self, job_id: str, seq: int) -> None:
        """A new job got its sequence number (its place in enqueue order) from the journal."""
        job = self.jobs.get(job_id)
        if job is None or job.seq == seq:
            return
        job.seq = seq
        # Re-ranked where it waits in a heap (``where`` says which: a running job, the usual
        # case, is in none; a "ready" one may be parked instead).
        where = job.where
        if where == "ready" and job_id in self._ready:
            self._ready.push(job_id, job.rank)
        elif where == "delayed":
            assert job.due is not None
            self._delayed.push(job_id, (job.due, seq))

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
        while (top := self._delayed.peek()) is not None and top[0] <= now:
            job_id = self._delayed.pop()[-1]
            self._make_ready(self.jobs[job_id])
            promoted.append(job_id)
        return promoted

    def take_startable(self, now: float) -> list[CoreJob]:
        """Start as many ready jobs as free slots allow, best first; each counts an attempt."""
        self.promote_due(now)
        started: list[CoreJob] = []
        if self.paused:
            return started
        ready, jobs, running, blocked = self._ready, self.jobs, self.running, self.blocked
        bucket, concurrency = self.bucket, self.concurrency
        while len(running) < concurrency:
            top = ready.peek()
            if top is None:
                break
            job_id = top[-1]
            job = jobs[job_id]
            if job_id in blocked:
                ready.pop()
                self._parked[job_id] = job
                continue
            if bucket is not None and not bucket.try_take(now):
                break  # no token: the best ready job waits for the next one
            ready.pop()
            job.where = "running"
            job.attempts += 1
            running.add(job_id)
            started.append(job)
        return started

    def next_wakeup(self, now: float | None = None) -> float | None:
        """When something may next become startable: the earliest due time of a delayed job, or
        the next token where a ready job waits only for one; None where nothing is ahead.
        ``now`` is needed where the queue is throttled."""
        top = self._delayed.peek()
        wake = None if top is None else top[0]
        if (self.bucket is not None and not self.paused and len(self._ready)
                and len(self.running) < self.concurrency):
            if now is None:
                raise TypeError("next_wakeup() of a throttled queue needs now")
            token = self.bucket.next_token_at(now)
            wake = token if wake is None else min(wake, token)
        return wake

    # ---- outcomes

    def succeeded(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is not None and job.where == "running":
            # (forget() without its heap lookups: a running job is in no heap, not parked)
            del self.jobs[job_id]
            self.running.discard(job_id)
            self.blocked.discard(job_id)
            return
        self.forget(job_id)

    def attempt_failed(self, job_id: str, now: float, *, discard: bool = False,
                       wall: float | None = None) -> Decision:
        """A running attempt failed: retry it after its backoff, or give up. ``wall`` is
        ``now`` in the ranking domain (default: ``now``); the retry ranks from ``wall + delay``."""
        job = self.jobs[job_id]
        self.running.discard(job_id)
        limit = job.max_attempts or (self.retry.max_attempts if self.retry else 1)
        if discard or job.attempts >= limit:
            self.forget(job_id)
            return GiveUp(job.attempts)
        delay = backoff_delay(self.retry.backoff, job.attempts, self.rng) if self.retry else 0.0
        at = now + delay
        job.ready_at = (now if wall is None else wall) + delay
        if delay > 0:
            self._delay(job, at)
        else:
            self._make_ready(job)
        return RetryAt(at, delay)

    def requeue(self, job_id: str) -> None:
        """A running attempt was stopped by us: back to ready, the attempt uncounted."""
        job = self.jobs[job_id]
        self.running.discard(job_id)
        job.attempts = max(job.attempts - 1, 0)
        self._make_ready(job)

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
            self._make_ready(job)

    # ---- views

    @property
    def idle(self) -> bool:
        """No pending, delayed or running job. While a horizon is set, the journal's index may
        still hold jobs beyond it: the queue is idle only once a refill found it empty."""
        return not self.jobs and self.horizon is None and self.delayed_horizon is None

    def counts(self) -> dict[Where, int]:
        """Jobs held in memory, by where they are (beyond a window, the journal counts)."""
        held_delayed = len(self._delayed)
        waiting = {"delayed": held_delayed, "running": len(self.running)}
        waiting["ready"] = len(self.jobs) - held_delayed - waiting["running"]
        return waiting  # type: ignore[return-value]

    # ---- the window (see the module's docstring)

    def spill_all(self) -> None:
        """Start with every waiting job in the journal's indexes and none in memory (a queue
        that loads its backlog a window at a time); :meth:`refilled` takes them in."""
        assert self.window is not None, "spill_all() needs a window"
        self.horizon = (-(1 << 63) - 1, -math.inf, -1)  # before every rank
        self.delayed_horizon = (-math.inf, -1)

    def refill_wanted(self, kind: Literal["ready", "delayed"] = "ready",
                      wall: float | None = None) -> int:
        """How many jobs of ``kind`` to read from the index after its horizon (0: none).
        Asked once a round has committed, so the index holds every spilled job. ``wall`` (now,
        in the ranking domain): delayed jobs are also read on while the horizon is due, so
        every delayed job that is due is in memory, to be promoted and ranked with the rest."""
        if self.window is None:
            return 0
        if kind == "ready":
            if self.horizon is None:
                return 0
            held = len(self._ready)
            if self.blocked:  # a blocked job waiting in the heap cannot start: not counted
                held -= sum(1 for job_id in self.blocked if job_id in self._ready)
        else:
            if self.delayed_horizon is None:
                return 0
            held = len(self._delayed)
            if wall is not None and self.delayed_horizon[0] <= wall:
                return self.window
        low = self.window // 2 if self.low_water is None else self.low_water
        return self.window - held if held <= low else 0

    def refilled(self, jobs: list[CoreJob], exhausted: bool,
                 kind: Literal["ready", "delayed"] = "ready") -> None:
        """Take in the next jobs of ``kind`` from its index, in its order (``exhausted``: the
        index holds none after them, so every such job is now in memory). A delayed job comes
        with its ``due`` time; one already due is promoted by the next :meth:`promote_due`."""
        for job in jobs:
            if job.id in self.jobs:
                continue
            self.jobs[job.id] = job
            if kind == "ready":
                job.where = "ready"
                self._ready.push(job.id, job.rank)
            else:
                assert job.due is not None, "a delayed job needs its due time"
                job.where = "delayed"
                self._delayed.push(job.id, (job.due, job.seq))
        if kind == "ready":
            self.horizon = None if exhausted else jobs[-1].rank if jobs else self.horizon
        else:
            self.delayed_horizon = (None if exhausted else _when(jobs[-1]) if jobs
                                    else self.delayed_horizon)

    def rebalance_wanted(self) -> bool:
        """Whether :meth:`shed` or :meth:`refill_wanted` has work to do."""
        window = self.window
        return window is not None and (
            len(self._ready) > 2 * window or len(self._delayed) > 2 * window
            or self.refill_wanted() > 0 or self.refill_wanted("delayed") > 0)

    def shed(self) -> int:
        """Where more than twice the window of ready (or delayed) jobs is in memory, keep the
        first ``window`` of them and spill the rest (asked once a round has committed: they
        are all in the index). How many were spilled. Blocked ready jobs stay, parked, until
        they are unblocked."""
        window = self.window
        if window is None:
            return 0
        dropped = 0
        if len(self._ready) > 2 * window:
            # The heap's entries sorted (their keys are the jobs' ranks) and the heap rebuilt
            # from the kept ones: no key function and no removal per job.
            jobs, blocked, spill = self.jobs, self.blocked, self._spill
            kept = []
            for entry in self._ready.sorted_entries():  # (priority, ready_at, seq, token, id)
                job_id = entry[-1]
                if job_id in blocked:
                    self._parked[job_id] = jobs[job_id]
                elif len(kept) < window:
                    kept.append(entry)
                else:
                    spill(jobs[job_id])
                    dropped += 1
            if kept:
                self.horizon = jobs[kept[-1][-1]].rank  # the last job kept
            self._ready.replace(kept)
        if len(self._delayed) > 2 * window:
            ordered = sorted((self.jobs[i] for i in self._delayed.ids()), key=_when)
            self.delayed_horizon = _when(ordered[window - 1])
            for job in ordered[window:]:
                self._delayed.remove(job.id)
                self._spill(job)
                dropped += 1
        return dropped

    def check_valid(self) -> None:
        """Assert the core's invariants (for tests)."""
        self._ready.check_valid()
        self._delayed.check_valid()
        assert len(self.running) <= self.concurrency, "more jobs running than slots"
        if self.horizon is not None:
            for job_id in self._ready.ids():
                assert self.jobs[job_id].rank <= self.horizon, f"{job_id} ranks after horizon"
        if self.delayed_horizon is not None:
            for job_id in self._delayed.ids():
                assert _when(self.jobs[job_id]) <= self.delayed_horizon, (
                    f"delayed {job_id} after the delayed horizon")
        for job_id, job in self.jobs.items():
            places = [job_id in self._ready, job_id in self._delayed, job_id in self.running,
                      job_id in self._parked]
            assert sum(places) == 1, f"job {job_id!r} is in {sum(places)} places"
            assert (job.where == "running") == (job_id in self.running)
            assert (job.where == "delayed") == (job_id in self._delayed)
        assert self.running <= self.jobs.keys()
        assert self.blocked <= self.jobs.keys()

    # ---- internals

    def _spill(self, job: CoreJob) -> None:
        """Leave ``job`` to the journal's index (the round that put it there journals it)."""
        del self.jobs[job.id]
        self.running.discard(job.id)
        self.blocked.discard(job.id)  # the shell blocks it again when it is read back in
        job.where = "spilled"

    def _delay(self, job: CoreJob, due: float) -> None:
        job.due = due
        if self.delayed_horizon is not None and _when(job) > self.delayed_horizon:
            self._spill(job)  # due after a delayed job still in the index: it waits there
            return
        job.where = "delayed"
        self._delayed.push(job.id, (due, job.seq))

    def _make_ready(self, job: CoreJob) -> None:
        job.due = None
        if job.id in self.blocked:
            job.where = "ready"
            self._parked[job.id] = job
        elif self.horizon is not None and job.rank > self.horizon:
            # Ranked after a job still in the index: it waits there (the round that made it
            # ready journals it as pending) until a refill reaches it.
            self._spill(job)
        else:
            job.where = "ready"
            self._ready.push(job.id, job.rank)
