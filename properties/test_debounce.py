"""State machine of the pure Debouncer, checked against the job history.

Time moves only forward: ``advance`` by a drawn ``dt >= 0``, or up to the next instant at which
something is due (so that ties with deadlines are hit exactly). The model keeps every job ever
enqueued (key, enqueue time, due time, state, superseded_by) and derives from that history alone
what each enqueue must decide: a job is superseded iff its burst is still open (it waits and
``now < due``), a leading job leads iff no burst of its key is open. A ``reopen`` rule throws the
debouncer away and rebuilds one from what the journal would hold (``restore``/``restore_leading``)
and the run goes on as if nothing happened. Bookkeeping (``burst``, ``next_deadline``, ``expire``)
is compared with a small reference of what must be tracked.
"""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from actorq._debounce import DebounceBurst, DebounceDecision, Debouncer
from actorq._model import Debounce

KEYS = ["a", "b", "c"]
keys = st.sampled_from(["a", "a", "a", "b", "c"])  # mostly one key, so bursts form
waits = st.one_of(st.sampled_from([0.5, 1.0, 2.5, 3.0]), st.floats(0, 5), st.just(0.0))
extras = st.one_of(st.none(), st.sampled_from([0.0, 0.5, 2.0]), st.floats(0, 5))
starts = st.sampled_from([0.0, 0.1, 12345.678])
dts = st.one_of(st.just(0.0), st.sampled_from([0.25, 0.5, 1.0, 2.5]), st.floats(0, 8))


@attrs.define
class MJob:
    id: str
    key: str
    enq: float
    due: float
    leading: bool
    first_at: float
    state: str = "waiting"  # waiting | started | cancelled | superseded
    superseded_by: str | None = None


@attrs.define
class Ref:
    """What the debouncer must track for one key: a leading window and a trailing burst."""

    lead: tuple[str | None, float] | None = None  # (job id, enqueue time)
    trail: dict[str, Any] | None = None  # survivor, first_at, last_at, due_at


class DebounceMachine(RuleBasedStateMachine):
    @initialize(leading=st.booleans(), wait=waits, extra=extras, start=starts)
    def init(self, leading, wait, extra, start):
        max_wait = None if extra is None else wait + extra
        self.config = Debounce(wait, mode="leading" if leading else "trailing", max_wait=max_wait)
        self.leading_mode = leading
        self.wait = wait
        self.max_wait = max_wait
        self.debouncer = Debouncer(self.config)
        self.now = start
        self.jobs: dict[str, MJob] = {}
        self.order: list[str] = []
        self.ref: dict[str, Ref] = {}

    # ---- helpers

    def open_survivor(self, key: str) -> MJob | None:
        """The job of ``key`` that an enqueue now would supersede: waiting, not due yet."""
        found = [j for j in self.jobs.values()
                 if j.key == key and j.state == "waiting" and self.now < j.due]
        assert len(found) <= 1, f"two open survivors for key {key!r}: {found}"
        return found[0] if found else None

    def window_open(self, key: str) -> bool:
        return any(j.key == key and j.leading and self.now < j.enq + self.wait
                   for j in self.jobs.values())

    def due_for(self, first_at: float, last_at: float) -> float:
        due = last_at + self.wait
        if self.max_wait is not None:
            due = min(due, first_at + self.max_wait)
        return max(last_at, due)

    def ref_settle(self, key: str) -> None:
        ref = self.ref.get(key)
        if ref is None:
            return
        if ref.trail is not None and self.now >= ref.trail["due_at"]:
            ref.trail = None
        if ref.lead is not None and self.now >= ref.lead[1] + self.wait:
            ref.lead = None
        if ref.lead is None and ref.trail is None:
            del self.ref[key]

    def ref_deadline(self, ref: Ref) -> float:
        times = []
        if ref.trail is not None:
            times.append(ref.trail["due_at"])
        if ref.lead is not None:
            times.append(ref.lead[1] + self.wait)
        return min(times)

    def waiting(self, due_only: bool) -> list[MJob]:
        return [j for j in (self.jobs[i] for i in self.order)
                if j.state == "waiting" and (not due_only or j.due <= self.now)]

    def end(self, job: MJob, state: str) -> None:
        job.state = state
        ref = self.ref.get(job.key)
        if ref is not None and ref.trail is not None and ref.trail["survivor"] == job.id:
            ref.trail = None
            if ref.lead is None:
                del self.ref[job.key]

    # ---- time

    @rule(dt=dts)
    def advance(self, dt):
        self.now += dt

    @rule(fraction=st.one_of(st.sampled_from([0.1, 0.5, 0.9]), st.floats(0, 1.5)))
    def advance_by_a_fraction_of_wait(self, fraction):
        self.now += fraction * self.wait

    @precondition(lambda self: any(
        t > self.now for j in self.jobs.values()
        for t in ([j.due] + ([j.enq + self.wait] if j.leading else []))))
    @rule(data=st.data())
    def advance_to_a_deadline(self, data):
        """Land exactly on a due time or a leading window's end (the tie cases)."""
        times = sorted({t for j in self.jobs.values()
                        for t in [j.due] + ([j.enq + self.wait] if j.leading else [])
                        if t > self.now})
        self.now = data.draw(st.sampled_from(times[:3]))

    # ---- transitions

    @rule(key=keys)
    def enqueue(self, key):
        now = self.now
        job_id = f"j{len(self.order) + 1}"
        # What the history says must happen.
        survivor = self.open_survivor(key)
        expect_leading = self.leading_mode and survivor is None and not self.window_open(key)
        if expect_leading:
            expected = DebounceDecision(due_at=now, first_at=now, leading=True)
        else:
            first_at = survivor.first_at if survivor is not None else now
            expected = DebounceDecision(
                due_at=self.due_for(first_at, now), first_at=first_at,
                superseded=survivor.id if survivor is not None else None)
        if any(j.key == key and j.state == "waiting" and j.due == now and not j.leading
               for j in self.jobs.values()):
            event("enqueue exactly at a survivor's due time")
        if self.leading_mode and any(j.key == key and j.leading and j.enq + self.wait == now
                                     for j in self.jobs.values()):
            event("enqueue exactly at a leading window's end")
        event("leading" if expect_leading else "supersedes" if survivor else "new burst")
        decision = self.debouncer.enqueue(key, job_id, now)
        assert decision == expected, f"enqueue({key!r}, {job_id!r}, {now!r})"
        # Record it.
        job = MJob(job_id, key, now, decision.due_at, decision.leading, decision.first_at)
        self.jobs[job_id] = job
        self.order.append(job_id)
        if survivor is not None:
            survivor.state = "superseded"
            survivor.superseded_by = job_id
        # What must now be tracked.
        self.ref_settle(key)
        ref = self.ref.setdefault(key, Ref())
        if decision.leading:
            ref.lead, ref.trail = (job_id, now), None
        else:
            ref.trail = {"survivor": job_id, "first_at": decision.first_at, "last_at": now,
                         "due_at": decision.due_at}

    @rule(key=keys, fractions=st.lists(st.floats(0, 1.2), min_size=1, max_size=5))
    def enqueue_a_burst(self, key, fractions):
        """Several enqueues of one key, each a fraction of ``wait`` after the one before."""
        for fraction in fractions:
            self.enqueue(key)
            self.now += fraction * self.wait

    @precondition(lambda self: self.waiting(due_only=True))
    @rule(data=st.data())
    def start_a_due_job(self, data):
        job = data.draw(st.sampled_from(self.waiting(due_only=True)))
        self.debouncer.started(job.key, job.id)
        self.end(job, "started")

    @precondition(lambda self: self.waiting(due_only=False))
    @rule(data=st.data())
    def cancel_a_waiting_job(self, data):
        job = data.draw(st.sampled_from(self.waiting(due_only=False)))
        self.debouncer.cancelled(job.key, job.id)
        self.end(job, "cancelled")

    @rule()
    def expire(self):
        expected = {ref.trail["survivor"] for ref in self.ref.values()
                    if ref.trail is not None and ref.trail["due_at"] <= self.now}
        got = self.debouncer.expire(self.now)
        assert len(got) == len(set(got)) and set(got) == expected
        assert [self.jobs[i].due for i in got] == sorted(self.jobs[i].due for i in got)
        for key in list(self.ref):
            self.ref_settle(key)

    @rule(data=st.data())
    def reopen(self, data):
        """A restart: rebuild from what the journal holds, in any order."""
        calls: list[tuple[str, MJob]] = []
        latest_lead: dict[str, MJob] = {}
        for job in (self.jobs[i] for i in self.order):
            if job.leading:
                latest_lead[job.key] = job
            elif job.state == "waiting":
                calls.append(("trail", job))
        calls += [("lead", job) for job in latest_lead.values()]
        calls = data.draw(st.permutations(calls))
        self.debouncer = Debouncer(self.config)
        self.ref = {}
        for kind, job in calls:
            ref = self.ref.setdefault(job.key, Ref())
            if kind == "lead":
                self.debouncer.restore_leading(job.key, job.id, at=job.enq)
                if ref.lead is None or ref.lead[1] < job.enq:
                    ref.lead = (job.id, job.enq)
                    if ref.trail is not None and ref.trail["first_at"] < job.enq:
                        ref.trail = None
            else:
                self.debouncer.restore(job.key, job.id, first_at=job.first_at, last_at=job.enq,
                                       due_at=job.due)
                if ref.lead is not None and job.first_at < ref.lead[1]:
                    continue
                if ref.trail is not None and ref.trail["last_at"] >= job.enq:
                    continue
                ref.trail = {"survivor": job.id, "first_at": job.first_at, "last_at": job.enq,
                             "due_at": job.due}
        self.ref = {k: r for k, r in self.ref.items() if r.lead is not None or r.trail is not None}

    # ---- invariants

    @invariant()
    def valid(self):
        self.debouncer.check_valid()

    @invariant()
    def at_most_one_survivor_per_key_and_it_is_the_latest_enqueue(self):
        for key in KEYS:
            survivor = self.open_survivor(key)
            if survivor is not None:
                latest = [i for i in self.order if self.jobs[i].key == key][-1]
                assert survivor.id == latest, f"survivor {survivor.id} is not the latest {latest}"

    @invariant()
    def due_times_are_within_bounds(self):
        for job in self.jobs.values():
            if job.leading:
                assert job.due == job.enq
                assert job.state != "superseded", "a leading job was superseded"
                continue
            assert job.first_at <= job.enq <= job.due
            assert job.due <= job.enq + self.wait
            if self.max_wait is not None:
                assert job.due <= job.first_at + self.max_wait
            assert job.due == self.due_for(job.first_at, job.enq)

    @invariant()
    def superseded_chains_are_consistent(self):
        predecessor: dict[str, str] = {}
        for job in self.jobs.values():
            assert (job.state == "superseded") == (job.superseded_by is not None)
            if job.superseded_by is None:
                continue
            new = self.jobs[job.superseded_by]
            assert new.key == job.key and not new.leading
            assert new.enq >= job.enq and new.first_at == job.first_at
            assert new.enq < job.due, "a job was superseded at or after its due time"
            assert job.superseded_by not in predecessor, "a job superseded two jobs"
            predecessor[job.superseded_by] = job.id
        for job in self.jobs.values():
            # Back to the root: the burst's first job, enqueued at first_at.
            root, seen = job, set()
            while root.id in predecessor:
                assert root.id not in seen, "a cycle of supersedes"
                seen.add(root.id)
                root = self.jobs[predecessor[root.id]]
            assert root.first_at == root.enq == job.first_at or job.leading
            # Forward to the survivor: a job that is not superseded.
            end, hops = job, 0
            while end.superseded_by is not None:
                end = self.jobs[end.superseded_by]
                hops += 1
                assert hops <= len(self.jobs), "a cycle of supersedes"

    @invariant()
    def bookkeeping_matches_the_reference(self):
        for key in KEYS:
            ref = self.ref.get(key)
            expected = None
            if ref is not None:
                lead, trail = ref.lead, ref.trail
                expected = DebounceBurst(
                    key, lead[0] if lead else None, lead[1] if lead else None,
                    *((trail["survivor"], trail["first_at"], trail["last_at"], trail["due_at"])
                      if trail else (None, None, None, None)))
            assert self.debouncer.burst(key) == expected
        deadlines = [self.ref_deadline(r) for r in self.ref.values()]
        assert self.debouncer.next_deadline() == (min(deadlines) if deadlines else None)
        assert len(self.debouncer) == len(self.ref)


TestDebounce = DebounceMachine.TestCase
