"""The codec: stable tags, faithful round trips, and payload validation at the edge."""

from __future__ import annotations

import attrs
import msgpack
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import actorq
from actorq._codec import (
    RECORD_FIELDS,
    Encoder,
    decode_event,
    decode_record,
    encode_event,
    encode_record,
    encode_record_with,
    encode_value,
    normalize,
)
from actorq._model import (
    EVENT_TAGS,
    AttemptFailed,
    Cancelled,
    Due,
    Enqueued,
    Failed,
    Interrupted,
    JobRecord,
    JobState,
    Requeued,
    Started,
    Succeeded,
)
from tests.support import run

# ---------------------------------------------------------------------------------------------
# Round trips


def _record(**changes):
    base = JobRecord(
        id="job-1", queue="email", state=JobState.PENDING,
        payload={"to": "ada@example.com", "n": [1, 2.5, None, True, {"deep": "x"}]},
        priority=2, seq=7, created_at=1_700_000_000.25, ready_at=1_700_000_000.25,
    )
    return attrs.evolve(base, **changes)


FULL_RECORD = _record(
    state=JobState.DELAYED, run_at=1_700_000_100.5, attempts=2, max_attempts=5, timeout=3.5,
    started_at=1_700_000_050.0, finished_at=None, result={"sent": True}, error="OSError: boom",
    superseded_by="job-2", epoch=4, interrupted=True, debounce_key="k", log=(7, 9, 12),
    priority=-3, payload=[2**64 - 1, -(2**63), "é", 0.1],
)

EVENTS = [
    Enqueued(_record()),
    Enqueued(FULL_RECORD),
    Started("job-1", 10.5, 1, 3),
    Due("job-1", 11.0),
    Succeeded("job-1", 12.0, {"ok": [1, 2]}),
    Succeeded("job-1", 12.0, None),
    AttemptFailed("job-1", 13.0, "ValueError: nope", 20.0),
    AttemptFailed("job-1", 13.0, "ValueError: nope", None),
    Failed("job-1", 14.0, "ValueError: for good"),
    Cancelled("job-1", 15.0),
    Cancelled("job-1", 15.0, superseded_by="job-9"),
    Requeued("job-1", 16.0),
    Interrupted("job-1", 17.0, "JobInterrupted: attempt 1 was interrupted"),
]


def test_every_event_type_is_covered_by_the_examples():
    assert {type(ev) for ev in EVENTS} == set(EVENT_TAGS)


@pytest.mark.parametrize("event", EVENTS, ids=lambda ev: type(ev).__name__)
def test_event_round_trips(event):
    data = encode_event(event)
    assert isinstance(data, bytes)
    back = decode_event(data)
    assert type(back) is type(event)
    assert back == event


@pytest.mark.parametrize("record", [_record(), FULL_RECORD], ids=["minimal", "full"])
def test_record_round_trips(record):
    back = decode_record(encode_record(record))
    assert back == record
    assert back.state is record.state
    assert isinstance(back.log, tuple)


def test_tags_are_the_stable_strings():
    assert {cls.__name__: tag for cls, tag in EVENT_TAGS.items()} == {
        "Enqueued": "enq",
        "Started": "start",
        "Due": "due",
        "Succeeded": "ok",
        "AttemptFailed": "retry",
        "Failed": "fail",
        "Cancelled": "cancel",
        "Requeued": "requeue",
        "Interrupted": "intr",
    }


@pytest.mark.parametrize("event", EVENTS, ids=lambda ev: type(ev).__name__)
def test_encoded_event_carries_its_tag(event):
    raw = msgpack.unpackb(encode_event(event))
    assert raw["t"] == EVENT_TAGS[type(event)]


def test_a_hand_written_old_journal_entry_stays_readable():
    data = msgpack.packb({"t": "start", "id": "j1", "at": 123.5, "attempt": 2, "epoch": 7})
    assert decode_event(data) == Started("j1", 123.5, 2, 7)

    data = msgpack.packb({"t": "cancel", "id": "j1", "at": 1.0})  # default omitted
    assert decode_event(data) == Cancelled("j1", 1.0, None)

    record = {"id": "j2", "queue": "q", "state": "completed", "payload": {"a": 1},
              "priority": 2, "seq": 3, "created_at": 1.0, "ready_at": 1.0, "log": [3, 4, 5]}
    data = msgpack.packb({"t": "enq", "record": record})
    ev = decode_event(data)
    assert isinstance(ev, Enqueued)
    assert ev.record.state is JobState.COMPLETED
    assert ev.record.log == (3, 4, 5)
    assert ev.record.attempts == 0


def test_an_unknown_tag_is_not_decoded_as_something_else():
    with pytest.raises(Exception):  # noqa: B017 - any error, but never a wrong event
        decode_event(msgpack.packb({"t": "nope", "id": "j1", "at": 1.0}))


_floats = st.floats(allow_nan=False)
_text = st.text(max_size=8)
_opt_float = st.none() | _floats
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | _floats | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_records = st.builds(
    JobRecord, id=_text, queue=_text, state=st.sampled_from(JobState), payload=_json,
    priority=st.integers(-(2**63), 2**63 - 1), seq=st.integers(0, 2**64 - 1),
    created_at=_floats, ready_at=_floats, run_at=_opt_float,
    attempts=st.integers(0, 1000), max_attempts=st.none() | st.integers(1, 100),
    timeout=_opt_float, started_at=_opt_float, finished_at=_opt_float, result=_json,
    error=st.none() | _text, superseded_by=st.none() | _text, epoch=st.integers(0, 2**32),
    interrupted=st.booleans(), debounce_key=st.none() | _text,
    log=st.lists(st.integers(0, 2**64 - 1), max_size=4).map(tuple),
)
_events = st.one_of(
    st.builds(Enqueued, _records),
    st.builds(Started, _text, _floats, st.integers(0, 100), st.integers(0, 2**32)),
    st.builds(Due, _text, _floats),
    st.builds(Succeeded, _text, _floats, _json),
    st.builds(AttemptFailed, _text, _floats, _text, _opt_float),
    st.builds(Failed, _text, _floats, _text),
    st.builds(Cancelled, _text, _floats, st.none() | _text),
    st.builds(Requeued, _text, _floats),
    st.builds(Interrupted, _text, _floats, _text),
)


@settings(max_examples=200, deadline=None)
@given(_events)
def test_property_every_event_round_trips(event):
    assert decode_event(encode_event(event)) == event


def _reference_record(rec: JobRecord) -> bytes:
    """The ``jobs`` value as the format defines it: one msgpack array of the fields in
    RECORD_FIELDS order, the state as its index, the payload last."""
    fields = [getattr(rec, name) for name in RECORD_FIELDS]
    fields[RECORD_FIELDS.index("state")] = list(JobState).index(rec.state)
    return msgpack.packb(fields)


def _reference_event(ev) -> bytes:
    """A log entry as the format defines it: a map tagged ``"t"``, the event's fields by name
    (``Cancelled.superseded_by`` left out when None), an Enqueued's record under ``"r"``."""
    if isinstance(ev, Enqueued):
        return msgpack.packb({"t": "enq", "r": msgpack.unpackb(_reference_record(ev.record))})
    fields = {"t": EVENT_TAGS[type(ev)], **attrs.asdict(ev, recurse=False)}
    if isinstance(ev, Cancelled) and ev.superseded_by is None:
        del fields["superseded_by"]
    return msgpack.packb(fields)


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_encoded_bytes_are_the_formats(event):
    """Every key and value stays byte-identical to the format's definition (the hand-written
    fast encoders must not drift from it): log entries and records."""
    assert encode_event(event) == _reference_event(event)
    if isinstance(event, Enqueued):
        rec = event.record
        assert encode_record(rec) == _reference_record(rec)
        assert encode_record_with(rec, encode_value(rec.payload)) == _reference_record(rec)


@settings(max_examples=300, deadline=None)
@given(_events)
def test_property_encoded_bytes_are_the_formats(event):
    assert encode_event(event) == _reference_event(event)
    if isinstance(event, Enqueued):
        assert encode_record(event.record) == _reference_record(event.record)


_shared_times = st.sampled_from([1.0, 1, 0.0, -0.0, 0, 2.5, 1e300, 2**40, float(2**40)])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.builds(Started, _text, _shared_times, st.sampled_from([1, True, 2, 2**63]),
              st.sampled_from([0, False, 3, 2**40])),
    st.builds(Succeeded, _text, _shared_times, st.none() | _json),
), max_size=8), st.randoms(use_true_random=False))
def test_sequences_of_events_encode_as_the_format(events, rnd):
    """One Encoder (one msgpack Packer, reused) encodes a sequence of events, some holding the
    very same objects as earlier ones (a round's events share their time and epoch), some equal
    values of another type or sign, each as the format says: nothing carries over from one
    event to the next."""
    encoder = Encoder()
    shared = [*events, *(rnd.choice(events) for _ in events)]  # the same objects again
    for event in shared:
        assert encoder.event(event) == _reference_event(event)


# ---------------------------------------------------------------------------------------------
# Payload validation


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"a": {1: "x"}}, "payload['a']"),
        ({"a": [0, b"bytes"]}, "payload['a'][1]"),
        ({"a": [0, {1, 2}]}, "payload['a'][1]"),
        ([object()], "payload[0]"),
        ({"a": [0, 2**64]}, "payload['a'][1]"),
        ({"a": [0, -(2**63) - 1]}, "payload['a'][1]"),
        (b"top", "payload"),
        ((1, (2, bytearray(b"x"))), "payload[1][1]"),
    ],
    ids=["non-str key", "bytes", "set", "object", "2**64", "-2**63-1", "top-level bytes",
         "nested tuple"],
)
def test_unstorable_payloads_raise_payload_error_naming_the_path(payload, path):
    with pytest.raises(actorq.PayloadError) as info:
        normalize(payload)
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, actorq.ActorqError)
    assert str(info.value).startswith(path + ":"), str(info.value)


def test_payload_error_names_the_offending_type():
    with pytest.raises(actorq.PayloadError, match=r"set is not storable"):
        normalize({"s": {1}})
    with pytest.raises(actorq.PayloadError, match=r"dict keys must be str \(got 1\)"):
        normalize({1: "x"})
    with pytest.raises(actorq.PayloadError, match=r"out of range"):
        normalize(2**64)


def test_boundary_ints_are_accepted_and_round_trip():
    value = {"max": 2**64 - 1, "min": -(2**63)}
    assert normalize(value) == value
    rec = _record(payload=normalize(value), result=normalize([2**64 - 1, -(2**63)]))
    assert decode_record(encode_record(rec)) == rec


def test_tuples_become_lists():
    stored = normalize({"a": (1, (2, 3)), "b": [(), ("x",)]})
    assert stored == {"a": [1, [2, 3]], "b": [[], ["x"]]}
    assert type(stored["a"]) is list and type(stored["a"][1]) is list


def test_plain_values_are_kept():
    value = {"s": "é", "i": -5, "f": 1.5, "t": True, "n": None, "l": [1, "2"], "d": {}}
    assert normalize(value) == value


@attrs.define
class Point:
    x: int
    y: int


@attrs.define
class Shape:
    name: str
    points: list[Point]
    origin: Point


@attrs.define
class WithDefaults:
    x: int
    y: int = 0
    tags: list[str] = attrs.field(factory=list)


@attrs.define
class HoldsBytes:
    blob: object


def test_attrs_instances_become_dicts():
    stored = normalize({"shape": Shape("tri", [Point(0, 0), Point(1, 2)], Point(5, 6))})
    assert stored == {"shape": {"name": "tri",
                                "points": [{"x": 0, "y": 0}, {"x": 1, "y": 2}],
                                "origin": {"x": 5, "y": 6}}}
    assert type(stored["shape"]) is dict


def test_attrs_instance_is_stored_with_every_field():
    # API.md: "an attrs instance (stored as its cattrs-unstructured dict)". A handler without
    # payload_type (or a dead-letter handler) reads that dict: fields equal to their default
    # must not silently disappear from it.
    assert normalize(WithDefaults(1)) == {"x": 1, "y": 0, "tags": []}


def test_attrs_instance_holding_an_unstorable_value_is_refused():
    with pytest.raises(actorq.PayloadError, match=r"^payload\['b'\]"):
        normalize({"b": HoldsBytes({1, 2})})


# ---------------------------------------------------------------------------------------------
# Through the public API


def test_enqueue_of_an_invalid_payload_records_nothing(journal_path):
    async def main():
        ran = []

        async def handler(job):
            ran.append(job.id)

        async with actorq.open_runtime(journal_path, durability="os"):
            queue = await actorq.spawn_queue("q", handler)
            for bad in ({"a": b"x"}, {1: 2}, [{1, 2}], 2**64, object()):
                with pytest.raises(actorq.PayloadError):
                    await queue.enqueue(bad)
            with pytest.raises(actorq.PayloadError):
                await queue.enqueue({"x": b"x"}, job_id="fixed")
            with pytest.raises(actorq.UnknownJob):
                await queue.status("fixed")
            await trio.sleep(1)
            assert await queue.stats() == {s.value: 0 for s in actorq.JobState}
            assert await queue.list() == []
            assert ran == []

    run(main)


def test_enqueue_batch_with_one_bad_payload_records_none(journal_path):
    async def main():
        async def handler(job):
            return None

        async with actorq.open_runtime(journal_path, durability="os") as runtime:
            queue = await actorq.spawn_queue("q", handler)
            with pytest.raises(actorq.PayloadError, match=r"payload\['k'\]"):
                await queue.enqueue_batch([{"k": 1}, {"k": 2}, {"k": b"bad"}, {"k": 4}])
            await trio.sleep(1)
            assert await queue.stats() == {s.value: 0 for s in actorq.JobState}
            assert await queue.list() == []
            assert runtime.journal.log() == []

    run(main)


def test_a_handler_result_that_cannot_be_stored_fails_the_attempt(journal_path):
    async def main():
        attempts = []

        async def handler(job):
            attempts.append(job.attempt)
            return {"ids": {1, 2, 3}}

        async with actorq.open_runtime(journal_path, durability="os"):
            queue = await actorq.spawn_queue(
                "q", handler, retry=actorq.Retry(max_attempts=3, backoff=actorq.fixed(2.0)))
            job_id = await queue.enqueue("x")
            t0 = trio.current_time()
            with pytest.raises(actorq.JobFailed) as info:
                await queue.wait(job_id)
            assert trio.current_time() - t0 == 4.0  # two retries, 2 s backoff each
            assert attempts == [1, 2, 3]
            status = await queue.status(job_id)
            assert status.state is actorq.JobState.FAILED
            assert status.attempts == 3
            assert status.result is None
            assert "not storable" in status.error
            assert "result" in status.error
            assert status.error.startswith("PayloadError: ")
            assert info.value.error == status.error

    run(main)


def test_a_storable_result_after_an_unstorable_one_completes_the_job(journal_path):
    async def main():
        async def handler(job):
            if job.attempt == 1:
                return {1, 2}
            return ("done", job.attempt)

        async with actorq.open_runtime(journal_path, durability="os"):
            queue = await actorq.spawn_queue(
                "q", handler, retry=actorq.Retry(max_attempts=2, backoff=0))
            job_id = await queue.enqueue(None)
            assert await queue.wait(job_id) == ["done", 2]  # tuple stored as a list
            status = await queue.status(job_id)
            assert status.state is actorq.JobState.COMPLETED
            assert status.attempts == 2
            assert "not storable" in status.error

    run(main)


def test_an_attrs_payload_reaches_an_untyped_handler_with_every_field(journal_path):
    async def main():
        seen = []

        async def handler(job):
            seen.append(job.payload)

        async with actorq.open_runtime(journal_path, durability="os"):
            queue = await actorq.spawn_queue("q", handler)
            job_id = await queue.enqueue(WithDefaults(7))
            await queue.wait(job_id)
            assert seen == [{"x": 7, "y": 0, "tags": []}]
            assert (await queue.status(job_id)).payload == {"x": 7, "y": 0, "tags": []}

    run(main)
