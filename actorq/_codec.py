"""The one place that serialises: msgpack, with stable, hand-written tags.

The journal's hot path encodes by hand with msgpack (a cattrs converter costs several times
more per record, and this runs for every transition):

- A record (the ``jobs`` table, and inside an ``Enqueued`` event) is one msgpack array of its
  fields in :data:`RECORD_FIELDS` order, the state as its index in ``JobState``, the payload
  last. The payload is encoded once, at enqueue, and its bytes are spliced into every later
  version of the record, so a transition never re-encodes it (nor sees a caller's later changes
  to the payload object).
- An event is a msgpack map tagged ``"t"`` with :data:`EVENT_TAGS`' stable strings; its other
  keys are the event's field names (``Cancelled.superseded_by`` left out when None). An
  ``Enqueued`` event holds its record, encoded as above, under ``"r"``. Older entries that hold
  it as a map of field names under ``"record"`` still decode, through the cattrs converter.
- A live job's entry in the state index holds its scheduling fields (:func:`encode_live`), so
  recovery can rebuild a queue without decoding records.

Payloads and results are checked here too, before anything is recorded: only values the journal
can store faithfully get in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import attrs
import cattrs
import msgpack
from cattrs.preconf.msgpack import make_converter
from cattrs.strategies import configure_tagged_union

from ._errors import PayloadError
from ._model import (
    EVENT_TAGS,
    AttemptFailed,
    Cancelled,
    Due,
    Enqueued,
    Event,
    Failed,
    Interrupted,
    JobRecord,
    JobState,
    LiveEntry,
    Requeued,
    Started,
    Succeeded,
    _live_entry,
)

# The cattrs converter only reads entries written in the older, map-of-fields form.
converter = make_converter(omit_if_default=True)
configure_tagged_union(Event, converter, tag_generator=EVENT_TAGS.__getitem__, tag_name="t")
payload_converter = make_converter()

_INT_MIN, _INT_MAX = -(2**63), 2**64
_ALLOWED = "dict (str keys), list, tuple, str, int, float, bool, None or an attrs instance"

# ---- msgpack primitives

_unpackb = msgpack.unpackb
_local = threading.local()  # a Packer keeps a buffer: one Encoder per thread


def encode_value(value: Any) -> bytes:
    """A payload or result as msgpack (what :func:`encode_record_with` splices in)."""
    return _encoder().pack(value)


def decode_value(data: bytes) -> Any:
    return _unpackb(data)


# ---- records

RECORD_FIELDS = (
    "id", "queue", "state", "priority", "seq", "created_at", "ready_at", "run_at", "attempts",
    "max_attempts", "timeout", "started_at", "finished_at", "result", "error", "superseded_by",
    "epoch", "interrupted", "debounce_key", "debounce_first_at", "leading", "log", "payload",
)
STATES: tuple[JobState, ...] = tuple(JobState)
STATE_INDEX: dict[JobState, int] = {state: i for i, state in enumerate(STATES)}
if sorted(RECORD_FIELDS) != sorted(f.name for f in attrs.fields(JobRecord)):  # pragma: no cover
    raise RuntimeError("JobRecord's fields changed: update the record layout (and bump the "
                       "journal's FORMAT_VERSION)")


def encode_record(rec: JobRecord) -> bytes:
    return encode_record_with(rec, encode_value(rec.payload))


def _record_from_list(v: list[Any]) -> JobRecord:
    (job_id, queue, state, priority, seq, created_at, ready_at, run_at, attempts, max_attempts,
     timeout, started_at, finished_at, result, error, superseded_by, epoch, interrupted,
     debounce_key, debounce_first_at, leading, log, payload) = v
    return JobRecord(job_id, queue, STATES[state], payload, priority, seq, created_at, ready_at,
                     run_at, attempts, max_attempts, timeout, started_at, finished_at, result,
                     error, superseded_by, epoch, interrupted, debounce_key, debounce_first_at,
                     leading, tuple(log))


def decode_record(data: bytes) -> JobRecord:
    v = _unpackb(data)
    if type(v) is dict:  # the older map-of-fields form
        return converter.structure(v, JobRecord)
    return _record_from_list(v)


# ---- events

_T_ENQ = EVENT_TAGS[Enqueued]
_T_START = EVENT_TAGS[Started]
_T_DUE = EVENT_TAGS[Due]
_T_OK = EVENT_TAGS[Succeeded]
_T_RETRY = EVENT_TAGS[AttemptFailed]
_T_FAIL = EVENT_TAGS[Failed]
_T_CANCEL = EVENT_TAGS[Cancelled]
_T_REQUEUE = EVENT_TAGS[Requeued]
_T_INTR = EVENT_TAGS[Interrupted]
# {"t": "enq", "r": <record>}: a fixmap of 2, then the record's array is appended.
_ENQ_PREFIX = b"\x82" + msgpack.packb("t") + msgpack.packb(_T_ENQ) + msgpack.packb("r")


class Encoder:
    """The encoders of the journal's write path, bound to one msgpack Packer (its ``pack``:
    no thread-local lookup and no Python-level wrapper per call). A Packer keeps a buffer:
    one Encoder per thread (the module-level functions below use the calling thread's), or
    one per user encoding from one thread at a time (a Journal's ``prepare``)."""

    __slots__ = ("pack",)

    def __init__(self) -> None:
        self.pack: Callable[[Any], bytes] = msgpack.Packer(autoreset=True).pack

    def record_with(self, rec: JobRecord, payload: bytes) -> bytes:
        """``rec`` encoded, with ``payload`` (its payload, encoded) spliced in: the 23 items
        packed with a None (one byte) in the payload's place, replaced by it."""
        return self.pack((
            rec.id, rec.queue, STATE_INDEX[rec.state], rec.priority, rec.seq, rec.created_at,
            rec.ready_at, rec.run_at, rec.attempts, rec.max_attempts, rec.timeout,
            rec.started_at, rec.finished_at, rec.result, rec.error, rec.superseded_by,
            rec.epoch, rec.interrupted, rec.debounce_key, rec.debounce_first_at, rec.leading,
            rec.log, None,
        ))[:-1] + payload

    def enqueued(self, rec: JobRecord, payload: bytes) -> bytes:
        """``event(Enqueued(rec))``, with ``payload`` (its payload, encoded) spliced in."""
        return _ENQ_PREFIX + self.record_with(rec, payload)

    def event(self, ev: Event) -> bytes:
        pack = self.pack
        cls = type(ev)
        # The two most frequent events, as their map's keys and values packed as one flat
        # tuple (the same bytes after the header; cheaper than building the dict), the
        # tuple's fixarray header byte replaced by the map's fixmap one.
        if cls is Started:
            return b"\x85" + pack(("t", _T_START, "id", ev.id, "at", ev.at,
                                   "attempt", ev.attempt, "epoch", ev.epoch))[1:]
        if cls is Succeeded:
            return b"\x84" + pack(("t", _T_OK, "id", ev.id, "at", ev.at,
                                   "result", ev.result))[1:]
        if cls is Enqueued:
            return self.enqueued(ev.record, pack(ev.record.payload))
        if cls is Due:
            return pack({"t": _T_DUE, "id": ev.id, "at": ev.at})
        if cls is AttemptFailed:
            return pack({"t": _T_RETRY, "id": ev.id, "at": ev.at, "error": ev.error,
                         "retry_at": ev.retry_at})
        if cls is Failed:
            return pack({"t": _T_FAIL, "id": ev.id, "at": ev.at, "error": ev.error})
        if cls is Cancelled:
            if ev.superseded_by is None:
                return pack({"t": _T_CANCEL, "id": ev.id, "at": ev.at})
            return pack({"t": _T_CANCEL, "id": ev.id, "at": ev.at,
                         "superseded_by": ev.superseded_by})
        if cls is Requeued:
            return pack({"t": _T_REQUEUE, "id": ev.id, "at": ev.at})
        if cls is Interrupted:
            return pack({"t": _T_INTR, "id": ev.id, "at": ev.at, "error": ev.error})
        raise TypeError(f"not a journal event: {ev!r}")

    def live(self, rec: JobRecord) -> bytes:
        """The scheduling fields of a live record, as its state index entry holds them."""
        return self.pack((rec.id, rec.priority, rec.ready_at, rec.run_at, rec.attempts,
                          rec.max_attempts, rec.timeout, rec.interrupted, rec.debounce_key,
                          rec.debounce_first_at, rec.leading, rec.created_at))


def _encoder() -> Encoder:
    """The calling thread's Encoder."""
    try:
        return _local.encoder  # type: ignore[no-any-return]
    except AttributeError:
        enc = _local.encoder = Encoder()
        return enc


def encode_record_with(rec: JobRecord, payload: bytes) -> bytes:
    """``rec`` encoded, with ``payload`` (:func:`encode_value` of its payload) spliced in."""
    return _encoder().record_with(rec, payload)


def encode_enqueued(rec: JobRecord, payload: bytes) -> bytes:
    """``encode_event(Enqueued(rec))``, with ``payload`` (:func:`encode_value`) spliced in."""
    return _encoder().enqueued(rec, payload)


def encode_event(ev: Event) -> bytes:
    return _encoder().event(ev)


def encode_live(rec: JobRecord) -> bytes:
    """The scheduling fields of a live record, as its state index entry holds them."""
    return _encoder().live(rec)


def decode_event(data: bytes) -> Event:
    d = _unpackb(data)
    tag = d["t"]
    if tag == _T_START:
        return Started(d["id"], d["at"], d["attempt"], d["epoch"])
    if tag == _T_OK:
        return Succeeded(d["id"], d["at"], d["result"])
    if tag == _T_ENQ:
        if "r" in d:
            return Enqueued(_record_from_list(d["r"]))
        return converter.structure(d, Event)  # type: ignore[arg-type]  # the older form
    if tag == _T_DUE:
        return Due(d["id"], d["at"])
    if tag == _T_RETRY:
        return AttemptFailed(d["id"], d["at"], d["error"], d["retry_at"])
    if tag == _T_FAIL:
        return Failed(d["id"], d["at"], d["error"])
    if tag == _T_CANCEL:
        return Cancelled(d["id"], d["at"], d.get("superseded_by"))
    if tag == _T_REQUEUE:
        return Requeued(d["id"], d["at"])
    if tag == _T_INTR:
        return Interrupted(d["id"], d["at"], d["error"])
    raise ValueError(f"not a journal event: unknown tag {tag!r}")


# ---- the state index's entries of live jobs


def live_id(data: bytes) -> str:
    """The id in an :func:`encode_live` value."""
    return _unpackb(data)[0]  # type: ignore[no-any-return]


def decode_live(data: bytes, seq: int, state: JobState) -> LiveEntry:
    (job_id, priority, ready_at, run_at, attempts, max_attempts, timeout, interrupted,
     debounce_key, debounce_first_at, leading, created_at) = _unpackb(data)
    # _live_entry: LiveEntry(...) without attrs' per-field __setattr__ (a queue's refill
    # decodes a chunk of these)
    return _live_entry(job_id, seq, state, priority, ready_at, run_at, attempts, max_attempts,
                       timeout, interrupted, debounce_key, debounce_first_at, leading,
                       created_at)


def normalize(value: Any, what: str = "payload") -> Any:
    """``value`` as the journal stores it (tuples as lists, attrs instances as dicts).

    Raises :class:`PayloadError` naming the offending path where any part of it is not storable.
    """
    return _normalize(value, what)


def _normalize(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (str, bool, float)):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value < _INT_MAX:
            raise PayloadError(f"{path}: int {value} is out of range (-2**63 <= n < 2**64)")
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadError(f"{path}: dict keys must be str (got {key!r})")
            out[key] = _normalize(item, f"{path}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_normalize(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if attrs.has(type(value)):
        try:
            plain = payload_converter.unstructure(value)
        except Exception as exc:  # noqa: BLE001 - reported as the payload's fault
            raise PayloadError(f"{path}: cannot unstructure {type(value).__name__}: {exc}") from exc
        return _normalize(plain, path)
    raise PayloadError(f"{path}: {type(value).__name__} is not storable (allowed: {_ALLOWED})")


def structure(value: Any, cls: type) -> Any:
    """A stored payload as an instance of ``cls`` (a queue's ``payload_type``)."""
    return payload_converter.structure(value, cls)


def check_structures(value: Any, cls: type, what: str = "payload") -> None:
    """PayloadError where a stored ``value`` would not structure as ``cls``."""
    try:
        payload_converter.structure(value, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        raise PayloadError(f"{what} does not structure as {cls.__name__}: {exc}") from exc
