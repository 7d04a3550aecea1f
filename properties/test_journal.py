"""The LMDB journal as a state machine against a model: a dict of id -> record and the list of
committed events (DESIGN.md tier 2: anything durable gets a ``reopen`` and a ``crash`` rule).

The model mirrors the pure ``apply_event``, which decides whether a transition is valid (it is
checked on its own first, against a reference written with ``attrs.evolve`` from the transitions
``_model.py`` documents). What the state machine checks is the persistence around it: one
transaction per commit, sequence numbers, the record table, the state index (``live``,
``live_entries``, ``list``, ``running``), the counts, the log, the ``done`` index
(``finished_since``), retention (which finished jobs a commit's policies remove, with their
index and log entries), boot epochs and the marking of interrupted attempts at open. A commit
aborted by a ``before_commit`` hook leaves nothing behind,
in this process or after a reopen.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from actorq import _model
from actorq._journal import Journal, rank_key
from actorq._model import (
    LIVE_STATES,
    AttemptFailed,
    Cancelled,
    Due,
    Enqueued,
    Event,
    Failed,
    Interrupted,
    JobRecord,
    JobState,
    Requeued,
    Retention,
    Started,
    Succeeded,
    apply_event,
)
from properties.test_codec import EVENTS_BY_TYPE, RECORDS  # every field of every event drawn

QUEUES = ("a", "ab")  # one a prefix of the other: the indexes must keep them apart
IDS = tuple(f"id{i}" for i in range(8))
S = JobState

PAYLOADS = st.one_of(
    st.none(), st.integers(-3, 3), st.text(max_size=4),
    st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.sampled_from("xy"), st.booleans()),
)

# An event is drawn as a spec: its kind, a pick (which job: among the jobs the transition fits,
# mostly, or a new id for an enqueue; now and then any id, so that refused transitions are
# exercised too) and its details. The rule builds it against the current time, epoch and records.
PICKS = st.integers(0, 9)
ENQUEUE_SPECS = st.tuples(st.just("enq"), PICKS, st.sampled_from(QUEUES + ("a",)),
                          st.integers(0, 3), st.sampled_from([None, 5.0]), PAYLOADS)
EVENT_SPECS = st.one_of(
    ENQUEUE_SPECS,
    ENQUEUE_SPECS,  # twice as likely as each other kind
    st.tuples(st.just("start"), PICKS),
    st.tuples(st.just("due"), PICKS),
    st.tuples(st.just("ok"), PICKS, PAYLOADS),
    st.tuples(st.just("retry"), PICKS, st.sampled_from([None, 3.0])),
    st.tuples(st.just("fail"), PICKS),
    st.tuples(st.just("cancel"), PICKS, st.none() | st.sampled_from(IDS)),
    st.tuples(st.just("requeue"), PICKS),
)
FITS = {
    "start": lambda r: r.state in (S.PENDING, S.DELAYED) and not r.interrupted,
    "due": lambda r: r.state is S.DELAYED,
    "ok": lambda r: r.state is S.RUNNING,
    "retry": lambda r: r.state is S.RUNNING or r.interrupted,
    "fail": lambda r: not r.state.terminal,
    "cancel": lambda r: not r.state.terminal,
    "requeue": lambda r: r.state is S.RUNNING,
}
BATCHES = st.lists(EVENT_SPECS, min_size=1, max_size=4)


# ---- apply_event against a reference

_S_LIVE = (S.PENDING, S.DELAYED)


def reference_apply(rec: JobRecord | None, ev: Event, seq: int) -> JobRecord | None:
    """Each transition as ``_model.py`` documents it, written with ``attrs.evolve``."""
    if isinstance(ev, Enqueued):
        return None if rec is not None else attrs.evolve(ev.record, seq=seq, log=(seq,))
    if rec is None or rec.state.terminal:
        return None
    log = rec.log + (seq,)
    state = rec.state
    if isinstance(ev, Started):
        if state not in _S_LIVE or rec.interrupted:
            return None
        return attrs.evolve(rec, state=S.RUNNING, attempts=ev.attempt, started_at=ev.at,
                            epoch=ev.epoch, run_at=None, log=log)
    if isinstance(ev, Due):
        if state is not S.DELAYED:
            return None
        return attrs.evolve(rec, state=S.PENDING, run_at=None, log=log)
    if isinstance(ev, Succeeded):
        if state is not S.RUNNING:
            return None
        return attrs.evolve(rec, state=S.COMPLETED, result=ev.result, finished_at=ev.at, log=log)
    if isinstance(ev, AttemptFailed):
        if state is not S.RUNNING and not rec.interrupted:
            return None
        if ev.retry_at is not None and ev.retry_at > ev.at:  # retried later: delayed till then
            return attrs.evolve(rec, state=S.DELAYED, error=ev.error, run_at=ev.retry_at,
                                ready_at=ev.retry_at, interrupted=False, log=log)
        return attrs.evolve(rec, state=S.PENDING, error=ev.error, run_at=None, ready_at=ev.at,
                            interrupted=False, log=log)
    if isinstance(ev, Failed):
        return attrs.evolve(rec, state=S.FAILED, error=ev.error, finished_at=ev.at, run_at=None,
                            interrupted=False, log=log)
    if isinstance(ev, Cancelled):
        return attrs.evolve(rec, state=S.CANCELLED, finished_at=ev.at, run_at=None,
                            superseded_by=ev.superseded_by, interrupted=False, log=log)
    if isinstance(ev, Requeued):  # stopped by us: the attempt does not count
        if state is not S.RUNNING:
            return None
        return attrs.evolve(rec, state=S.PENDING, attempts=max(rec.attempts - 1, 0), log=log)
    if isinstance(ev, Interrupted):  # cut short by a crash: the retry policy decides on spawn
        if state is not S.RUNNING:
            return None
        return attrs.evolve(rec, state=S.PENDING, error=ev.error, interrupted=True, log=log)
    raise AssertionError(ev)


FITTING_STATES = {
    Started: (S.PENDING, S.DELAYED), Due: (S.DELAYED,), Succeeded: (S.RUNNING,),
    AttemptFailed: (S.RUNNING,), Failed: LIVE_STATES, Cancelled: LIVE_STATES,
    Requeued: (S.RUNNING,), Interrupted: (S.RUNNING,),
}


@given(data=st.data(), seq=st.integers(1, 2**40))
def test_apply_event_matches_reference(data: st.DataObject, seq: int) -> None:
    """Every event type, each on a record it fits (mostly, and then a record as a live job has
    it: a due time while delayed, an attempt counted while running, not finished), on any
    record, or on no record."""
    for kind, events in EVENTS_BY_TYPE.items():
        ev = data.draw(events, label=kind.__name__)
        held = data.draw(st.sampled_from([True, True, True, False]), label="held")
        rec = data.draw(RECORDS, label="record") if held else None
        if rec is not None:
            rec = attrs.evolve(rec, id=ev.record.id if isinstance(ev, Enqueued) else ev.id)
            fit = data.draw(st.sampled_from([True, True, True, True, False]), label="fit")
            if fit and kind in FITTING_STATES:
                state = data.draw(st.sampled_from(FITTING_STATES[kind]), label="state")
                run_at = rec.run_at
                if state is S.DELAYED and run_at is None:  # a delayed job has a due time
                    run_at = rec.ready_at
                rec = attrs.evolve(
                    rec, state=state, run_at=run_at, finished_at=None, result=None,
                    interrupted=False if kind is Started else rec.interrupted,
                    attempts=max(rec.attempts, 1) if state is S.RUNNING else rec.attempts)
        got = apply_event(rec, ev, seq)
        want = reference_apply(rec, ev, seq)
        assert got == want, f"apply_event({rec!r}, {ev!r}) =\n{got!r}\n expected\n{want!r}"


# ---- the journal state machine


RANKS = st.tuples(
    st.integers(-(2**63), 2**63 - 1),  # priority: any int a job may have
    st.floats(allow_nan=False).map(lambda x: x + 0.0),  # ready_at (-0.0 is 0.0)
    st.integers(0, 2**64 - 1),  # seq
)


@given(ranks=st.lists(RANKS, min_size=2, max_size=20, unique=True))
def test_ready_index_keys_sort_as_ranks(ranks: list[tuple[int, float, int]]) -> None:
    """The ready index's byte order is the start order (priority, ready_at, seq), whatever
    the signs and sizes of its numbers; an interrupted job's key sorts before all others."""
    keys = {rank_key(b"q\x00", *rank): rank for rank in ranks}
    assert [keys[k] for k in sorted(keys)] == sorted(ranks)
    assert max(rank_key(b"q\x00", *r, interrupted=True) for r in ranks) < min(keys)


class Crash(Exception):
    """The process died before this commit was durable."""


def event_id(ev: Event) -> str:
    return ev.record.id if isinstance(ev, Enqueued) else ev.id


def running_order(rec: JobRecord) -> tuple[bytes, int]:
    """The order of the state index: queue, then enqueue sequence number."""
    return (rec.queue.encode() + b"\x00", rec.seq)


class JournalMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="actorq-journal-prop-")
        self.journal = Journal(self.dir, sync=False)
        self.epoch = 1
        assert self.journal.epoch == self.epoch
        self.records: dict[str, JobRecord] = {}
        self.log: list[tuple[int, Event]] = []
        self.next_seq = 1
        self.now = 1_700_000_000.0

    def teardown(self) -> None:
        self.journal.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- model

    def build(self, specs: list[tuple]) -> list[Event]:
        """The events of a batch; each picks its job from the records as the batch's earlier
        events leave them."""
        records = dict(self.records)
        events = []
        for spec in specs:
            ev = self._build(spec, records)
            events.append(ev)
            new = apply_event(records.get(event_id(ev)), ev, 0)
            if new is not None:
                records[event_id(ev)] = new
        return events

    def _build(self, spec: tuple, records: dict[str, JobRecord]) -> Event:
        kind, now = spec[0], self.now
        if kind == "enq":
            _, pick, queue, priority, delay, payload = spec
            fresh = [i for i in IDS if i not in records]
            job_id = fresh[0] if fresh and pick < 8 else IDS[pick % len(IDS)]
            delayed = delay is not None
            return Enqueued(JobRecord(
                id=job_id, queue=queue, state=S.DELAYED if delayed else S.PENDING,
                payload=payload, priority=priority, seq=0, created_at=now,
                ready_at=now + delay if delayed else now,
                run_at=now + delay if delayed else None))
        pick = spec[1]
        fitting = sorted(i for i, r in records.items() if FITS[kind](r))
        job_id = fitting[pick % len(fitting)] if fitting and pick < 8 else IDS[pick % len(IDS)]
        if kind == "start":
            rec = records.get(job_id)
            return Started(job_id, now, (rec.attempts if rec else 0) + 1, self.epoch)
        if kind == "due":
            return Due(job_id, now)
        if kind == "ok":
            return Succeeded(job_id, now, spec[2])
        if kind == "retry":
            return AttemptFailed(job_id, now, "ValueError: boom",
                                 None if spec[2] is None else now + spec[2])
        if kind == "fail":
            return Failed(job_id, now, "ValueError: boom")
        if kind == "cancel":
            return Cancelled(job_id, now, spec[2])
        if kind == "requeue":
            return Requeued(job_id, now)
        raise AssertionError(kind)

    def fold(self, events: list[Event]) -> tuple[dict, list, list]:
        """What committing ``events`` in one transaction makes of the model."""
        records = dict(self.records)
        applied = []
        results = []
        seq = self.next_seq
        for ev in events:
            new = apply_event(records.get(event_id(ev)), ev, seq)
            results.append(new)
            if new is not None:
                records[event_id(ev)] = new
                applied.append((seq, ev))
                seq += 1
        return records, applied, results

    def accept(self, records: dict, applied: list) -> None:
        self.records = records
        self.log.extend(applied)
        self.next_seq += len(applied)

    # ---- rules

    @rule(specs=BATCHES, dt=st.sampled_from([0.0, 1.0, 10.0]))
    def commit(self, specs: list[tuple], dt: float) -> None:
        self.now += dt
        events = self.build(specs)
        records, applied, expected = self.fold(events)
        results = self.journal.commit(events)
        assert results == expected, f"commit({events}) returned {results}, expected {expected}"
        self.accept(records, applied)

    @rule(specs=BATCHES, dt=st.sampled_from([0.0, 1.0, 10.0]),
          queues=st.sets(st.sampled_from(QUEUES), min_size=1),
          max_age=st.sampled_from([5.0, 15.0, 1e6]), max_count=st.integers(0, 3))
    def commit_with_retention(self, specs: list[tuple], dt: float, queues: set[str],
                              max_age: float, max_count: int) -> None:
        """A commit that also trims ``queues`` (as a round that finished jobs does)."""
        self.now += dt
        events = self.build(specs)
        records, applied, expected = self.fold(events)
        policy = Retention(max_age=max_age, max_count=max_count)
        results = self.journal.commit(events, retention=dict.fromkeys(queues, policy),
                                      now=self.now)
        assert results == expected, f"commit({events}) returned {results}, expected {expected}"
        self.accept(records, applied)
        for queue in sorted(queues):
            self.trim(queue, policy)

    def trim(self, queue: str, policy: Retention) -> None:
        """The model's retention: ``queue``'s finished jobs in the order they finished (their
        last transition) leave, the oldest first, while more than ``max_count`` remain or they
        finished before ``now - max_age``; the first one that is neither stays, and so do all
        after it. A job leaves with its log entries."""
        finished = sorted((r for r in self.records.values()
                           if r.queue == queue and r.state not in LIVE_STATES),
                          key=lambda r: r.log[-1])
        excess = len(finished) - policy.max_count
        cutoff = self.now - policy.max_age
        gone: set[int] = set()
        for i, rec in enumerate(finished):
            if i >= excess and (rec.finished_at or 0.0) >= cutoff:
                break
            del self.records[rec.id]
            gone.update(rec.log)
        self.log = [(seq, ev) for seq, ev in self.log if seq not in gone]

    def _failing_commit(self, specs: list[tuple]) -> None:
        events = self.build(specs)

        def hook() -> None:
            raise Crash("injected: the transaction must not commit")

        self.journal.before_commit = hook
        try:
            self.journal.commit(events)
        except Crash:
            pass
        else:
            raise AssertionError("the before_commit hook's exception did not propagate")
        finally:
            self.journal.before_commit = None
        # nothing of it is visible, before any reopen
        assert self.journal.log() == self.log, (
            f"an aborted commit left log entries: {self.journal.log()[len(self.log):]}")
        self.records_match()

    @rule(specs=BATCHES)
    def failed_commit(self, specs: list[tuple]) -> None:
        """A commit fails (as a failed fsync would) and the journal is used on: nothing of it
        may be visible, and the next commit goes on from the same sequence number."""
        self._failing_commit(specs)

    @rule(specs=BATCHES)
    def crash(self, specs: list[tuple]) -> None:
        """The process dies during a commit: nothing of it survives the reopen."""
        self._failing_commit(specs)
        self._reopen()

    @rule(dt=st.sampled_from([0.0, 100.0]))
    def reopen(self, dt: float) -> None:
        self.now += dt
        self._reopen()

    @precondition(lambda self: any(r.state is S.RUNNING and r.epoch == self.epoch
                                   for r in self.records.values()))
    @rule()
    def clean_stop(self) -> None:
        """A clean stop puts this epoch's running jobs back to pending, attempt uncounted."""
        stopping = sorted((r for r in self.records.values()
                           if r.state is S.RUNNING and r.epoch == self.epoch), key=running_order)
        events = [Requeued(r.id, self.now) for r in stopping]
        records, applied, expected = self.fold(events)
        assert self.journal.requeue_running(self.now) == [r for r in expected if r is not None]
        self.accept(records, applied)
        self._reopen()

    def _reopen(self) -> None:
        self.journal.close()
        self.journal = Journal(self.dir, sync=False)
        self.epoch += 1
        # the next sequence number follows the last log entry held: where retention removed
        # the last ones, their numbers are used again (by design: nothing else refers to them)
        self.next_seq = (self.log[-1][0] if self.log else 0) + 1
        assert self.journal.epoch == self.epoch, (
            f"boot epoch {self.journal.epoch} after a reopen, expected {self.epoch}")
        stale = sorted((r for r in self.records.values()
                        if r.state is S.RUNNING and r.epoch < self.epoch), key=running_order)
        interrupted = self.journal.interrupt_stale(self.now)
        written = self.journal.log(self.next_seq)
        assert [event_id(ev) for _seq, ev in written] == [r.id for r in stale], (
            f"interrupt_stale wrote {written}, expected interruptions of "
            f"{[r.id for r in stale]}")
        events = []
        for _seq, ev in written:
            assert isinstance(ev, Interrupted) and ev.at == self.now, ev
            assert "interrupted" in ev.error.lower(), ev.error
            events.append(ev)
        records, applied, expected = self.fold(events)
        assert applied == written
        assert interrupted == expected
        self.accept(records, applied)

    # ---- invariants

    @invariant()
    def records_match(self) -> None:
        for job_id in IDS:
            got = self.journal.get(job_id)
            assert got == self.records.get(job_id), (
                f"journal.get({job_id!r}) = {got}, model {self.records.get(job_id)}")

    @invariant()
    def indexes_match(self) -> None:
        for queue in QUEUES:
            mine = sorted((r for r in self.records.values() if r.queue == queue),
                          key=lambda r: r.seq)
            live = [r for r in mine if r.state in LIVE_STATES]
            assert self.journal.live(queue) == live, f"live({queue!r})"
            if hasattr(self.journal, "live_entries"):  # the state index's copy, for recovery
                entries = [_model.LiveEntry.from_record(r) for r in live]
                assert self.journal.live_entries(queue) == entries, f"live_entries({queue!r})"
            # the ready index: pending jobs in start order, interrupted ones apart (first)
            pending = sorted((r for r in live if r.state is S.PENDING),
                             key=lambda r: (r.priority, r.ready_at, r.seq))
            waiting = [_model.LiveEntry.from_record(r) for r in pending if not r.interrupted]
            assert self.journal.ready_entries(queue, None, len(IDS) + 1) == waiting
            for i, e in enumerate(waiting):  # read on from any entry, a page at a time
                after = (e.priority, e.ready_at, e.seq)
                assert self.journal.ready_entries(queue, after, 2) == waiting[i + 1:i + 3]
            delayed = sorted((r for r in live if r.state is S.DELAYED),
                             key=lambda r: (r.ready_at, r.seq))
            by_due = [_model.LiveEntry.from_record(r) for r in delayed]
            assert self.journal.delayed_entries(queue, None, len(IDS) + 1) == by_due
            for i, e in enumerate(by_due):
                after = (e.ready_at, e.seq)
                assert self.journal.delayed_entries(queue, after, 2) == by_due[i + 1:i + 3]
            assert self.journal.interrupted_entries(queue) == [
                _model.LiveEntry.from_record(r) for r in pending if r.interrupted]
            assert self.journal.list(queue) == mine, f"list({queue!r})"
            for state in S:
                assert self.journal.list(queue, state) == [r for r in mine if r.state is state]
            counts = Counter(r.state for r in mine)
            assert self.journal.counts(queue) == {s: counts[s] for s in S}, f"counts({queue!r})"
        running = sorted((r for r in self.records.values() if r.state is S.RUNNING),
                         key=running_order)
        assert self.journal.running() == running

    @invariant()
    def done_index_matches(self) -> None:
        """The ``done`` index holds each finished job once, in the order they finished."""
        for queue in QUEUES:
            finished = sorted((r for r in self.records.values()
                               if r.queue == queue and r.state not in LIVE_STATES),
                              key=lambda r: r.log[-1], reverse=True)
            assert self.journal.finished_since(queue, float("-inf")) == finished
        with self.journal.env.begin(db=self.journal.dbs["done"]) as txn:
            held = txn.stat(self.journal.dbs["done"])["entries"]
        assert held == sum(r.state not in LIVE_STATES for r in self.records.values())

    @invariant()
    def log_holds_exactly_the_committed_events(self) -> None:
        assert self.journal.log() == self.log


JournalMachine.TestCase.settings = settings(
    JournalMachine.TestCase.settings, stateful_step_count=40,
    max_examples=min(JournalMachine.TestCase.settings.max_examples, 60),
)
TestJournal = JournalMachine.TestCase
