"""The journal's fast paths keep its meaning: the constructor-based ``apply_event`` folds as the
``attrs.evolve`` one did, the write path's record cache never outlives a failed commit nor shares
a mutable payload with a caller, the counts are right when written once per commit, and the state
index's copy of each live job (``live_entries``) follows every transition.
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import actorq
from actorq._journal import _Q, Journal
from actorq._model import (
    AttemptFailed,
    Cancelled,
    Due,
    Enqueued,
    Failed,
    Interrupted,
    JobRecord,
    JobState,
    LiveEntry,
    Requeued,
    Retention,
    Started,
    Succeeded,
    apply_event,
)
from properties.test_journal import reference_apply as reference_apply_event

S = JobState


def record(job_id: str, queue: str = "q", *, state: JobState = S.PENDING, payload=None,
           at: float = 1_000.0, **changes) -> JobRecord:
    fields = {"priority": 2, "seq": 0, "created_at": at, "ready_at": at, **changes}
    return JobRecord(id=job_id, queue=queue, state=state, payload=payload, **fields)


# ---------------------------------------------------------------------------------------------
# apply_event: the same fold as the attrs.evolve version it replaced


_times = st.floats(0, 2e9, allow_nan=False)
_opt_times = st.none() | _times
_text = st.text(max_size=6)
_records = st.builds(
    JobRecord, id=st.just("j"), queue=st.sampled_from(["q", "r"]),
    state=st.sampled_from(JobState), payload=st.none() | st.integers() | st.lists(st.integers()),
    priority=st.integers(-3, 3), seq=st.integers(0, 99), created_at=_times, ready_at=_times,
    run_at=_opt_times, attempts=st.integers(0, 5), max_attempts=st.none() | st.integers(1, 5),
    timeout=st.none() | st.floats(0.5, 9), started_at=_opt_times, finished_at=_opt_times,
    result=st.none() | _text, error=st.none() | _text, superseded_by=st.none() | _text,
    epoch=st.integers(0, 9), interrupted=st.booleans(), debounce_key=st.none() | _text,
    debounce_first_at=_opt_times, leading=st.booleans(),
    log=st.lists(st.integers(0, 99), max_size=3).map(tuple),
)
_events = st.one_of(
    st.builds(Enqueued, _records),
    st.builds(Started, st.just("j"), _times, st.integers(0, 9), st.integers(0, 9)),
    st.builds(Due, st.just("j"), _times),
    st.builds(Succeeded, st.just("j"), _times, st.none() | _text),
    st.builds(AttemptFailed, st.just("j"), _times, _text, _opt_times),
    st.builds(Failed, st.just("j"), _times, _text),
    st.builds(Cancelled, st.just("j"), _times, st.none() | _text),
    st.builds(Requeued, st.just("j"), _times),
    st.builds(Interrupted, st.just("j"), _times, _text),
)


@settings(max_examples=300, deadline=None)
@given(rec=st.none() | _records, events=st.lists(_events, min_size=1, max_size=6))
def test_apply_event_folds_like_the_evolve_version(rec, events):
    mine = theirs = rec
    for seq, ev in enumerate(events, start=100):
        a, b = apply_event(mine, ev, seq), reference_apply_event(theirs, ev, seq)
        assert a == b
        assert type(a) is type(b)
        if a is not None:
            mine, theirs = a, b


# ---------------------------------------------------------------------------------------------
# The write path's cache


class Boom(Exception):
    pass


def _fail(j: Journal, events):
    def hook():
        raise Boom()

    j.before_commit = hook
    try:
        with pytest.raises(Boom):
            j.commit(events)
    finally:
        j.before_commit = None


def _cache_matches_disk(j: Journal):
    for job_id, (rec, _payload) in j._cache.items():
        assert not rec.state.terminal
        on_disk = j.get(job_id)
        assert on_disk is not None
        assert attrs.evolve(rec, payload=on_disk.payload) == on_disk


@pytest.fixture(params=[None, 0, 1], ids=["cache", "no-cache", "cache-of-one"])
def journal(request, journal_path):
    j = Journal(journal_path, sync=False)
    if request.param is not None:
        j.cache_max = request.param
    yield j
    j.close()


def test_a_failed_commit_leaves_records_counts_and_cache_as_they_were(journal):
    j = journal
    j.commit([Enqueued(record("a", payload={"n": 1})), Enqueued(record("b"))])
    cache_before = dict(j._cache)
    _fail(j, [Started("a", 2.0, 1, j.epoch), Cancelled("b", 2.0), Enqueued(record("c"))])
    assert j._cache == cache_before
    assert j.get("a").state is S.PENDING and j.get("b").state is S.PENDING
    assert j.get("c") is None
    assert j.counts("q") == {s: (2 if s is S.PENDING else 0) for s in JobState}
    # the same transitions, committed this time, go on from the state before the failure
    started, cancelled, enqueued = j.commit(
        [Started("a", 3.0, 1, j.epoch), Cancelled("b", 3.0), Enqueued(record("c"))])
    assert started.state is S.RUNNING and started.attempts == 1 and started.log == (1, 3)
    assert cancelled.state is S.CANCELLED and enqueued.seq == 5
    assert j.counts("q") == {S.PENDING: 1, S.RUNNING: 1, S.CANCELLED: 1, S.DELAYED: 0,
                             S.COMPLETED: 0, S.FAILED: 0}
    _cache_matches_disk(j)
    assert "b" not in j._cache  # finished: dropped
    (done,) = j.commit([Succeeded("a", 4.0, "r")])
    assert done.state is S.COMPLETED and "a" not in j._cache
    assert [seq for seq, _ in j.log()] == [1, 2, 3, 4, 5, 6]
    _cache_matches_disk(j)


def test_the_cache_is_bounded(journal_path):
    j = Journal(journal_path, sync=False)
    try:
        j.cache_max = 10
        j.commit([Enqueued(record(f"j{i}")) for i in range(25)])
        assert len(j._cache) == 10
        results = j.commit([Started(f"j{i}", 2.0, 1, j.epoch) for i in range(25)])
        assert all(r is not None and r.state is S.RUNNING for r in results)
        assert len(j._cache) == 10
        _cache_matches_disk(j)
        j.commit([Succeeded(f"j{i}", 3.0, i) for i in range(25)])
        assert j._cache == {}
        assert j.counts("q")[S.COMPLETED] == 25
    finally:
        j.close()


def test_the_cache_holds_a_bounded_size_of_payloads(journal_path):
    j = Journal(journal_path, sync=False)
    try:
        j.cache_max_bytes = 10_000
        j.commit([Enqueued(record(f"big{i}", payload="x" * 3000)) for i in range(5)]
                 + [Enqueued(record(f"small{i}", payload=i)) for i in range(5)])
        assert sorted(j._cache) == ["big0", "big1", "big2"] + [f"small{i}" for i in range(5)]
        assert j._cache_bytes == sum(len(pb) for _rec, pb in j._cache.values()) <= 10_000
        results = j.commit([Started(f"big{i}", 2.0, 1, j.epoch) for i in range(5)])
        assert [r.payload for r in results] == ["x" * 3000] * 5
        j.commit([Succeeded("big0", 3.0, None), Cancelled("small0", 3.0)])
        assert "big0" not in j._cache and "small0" not in j._cache
        assert j._cache_bytes == sum(len(pb) for _rec, pb in j._cache.values())
        _cache_matches_disk(j)
    finally:
        j.close()


def test_a_reopened_journal_starts_with_an_empty_cache(journal_path):
    j = Journal(journal_path, sync=False)
    j.commit([Enqueued(record("a", payload=[1]))])
    j.close()
    j = Journal(journal_path, sync=False)
    try:
        assert j._cache == {}
        (rec,) = j.commit([Started("a", 2.0, 1, j.epoch)])
        assert rec.payload == [1] and rec.state is S.RUNNING
        assert "a" in j._cache
    finally:
        j.close()


def test_returned_records_never_share_a_mutable_payload_with_the_journal(journal):
    j = journal
    payload = {"n": [1, 2]}
    (enq,) = j.commit([Enqueued(record("a", payload=payload))])
    payload["n"].append("changed after enqueue")  # the caller's own object
    (started,) = j.commit([Started("a", 2.0, 1, j.epoch)])
    assert started.payload == {"n": [1, 2]}
    started.payload["n"].append("changed by a handler")
    (requeued,) = j.commit([Requeued("a", 3.0)])
    assert requeued.payload == {"n": [1, 2]}
    assert requeued.payload is not started.payload
    (again,) = j.commit([Started("a", 4.0, 1, j.epoch)])
    again.payload.clear()
    (done,) = j.commit([Succeeded("a", 5.0, {"r": 1})])
    assert done.payload == {"n": [1, 2]}
    assert j.get("a").payload == {"n": [1, 2]}
    assert [ev.record.payload for _s, ev in j.log() if isinstance(ev, Enqueued)] == [
        {"n": [1, 2]}]


def test_several_transitions_of_one_job_in_one_commit(journal):
    j = journal
    epoch = j.epoch
    results = j.commit([
        Enqueued(record("a", payload=[0])), Started("a", 1.0, 1, epoch),
        AttemptFailed("a", 1.0, "E: x", 5.0), Due("a", 5.0), Started("a", 5.0, 2, epoch),
        Enqueued(record("b")), Cancelled("b", 6.0), Enqueued(record("c")),
    ])
    assert [r.state for r in results] == [S.PENDING, S.RUNNING, S.DELAYED, S.PENDING,
                                          S.RUNNING, S.PENDING, S.CANCELLED, S.PENDING]
    assert j.counts("q") == {S.PENDING: 1, S.DELAYED: 0, S.RUNNING: 1, S.COMPLETED: 0,
                             S.FAILED: 0, S.CANCELLED: 1}
    assert j.get("a") == results[4]
    assert [e.id for e in j.live_entries("q")] == ["a", "c"]
    _cache_matches_disk(j)


# ---------------------------------------------------------------------------------------------
# live_entries: the state index's copy of each live job


def _entries_match_records(j: Journal, queue: str = "q"):
    live = j.live(queue)
    assert j.live_entries(queue) == [LiveEntry.from_record(r) for r in live]


def test_live_entries_follow_every_transition(journal):
    j = journal
    epoch = j.epoch
    j.commit([
        Enqueued(record("p", priority=-1, max_attempts=3, timeout=1.5)),
        Enqueued(record("d", state=S.DELAYED, run_at=1_100.0, ready_at=1_100.0)),
        Enqueued(record("k", debounce_key="key", debounce_first_at=999.0, leading=True)),
        Enqueued(record("r")),
        Enqueued(record("other", "qq")),
    ])
    _entries_match_records(j)
    j.commit([Started("r", 1_001.0, 1, epoch)])
    _entries_match_records(j)
    assert [e.state for e in j.live_entries("q")] == [S.PENDING, S.DELAYED, S.PENDING,
                                                     S.RUNNING]
    j.commit([Interrupted("r", 1_002.0, "JobInterrupted: x")])
    _entries_match_records(j)
    (entry,) = [e for e in j.live_entries("q") if e.id == "r"]
    assert entry.interrupted and entry.state is S.PENDING and entry.attempts == 1
    # pending -> pending: only the scheduling fields change, the index entry must follow
    j.commit([AttemptFailed("r", 1_003.0, "E: y", None)])
    _entries_match_records(j)
    (entry,) = [e for e in j.live_entries("q") if e.id == "r"]
    assert not entry.interrupted and entry.ready_at == 1_003.0
    j.commit([Due("d", 1_100.0), Started("p", 1_100.0, 1, epoch)])
    _entries_match_records(j)
    j.commit([Requeued("p", 1_101.0), Cancelled("k", 1_101.0)])
    _entries_match_records(j)
    assert [e.id for e in j.live_entries("q")] == ["p", "d", "r"]
    assert [e.id for e in j.live_entries("qq")] == ["other"]
    assert j.live_entries("nope") == []


def test_live_entries_read_no_record(journal_path, monkeypatch):
    import actorq._journal as journal_module

    j = Journal(journal_path, sync=False)
    try:
        j.commit([Enqueued(record(f"j{i}", payload={"big": "x" * 100})) for i in range(50)])
        j.commit([Started(f"j{i}", 2.0, 1, j.epoch) for i in range(0, 50, 3)])
        j.commit([Succeeded(f"j{i}", 3.0, None) for i in range(0, 50, 6)])

        def no_decoding(data):
            raise AssertionError("live_entries decoded a record")

        monkeypatch.setattr(journal_module, "decode_record", no_decoding)
        entries = j.live_entries("q")
        assert [e.id for e in entries] == [f"j{i}" for i in range(50) if i % 6]
        assert [e.seq for e in entries] == sorted(e.seq for e in entries)
    finally:
        j.close()


# ---------------------------------------------------------------------------------------------
# Retention removes everything of a finished job, from its done entry alone


def test_retention_removes_record_index_and_log_entries(journal):
    j = journal
    epoch = j.epoch
    j.commit([Enqueued(record(f"j{i}", payload=[i])) for i in range(6)])
    j.commit([Started(f"j{i}", 2.0, 1, epoch) for i in range(6)])
    j.commit([Succeeded("j0", 3.0, "r"), Failed("j1", 3.0, "E: x"), Cancelled("j2", 3.0)],
             retention={"q": Retention(max_count=1)}, now=4.0)
    assert [j.get(f"j{i}") is None for i in range(6)] == [True, True, False, False, False,
                                                          False]
    assert {r.id for r in j.list("q", limit=100)} == {"j2", "j3", "j4", "j5"}
    assert j.counts("q") == {S.PENDING: 0, S.DELAYED: 0, S.RUNNING: 3, S.COMPLETED: 0,
                             S.FAILED: 0, S.CANCELLED: 1}
    in_log = {ev.record.id if isinstance(ev, Enqueued) else ev.id for _s, ev in j.log()}
    assert in_log == {"j2", "j3", "j4", "j5"}
    with j.env.begin() as txn:
        done = [k for k, _v in txn.cursor(db=j.dbs["done"])]
    assert len(done) == 1


def _tables(j: Journal) -> dict[str, dict[bytes, bytes]]:
    from actorq._journal import _DBS

    with j.env.begin() as txn:
        return {name.decode(): dict(txn.cursor(db=j.dbs[name.decode()])) for name in _DBS
                if name != b"meta"}


def _expected_tables(j: Journal, kept: dict[str, JobRecord]) -> dict[str, set[bytes]]:
    """The keys each database holds when exactly the jobs ``kept`` remain (none of them
    pending or delayed, so ``ready`` and ``sched`` are empty)."""
    from actorq._journal import CODES

    def qkey(rec):
        return rec.queue.encode() + b"\x00"

    finished = [r for r in kept.values() if r.state in (S.COMPLETED, S.FAILED, S.CANCELLED)]
    return {
        "jobs": {job_id.encode() for job_id in kept},
        "states": {CODES[r.state] + qkey(r) + _Q.pack(r.seq) for r in kept.values()},
        "done": {qkey(r) + _Q.pack(r.log[-1]) for r in finished},
        "log": {_Q.pack(seq) for r in kept.values() for seq in r.log},
        "ready": set(), "sched": set(),
    }


def test_retention_removes_exactly_the_oldest_finished_jobs_across_commits(journal):
    """Which jobs retention removes (max_count, max_age, both; several in one commit; two
    queues with their own policies; a commit without retention trims nothing), and that each
    leaves with its record, states, done and log entries and its count, nothing else."""
    j = journal
    epoch = j.epoch
    recs: dict[str, JobRecord] = {}

    def commit(events, retention=None, now=None):
        for rec in j.commit(events, retention=retention, now=now):
            assert rec is not None
            recs[rec.id] = rec

    def check(kept: list[str]) -> None:
        expect = {job_id: recs[job_id] for job_id in kept}
        tables = _tables(j)
        assert {name: set(tables[name]) for name in _expected_tables(j, expect)} == \
            _expected_tables(j, expect)
        for job_id, rec in expect.items():
            assert j.get(job_id) == rec
        for queue in ("q", "r"):
            want = {s: sum(r.queue == queue and r.state is s for r in expect.values())
                    for s in S}
            assert j.counts(queue) == want  # read from the table; a count never written: 0

    qs = [f"j{i}" for i in range(8)]
    rs = ["r0", "r1", "r2"]
    commit([Enqueued(record(i, at=10.0)) for i in qs]
           + [Enqueued(record(i, "r", at=10.0)) for i in rs])
    commit([Started(i, 10.0, 1, epoch) for i in qs + rs])
    # finished in this order (the done index's): j0, j1, j2, j3; no retention: none leaves
    commit([Succeeded("j0", 20.0, "a"), Failed("j1", 20.0, "E: x"), Cancelled("j2", 20.0),
            Succeeded("j3", 20.0, None)])
    check(qs + rs)
    # max_count 2 of q's 6 finished: the 4 oldest leave in this one commit; r is not trimmed
    commit([Succeeded("j4", 30.0, None), Succeeded("r0", 30.0, None),
            Succeeded("j5", 30.0, None), Succeeded("r1", 30.0, None)],
           retention={"q": Retention(max_age=1e6, max_count=2)}, now=30.0)
    check(["j4", "j5", "j6", "j7"] + rs)
    # max_age 60 at 100: j4 and j5 (finished at 30) leave, j6 (at 100) stays;
    # r's max_count 0: every finished r job leaves, the running one stays
    commit([Succeeded("j6", 100.0, None)],
           retention={"q": Retention(max_age=60, max_count=10),
                      "r": Retention(max_age=1e6, max_count=0)}, now=100.0)
    check(["j6", "j7", "r2"])
    # the walk stops at the first job young enough: j7 finished after j6 but at an older
    # time (50 < 200 - 120), and stays behind j6 (100 >= 80)
    commit([Succeeded("j7", 50.0, None)], retention={"q": Retention(max_age=120)}, now=200.0)
    check(["j6", "j7", "r2"])
    # both bounds: max_count 1 removes j6; then j7 (50) is younger than 200 - 160: it stays
    commit([Succeeded("r2", 200.0, None)],
           retention={"q": Retention(max_age=160, max_count=1)}, now=200.0)
    check(["j7", "r2"])
    # a removed id is free again; the new job's entries are its own
    commit([Enqueued(record("j0", at=210.0))])
    commit([Started("j0", 210.0, 1, epoch)])
    commit([Succeeded("j0", 220.0, None)],
           retention={"q": Retention(max_age=1e6, max_count=1)}, now=220.0)
    check(["j0", "r2"])


# ---------------------------------------------------------------------------------------------
# Format


def test_an_older_format_version_is_refused(journal_path):
    import lmdb

    Journal(journal_path, sync=False).close()
    env = lmdb.open(str(journal_path), max_dbs=10)
    with env.begin(write=True) as txn:
        meta = env.open_db(b"meta", txn=txn)
        txn.put(b"format", _Q.pack(1), db=meta)
    env.close()
    with pytest.raises(actorq.JournalError, match=r"format version 1; .*an older actorq"):
        Journal(journal_path, sync=False)


def test_the_folds_build_the_records_attrs_would():
    # apply_event's folds build records through slot descriptors, not attrs' __init__: the
    # same values, equal, hashable and frozen
    import attrs

    from actorq._model import _FOLDED_FIELDS, JobRecord, JobState, Started, apply_event

    rec = JobRecord("a", "q", JobState.PENDING, ("p", 1), 2, 3, 1.0, 1.0)
    new = apply_event(rec, Started("a", 2.0, 1, 5), 9)
    same = JobRecord(*(getattr(new, name) for name in _FOLDED_FIELDS))
    assert new == same and hash(new) == hash(same) and type(new) is JobRecord
    assert new.state is JobState.RUNNING and new.log == (9,) and new.payload is rec.payload
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        new.state = JobState.PENDING  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# The bytes a journal holds: pinned, so that a faster write path cannot drift from them


def _golden_program(journal_path, seed: int) -> bytes:
    """A fixed program of commits (every event type, valid and refused, several transitions
    of one job in one commit, three queues, retention, a reopen with a small cache), run on a
    fresh journal: every key and value of every database after it, in order."""
    import random

    from actorq._journal import _DBS

    rnd = random.Random(seed)
    ids: list[str] = []
    j = Journal(journal_path, sync=False)
    t = 1_000.0
    try:
        for step in range(30):
            if step == 15:
                j.close()
                j = Journal(journal_path, sync=False)
                j.cache_max = 2
            events = []
            for _ in range(rnd.randint(1, 8)):
                if rnd.random() < 0.5:  # a round shares its time object
                    t += rnd.choice([0.5, 1.0, 7.0])
                kind = rnd.randrange(12)
                if kind < 4 or not ids:
                    job_id = rnd.choice(ids) if ids and kind == 0 else f"j{len(ids)}"
                    ids.append(job_id)
                    delayed = rnd.random() < 0.2
                    events.append(Enqueued(record(
                        job_id, rnd.choice("qrs"), state=S.DELAYED if delayed else S.PENDING,
                        payload=rnd.choice([None, 3, "s", [1], {"k": [None, 2.5]}]), at=t,
                        ready_at=t + 5 if delayed else t, run_at=t + 5 if delayed else None,
                        priority=rnd.choice([0, 2, -1]), max_attempts=rnd.choice([None, 2]),
                        debounce_key=rnd.choice([None, "k"]), leading=rnd.random() < 0.2)))
                    if rnd.random() < 0.5:
                        events.append(Started(job_id, t, 1, j.epoch))
                    continue
                job_id = rnd.choice(ids[-10:])
                events.append(rnd.choice([
                    Started(job_id, t, rnd.randint(1, 2), j.epoch),
                    Succeeded(job_id, t, rnd.choice([None, "r", {"r": [1]}])),
                    Due(job_id, t), AttemptFailed(job_id, t, "E: x", rnd.choice([None, t + 3])),
                    Failed(job_id, t, "E: y"), Cancelled(job_id, t, rnd.choice([None, "j0"])),
                    Requeued(job_id, t), Interrupted(job_id, t, "JobInterrupted: z"),
                ]))
            retention = ({q: Retention(max_age=rnd.choice([5.0, 1e6]), max_count=2)
                          for q in "qrs"} if rnd.random() < 0.3 else None)
            j.commit(events, retention=retention, now=t)
        out = []
        with j.env.begin() as txn:
            for name in _DBS:
                out.append(name)
                for key, value in txn.cursor(db=j.dbs[name.decode()]):
                    out += [key, value]
        return b"\x00".join(out)
    finally:
        j.close()


def test_the_journal_bytes_are_the_pinned_ones(tmp_path):
    """What a fixed program writes, hashed: the digest below was taken with the write path
    before its optimisations (actorq 288dbdf). A change here is a change of the format (and
    of FORMAT_VERSION), never of a faster write path."""
    import hashlib

    digest = hashlib.sha256()
    for seed in range(8):
        digest.update(_golden_program(tmp_path / f"j{seed}", seed))
    assert digest.hexdigest() == (
        "085a02924220df2f8b92da8d30bb5bc5e944cccb79d3a288bf2735e2bc84fe20")
