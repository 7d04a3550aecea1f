"""Pure debounce bookkeeping for :class:`~actorq.Debounce` (no trio, no I/O, no clock).

One :class:`Debouncer` per queue. It decides, for each enqueue of a debounced job, when the job is
due and which earlier job it supersedes; the caller (QueueCore / the queue actor) journals that,
cancels the superseded job with ``superseded_by=<new id>`` *in the same journal transaction* as the
new job's enqueue, and keeps the new job delayed until ``due_at``. ``now`` is always passed in, in
the runtime's clock; the caller converts journaled wall-clock times before :meth:`restore`.

Semantics (API.md, "Debounce"), made exact
------------------------------------------

A *trailing burst* of key K is a run of enqueues of K, each landing before the previous one's
job became due. Its state: the survivor (the latest job), ``first_at`` (the burst's first
enqueue), ``last_at`` (its latest enqueue) and ``due_at``::

    due_at = min(last_at + wait, first_at + max_wait)      # max_wait None: last_at + wait

The burst is *open* while ``now < due_at``. Tie rule: at ``now == due_at`` the survivor is due (it
starts in that very instant, as the core promotes jobs with ``due <= now``), so it can no longer
be superseded, and an enqueue landing exactly then begins a new burst. A burst also ends when its
survivor starts (:meth:`started`) or is cancelled (:meth:`cancelled`). This is how "an earlier job
that has not started" (API.md) is read: a survivor that is due but still waits for a free slot,
a throttle token or a resume is *not* superseded any more; it runs, and the new job begins the
next burst. The decision depends on ``now`` and the burst alone, never on how fast the actor
got round to starting the survivor, so it is deterministic under ``MockClock``.

``mode="trailing"``: an enqueue of K while K's burst is open supersedes the survivor and becomes
the new survivor (``last_at = now``, ``due_at`` recomputed from the burst's ``first_at``);
otherwise it begins a new burst (``first_at = last_at = now``, ``due_at = now + wait``). So A, B, C
at 0, 1, 2 with wait 5: A is superseded by B, B by C, and C is due at 7 (or at ``0 + max_wait``
where that is earlier).

``mode="leading"``: an enqueue of K when K has no open burst is a *leading job*: due at once
(``due_at == now``; ``leading=True``), never superseded. It opens a *leading window*
``[first_at, first_at + wait)``. An enqueue landing in that window, or while a trailing burst
behind it is still open, joins that trailing burst exactly as in trailing mode (the first such
enqueue begins it, with its own ``first_at``; ``max_wait`` counts from the trailing burst's first
enqueue, not from the leading job's). Once the window has closed and the trailing burst (if any)
is due, K's burst is over and the next enqueue is a new leading job. Tie rule: an enqueue at
exactly ``first_at + wait`` (with no trailing burst open) is a new leading job. With ``wait=0``
every job is leading (trailing mode: every job is due at once and supersedes nothing).

What to journal (so that a restart keeps deadlines and first-enqueue times, as API.md promises):
for each debounced job, its key, whether it is ``leading``, the decision's ``first_at`` and
``due_at`` (as the job's run time), all converted to wall-clock seconds; ``last_at`` is the job's
own enqueue time. After a restart, call :meth:`restore` for every waiting (not started, not
finished) non-leading debounced job, and :meth:`restore_leading` for the newest leading job of
each key (finished or not: its window may still be open). Times that have passed while the process
was down leave the restored burst closed: its survivor is due at once.

The debouncer only tracks open bursts (plus closed ones not yet dropped); the survivor itself
lives in the core's delayed heap. :meth:`next_deadline` is when tracked state next changes by
itself; :meth:`expire` drops what has closed, so memory stays bounded by the number of keys with
an open burst.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from typing import Any

import attrs

from ._model import Debounce


@attrs.frozen
class DebounceDecision:
    """What :meth:`Debouncer.enqueue` decided for a new job.

    - ``due_at``: when the job may start (``== now`` for a leading job).
    - ``superseded``: the id of the job it replaces (cancel it with ``superseded_by`` set to the
      new id), or None.
    - ``leading``: the job is a leading job (leading mode): it starts at once.
    - ``first_at``: the first enqueue of the burst the job belongs to (its own ``now`` when it
      begins one; for a leading job, the start of its window). Journal it with the job.
    """

    due_at: float
    first_at: float
    superseded: str | None = None
    leading: bool = False


@attrs.frozen
class DebounceBurst:
    """A snapshot of one key's tracked burst (for journaling, inspection and tests).

    ``leading_id``/``leading_at``: the leading job and its enqueue time (leading mode; the window
    is ``[leading_at, leading_at + wait)``), or None. ``survivor``, ``first_at``, ``last_at``,
    ``due_at``: the trailing burst, or all None.
    """

    key: str
    leading_id: str | None
    leading_at: float | None
    survivor: str | None
    first_at: float | None
    last_at: float | None
    due_at: float | None


@attrs.define(eq=False)
class _Trail:
    survivor: str
    first_at: float
    last_at: float
    due_at: float


@attrs.define(eq=False)
class _Lead:
    job_id: str | None
    at: float


@attrs.define(eq=False)
class _Burst:
    lead: _Lead | None = None
    trail: _Trail | None = None
    token: int = 0  # the live heap entry of this burst carries this token


def resolve_key(config: Debounce, queue: str, payload: Any, explicit: object = None) -> str:
    """The debounce key of a job: ``explicit`` (``enqueue(debounce_key=)``), else
    ``config.key(payload)`` where a key function is given, else the queue name."""
    if explicit is not None:
        if not isinstance(explicit, str):
            raise TypeError(f"debounce_key must be a str (got {explicit!r})")
        return explicit
    if config.key is not None:
        key = config.key(payload)
        if not isinstance(key, str):
            raise TypeError(f"debounce key function must return a str (got {key!r})")
        return key
    return queue


@attrs.define(eq=False)
class Debouncer:
    """Debounce state of one queue, per key (see the module docstring for the exact rules)."""

    config: Debounce
    _bursts: dict[str, _Burst] = attrs.field(factory=dict, init=False, repr=False)
    # (time, token, key): lazily deleted; an entry is live while its token is its burst's token.
    _heap: list[tuple[float, int, str]] = attrs.field(factory=list, init=False, repr=False)
    _tokens: Iterator[int] = attrs.field(factory=lambda: itertools.count(1), init=False,
                                         repr=False)

    @property
    def wait(self) -> float:
        return float(self.config.wait)

    @property
    def max_wait(self) -> float | None:
        return None if self.config.max_wait is None else float(self.config.max_wait)

    @property
    def leading_mode(self) -> bool:
        return self.config.mode == "leading"

    def __len__(self) -> int:
        """Number of keys with tracked state."""
        return len(self._bursts)

    # ---- transitions

    def enqueue(self, key: str, job_id: str, now: float) -> DebounceDecision:
        """A job with debounce key ``key`` is enqueued at ``now``: when is it due, and which
        job (if any) does it supersede?"""
        now = float(now)
        burst = self._bursts.get(key)
        if burst is not None:
            if job_id == (burst.lead.job_id if burst.lead else None) or (
                burst.trail is not None and burst.trail.survivor == job_id
            ):
                raise ValueError(f"job {job_id!r} is already tracked for debounce key {key!r}")
            self._settle(burst, now)
            if burst.lead is None and burst.trail is None:
                burst = None
        if burst is None:
            burst = self._bursts[key] = _Burst()
            if self.leading_mode:
                burst.lead = _Lead(job_id, now)
                self._reschedule(key, burst)
                return DebounceDecision(due_at=now, leading=True, first_at=now)
        trail = burst.trail
        if trail is not None:  # open (settled): supersede its survivor
            superseded = trail.survivor
            trail.survivor = job_id
            trail.last_at = now
            trail.due_at = max(now, self._due(trail.first_at, now))
        else:  # a new trailing burst (behind an open leading window, in leading mode)
            superseded = None
            trail = burst.trail = _Trail(job_id, now, now, self._due(now, now))
        self._reschedule(key, burst)
        return DebounceDecision(due_at=trail.due_at, superseded=superseded, first_at=trail.first_at)

    def started(self, key: str, job_id: str) -> None:
        """A job of ``key`` started: where it is the survivor, its trailing burst is over. (A
        leading job starting changes nothing: its window runs on. Unknown ids are ignored.)"""
        self._end_trail(key, job_id)

    def cancelled(self, key: str, job_id: str) -> None:
        """A job of ``key`` was cancelled (not superseded by us): where it is the survivor, its
        trailing burst is over (the next enqueue begins a new one). A cancelled leading job
        leaves its window open. Unknown ids are ignored."""
        self._end_trail(key, job_id)

    def restore(self, key: str, job_id: str, *, first_at: float, last_at: float,
                due_at: float) -> None:
        """Rebuild a trailing burst from the journal after a restart: ``job_id`` is a waiting,
        non-leading debounced job; times are its journaled ones, converted to the runtime clock.
        ``due_at`` is kept as journaled (not recomputed). Where ``first_at > last_at`` (a wall
        clock stepped back) ``first_at`` is taken as ``last_at``.

        Restores may come in any order. Where the key already has a trailing burst, the newer
        one (later ``last_at``) is kept; one that began before the key's leading window
        (``first_at < leading_at``) is older than it and is not tracked. A job not tracked is
        left to run at its own due time."""
        last_at, due_at = float(last_at), float(due_at)
        first_at = min(float(first_at), last_at)
        burst = self._bursts.get(key)
        if burst is None:
            burst = self._bursts[key] = _Burst()
        if burst.lead is not None and first_at < burst.lead.at:
            return
        if burst.trail is not None and burst.trail.last_at >= last_at:
            return
        burst.trail = _Trail(job_id, first_at, last_at, due_at)
        self._reschedule(key, burst)

    def restore_leading(self, key: str, job_id: str | None, *, at: float) -> None:
        """Rebuild a leading window from the journal after a restart: ``job_id`` (None where it
        is no longer known) was the leading job of ``key``, enqueued at ``at`` (converted to the
        runtime clock). The newest window per key is kept; a trailing burst that began before it
        is dropped. Ignored in trailing mode (a queue respawned with another mode)."""
        if not self.leading_mode:
            return
        at = float(at)
        burst = self._bursts.get(key)
        if burst is None:
            burst = self._bursts[key] = _Burst()
        if burst.lead is not None and burst.lead.at >= at:
            return
        burst.lead = _Lead(job_id, at)
        if burst.trail is not None and burst.trail.first_at < at:
            burst.trail = None
        self._reschedule(key, burst)

    def expire(self, now: float) -> list[str]:
        """Drop every part of every burst that has closed by ``now`` (``deadline <= now``).
        Returns the survivors whose trailing bursts this call closed, by due time (ties in no
        particular order). (Bookkeeping
        only: the survivors are due in the core already. An enqueue that begins a new burst
        drops a closed one itself, without reporting it here.)"""
        due: list[tuple[float, str]] = []
        heap = self._heap
        closing = []
        while heap and heap[0][0] <= now:
            closing.append(heapq.heappop(heap))
        for _at, token, key in closing:
            burst = self._bursts.get(key)
            if burst is None or burst.token != token:
                continue
            if burst.trail is not None and burst.trail.due_at <= now:
                due.append((burst.trail.due_at, burst.trail.survivor))
            self._settle(burst, now)
            self._reschedule(key, burst)
        self._maybe_prune()
        due.sort(key=lambda item: item[0])
        return [job_id for _due, job_id in due]

    # ---- views

    def next_deadline(self) -> float | None:
        """The earliest time at which tracked state changes by itself (a trailing survivor
        becomes due, or a leading window closes), or None. Call :meth:`expire` then."""
        heap = self._heap
        while heap:
            at, token, key = heap[0]
            burst = self._bursts.get(key)
            if burst is not None and burst.token == token:
                return at
            heapq.heappop(heap)
        return None

    def burst(self, key: str) -> DebounceBurst | None:
        """A snapshot of ``key``'s tracked state, or None."""
        burst = self._bursts.get(key)
        if burst is None:
            return None
        lead, trail = burst.lead, burst.trail
        return DebounceBurst(
            key=key,
            leading_id=lead.job_id if lead else None,
            leading_at=lead.at if lead else None,
            survivor=trail.survivor if trail else None,
            first_at=trail.first_at if trail else None,
            last_at=trail.last_at if trail else None,
            due_at=trail.due_at if trail else None,
        )

    def bursts(self) -> list[DebounceBurst]:
        """Snapshots of every tracked key."""
        return [b for key in self._bursts if (b := self.burst(key)) is not None]

    def check_valid(self) -> None:
        """Assert the debouncer's invariants (for tests)."""
        live = {}
        for at, token, key in self._heap:
            burst = self._bursts.get(key)
            if burst is not None and burst.token == token:
                assert key not in live, f"two live heap entries for key {key!r}"
                live[key] = at
        for key, burst in self._bursts.items():
            assert burst.lead is not None or burst.trail is not None, f"empty burst for {key!r}"
            if burst.lead is not None:
                assert self.leading_mode, f"leading window for {key!r} in trailing mode"
            trail = burst.trail
            if trail is not None:
                assert trail.first_at <= trail.last_at, f"burst {key!r}: first after last"
                assert trail.due_at == trail.due_at, f"burst {key!r}: due_at is NaN"
                if burst.lead is not None:
                    assert trail.first_at >= burst.lead.at, f"burst {key!r} trails before its lead"
                    assert burst.lead.job_id != trail.survivor, f"burst {key!r}: lead == survivor"
            assert live.get(key) == self._deadline(burst), f"heap out of date for {key!r}"

    # ---- internals

    def _due(self, first_at: float, last_at: float) -> float:
        due = last_at + self.wait
        max_wait = self.max_wait
        if max_wait is not None:
            due = min(due, first_at + max_wait)
        return due

    def _settle(self, burst: _Burst, now: float) -> None:
        """Drop the parts of ``burst`` that have closed by ``now`` (tie: closed at the deadline)."""
        if burst.trail is not None and now >= burst.trail.due_at:
            burst.trail = None
        if burst.lead is not None and now >= burst.lead.at + self.wait:
            burst.lead = None

    def _deadline(self, burst: _Burst) -> float | None:
        times = []
        if burst.trail is not None:
            times.append(burst.trail.due_at)
        if burst.lead is not None:
            times.append(burst.lead.at + self.wait)
        return min(times) if times else None

    def _reschedule(self, key: str, burst: _Burst) -> None:
        """Give ``burst`` one fresh heap entry at its next deadline, or forget an empty one."""
        burst.token = next(self._tokens)
        deadline = self._deadline(burst)
        if deadline is None:
            if self._bursts.get(key) is burst:
                del self._bursts[key]
            return
        heapq.heappush(self._heap, (deadline, burst.token, key))
        self._maybe_prune()

    def _end_trail(self, key: str, job_id: str) -> None:
        burst = self._bursts.get(key)
        if burst is not None and burst.trail is not None and burst.trail.survivor == job_id:
            burst.trail = None
            self._reschedule(key, burst)

    def _maybe_prune(self) -> None:
        if len(self._heap) > 2 * len(self._bursts) + 64:
            bursts = self._bursts
            self._heap = [e for e in self._heap
                          if (b := bursts.get(e[2])) is not None and b.token == e[1]]
            heapq.heapify(self._heap)
