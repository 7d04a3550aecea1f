"""Values: job states, records, journal events, policy configs and the pure ``apply_event``.

Nothing here imports trio, lmdb or cattrs. Durable times are wall-clock epoch seconds (floats).
"""

from __future__ import annotations

import datetime as _dt
import enum
import math
from collections.abc import Callable
from typing import Any, Union

import attrs

# --------------------------------------------------------------------------------------------
# States and priorities


class JobState(str, enum.Enum):
    """Where a job stands. The last three are terminal."""

    PENDING = "pending"
    DELAYED = "delayed"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL

    def __str__(self) -> str:
        return self.value


_TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
LIVE_STATES = (JobState.PENDING, JobState.DELAYED, JobState.RUNNING)
TERMINAL_STATES = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)

PRIORITIES = {"critical": 0, "high": 1, "normal": 2, "low": 3}


def parse_priority(priority: object) -> int:
    """``"critical"``/``"high"``/``"normal"``/``"low"`` or an int (not a bool); lower runs first."""
    if isinstance(priority, str):
        try:
            return PRIORITIES[priority]
        except KeyError:
            names = ", ".join(repr(n) for n in PRIORITIES)
            raise ValueError(
                f"priority must be one of {names} or an int (got {priority!r})") from None
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(
            f"priority must be a priority name or an int, not {type(priority).__name__} "
            f"(got {priority!r})"
        )
    if not -(2**63) <= priority < 2**63:
        raise ValueError(f"priority must fit in 64 bits (got {priority!r})")
    return priority


def parse_state(state: object) -> JobState:
    try:
        return JobState(state)
    except ValueError:
        names = ", ".join(repr(s.value) for s in JobState)
        raise ValueError(f"state must be a JobState or one of {names} (got {state!r})") from None


def to_datetime(ts: float | None) -> _dt.datetime | None:
    return None if ts is None else _dt.datetime.fromtimestamp(ts, _dt.timezone.utc)


# --------------------------------------------------------------------------------------------
# Validators shared by the configs


def check_positive_number(name: str, value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number (got {value!r})")
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{name} must be finite (got {value!r})")
    if allow_zero and value < 0:
        raise ValueError(f"{name} must be >= 0 (got {value!r})")
    if not allow_zero and value <= 0:
        raise ValueError(f"{name} must be > 0 (got {value!r})")
    return float(value)


def check_int_at_least(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (got {value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum} (got {value!r})")
    return value


def _positive(allow_zero: bool = False) -> Callable[[Any, attrs.Attribute, Any], None]:
    def validate(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        check_positive_number(attribute.name, value, allow_zero=allow_zero)

    return validate


def _optional_positive(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None:
        check_positive_number(attribute.name, value)


def _int_at_least(minimum: int) -> Callable[[Any, attrs.Attribute, Any], None]:
    def validate(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        check_int_at_least(attribute.name, value, minimum)

    return validate


# --------------------------------------------------------------------------------------------
# Backoff and retry


@attrs.frozen
class Fixed:
    """The same delay before every retry."""

    delay: float = attrs.field(validator=_positive(allow_zero=True))


@attrs.frozen
class Linear:
    """``delay * n`` before retry n."""

    delay: float = attrs.field(validator=_positive(allow_zero=True))


@attrs.frozen
class Exponential:
    """``min(initial * factor**(n-1), max)`` before retry n, spread by ``jitter``."""

    initial: float = attrs.field(validator=_positive(allow_zero=True))
    factor: float = attrs.field(default=2.0, validator=_positive())
    max: float | None = attrs.field(default=None, validator=_optional_positive)
    jitter: float = attrs.field(default=0.0)

    @jitter.validator
    def _check_jitter(self, _attribute: attrs.Attribute, value: float) -> None:
        check_positive_number("jitter", value, allow_zero=True)
        if value > 1:
            raise ValueError(f"jitter must be between 0 and 1 (got {value!r})")


def fixed(delay: float) -> Fixed:
    """Backoff: ``delay`` seconds before every retry."""
    return Fixed(delay)


def linear(delay: float) -> Linear:
    """Backoff: ``delay * n`` seconds before retry n."""
    return Linear(delay)


def exponential(
    initial: float, factor: float = 2.0, max: float | None = None, jitter: float = 0.0  # noqa: A002
) -> Exponential:
    """Backoff: ``min(initial * factor**(n-1), max)``, spread over ``[d(1-j), d(1+j)]``."""
    return Exponential(initial, factor, max, jitter)


def _check_backoff(_inst: Any, _attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, (Fixed, Linear, Exponential)) or callable(value):
        return
    if isinstance(value, bool):
        raise TypeError(f"backoff must be a number, a list of numbers, a callable or a "
                        f"backoff policy (got {value!r})")
    if isinstance(value, (int, float)):
        check_positive_number("backoff", value, allow_zero=True)
        return
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("backoff must not be an empty list")
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                raise TypeError(f"backoff list items must be numbers (got {item!r})")
            check_positive_number("backoff list item", item, allow_zero=True)
        return
    raise TypeError(
        f"backoff must be a number, a list of numbers, a callable or a backoff policy "
        f"(got {value!r})"
    )


def _freeze_backoff(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@attrs.frozen
class Retry:
    """How often a failed job is tried again, and how long to wait before each retry.

    ``max_attempts`` counts every attempt, the first included. ``backoff`` is a backoff policy
    (:func:`fixed`, :func:`linear`, :func:`exponential`), a number (fixed), a list of numbers (its
    n-th item before retry n, the last one repeating) or a callable ``f(n) -> seconds``.
    """

    max_attempts: int = attrs.field(default=3, validator=_int_at_least(1))
    backoff: Any = attrs.field(
        factory=lambda: exponential(1.0, factor=2.0, max=60.0, jitter=0.0),
        converter=_freeze_backoff,
        validator=_check_backoff,
    )


# --------------------------------------------------------------------------------------------
# Other policies


@attrs.frozen
class Throttle:
    """A token bucket: ``burst`` tokens (default ``max(rate, 1)``), refilled at ``rate/per``/s."""

    rate: float = attrs.field(validator=_positive())
    per: float = attrs.field(default=1.0, validator=_positive())
    burst: float | None = attrs.field(default=None)

    @burst.validator
    def _check_burst(self, _attribute: attrs.Attribute, value: float | None) -> None:
        if value is None:
            return
        check_positive_number("burst", value)
        if value < 1:
            raise ValueError(f"burst must be >= 1 (got {value!r})")

    @property
    def capacity(self) -> float:
        return float(self.burst) if self.burst is not None else max(float(self.rate), 1.0)


@attrs.frozen
class Debounce:
    """Collapse bursts of jobs with the same key into one run (``"trailing"`` or ``"leading"``)."""

    wait: float = attrs.field(validator=_positive(allow_zero=True))
    key: Callable[[Any], str] | None = attrs.field(default=None, kw_only=True)
    mode: str = attrs.field(default="trailing", kw_only=True)
    max_wait: float | None = attrs.field(default=None, kw_only=True)

    @mode.validator
    def _check_mode(self, _attribute: attrs.Attribute, value: str) -> None:
        if value not in ("trailing", "leading"):
            raise ValueError(f"mode must be 'trailing' or 'leading' (got {value!r})")

    @max_wait.validator
    def _check_max_wait(self, _attribute: attrs.Attribute, value: float | None) -> None:
        if value is None:
            return
        check_positive_number("max_wait", value, allow_zero=True)
        if value < self.wait:
            raise ValueError(f"max_wait must be >= wait ({self.wait!r}) (got {value!r})")

    @key.validator
    def _check_key(self, _attribute: attrs.Attribute, value: Any) -> None:
        if value is not None and not callable(value):
            raise TypeError(f"key must be a callable or None (got {value!r})")


@attrs.frozen
class Retention:
    """Finished jobs older than ``max_age`` seconds, or beyond the newest ``max_count``, leave."""

    max_age: float = attrs.field(default=7 * 86400, validator=_positive())
    max_count: int = attrs.field(default=100_000, validator=_int_at_least(0))


@attrs.frozen
class Restart:
    """OTP supervision of a queue's actors: ``max_restarts`` crashes within ``within`` seconds."""

    max_restarts: int = attrs.field(default=3, validator=_int_at_least(0))
    within: float = attrs.field(default=5.0, validator=_positive())
    strategy: str = attrs.field(default="one_for_one")

    @strategy.validator
    def _check_strategy(self, _attribute: attrs.Attribute, value: str) -> None:
        if value not in ("one_for_one", "one_for_all"):
            raise ValueError(f"strategy must be 'one_for_one' or 'one_for_all' (got {value!r})")


def _optional_callable(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{attribute.name} must be a function or an async function (got {value!r})")


@attrs.frozen
class Hooks:
    """Callbacks on a job's transitions; each runs only after its transition is durable.

    ``on_start(job)``, ``on_success(job, result)``, ``on_error(job, exc)`` after every failed
    attempt, ``on_failure(job, exc)`` once the job failed for good, ``on_cancel(job)``. Each may be
    a plain or an async function. A hook that raises crashes the actor that runs it.
    """

    on_start: Callable[..., Any] | None = attrs.field(default=None, validator=_optional_callable)
    on_success: Callable[..., Any] | None = attrs.field(default=None, validator=_optional_callable)
    on_error: Callable[..., Any] | None = attrs.field(default=None, validator=_optional_callable)
    on_failure: Callable[..., Any] | None = attrs.field(default=None, validator=_optional_callable)
    on_cancel: Callable[..., Any] | None = attrs.field(default=None, validator=_optional_callable)


# --------------------------------------------------------------------------------------------
# Supervision reports


@attrs.frozen
class CrashInfo:
    """One crash of an actor: which, when, and the error."""

    actor: str
    at: _dt.datetime
    error: str


@attrs.frozen
class QueueStatistics:
    """A queue's live numbers (``queue.statistics()``: sync and cheap): from memory, and, where
    jobs wait beyond the queue's in-memory window, their number from the journal's counters."""

    name: str
    concurrency: int
    paused: bool
    ready: int  # pending jobs waiting for a slot (those beyond the in-memory window included)
    delayed: int  # (likewise)
    running: int
    restarts: dict[str, int]  # actor name -> times it was restarted
    last_crash: CrashInfo | None

    @property
    def total_restarts(self) -> int:
        return sum(self.restarts.values())


# --------------------------------------------------------------------------------------------
# Jobs


@attrs.frozen
class Job:
    """What a handler receives: one attempt of one job."""

    id: str
    queue: str
    payload: Any
    attempt: int
    priority: int


@attrs.frozen
class JobRecord:
    """A job as the journal holds it. Times are wall-clock epoch seconds."""

    id: str
    queue: str
    state: JobState
    payload: Any
    priority: int
    seq: int  # the log sequence number of its enqueue: unique, in enqueue order
    created_at: float
    ready_at: float  # when it became (or becomes) ready: enqueue, run_at or retry time
    run_at: float | None = None  # due time while delayed
    attempts: int = 0
    max_attempts: int | None = None  # per-job override of the queue's retry policy
    timeout: float | None = None  # per-job override of the queue's timeout
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    error: str | None = None
    superseded_by: str | None = None
    epoch: int = 0  # boot epoch of the latest start
    interrupted: bool = False  # the latest attempt was cut short; the retry policy must decide
    debounce_key: str | None = None
    debounce_first_at: float | None = None  # the first enqueue of its debounce burst
    leading: bool = False  # a leading job of a debounced queue (mode "leading")
    log: tuple[int, ...] = ()  # sequence numbers of this job's log entries


@attrs.frozen
class LiveEntry:
    """A live (pending, delayed or running) job as the journal's state index holds it: what a
    queue needs to schedule it, without its payload, result or history (see
    ``Journal.live_entries``). Times are wall-clock epoch seconds, as in :class:`JobRecord`."""

    id: str
    seq: int
    state: JobState
    priority: int
    ready_at: float
    run_at: float | None
    attempts: int
    max_attempts: int | None
    timeout: float | None
    interrupted: bool
    debounce_key: str | None
    debounce_first_at: float | None
    leading: bool
    created_at: float

    @classmethod
    def from_record(cls, rec: JobRecord) -> LiveEntry:
        return cls(rec.id, rec.seq, rec.state, rec.priority, rec.ready_at, rec.run_at,
                   rec.attempts, rec.max_attempts, rec.timeout, rec.interrupted,
                   rec.debounce_key, rec.debounce_first_at, rec.leading, rec.created_at)


@attrs.frozen
class JobInfo:
    """A job as it stands, as ``status`` and ``list`` report it."""

    id: str
    queue: str
    state: JobState
    payload: Any
    priority: int
    attempts: int
    result: Any
    error: str | None
    superseded_by: str | None
    created_at: _dt.datetime
    started_at: _dt.datetime | None
    finished_at: _dt.datetime | None
    run_at: _dt.datetime | None = None
    max_attempts: int | None = None
    debounce_key: str | None = None

    @classmethod
    def from_record(cls, rec: JobRecord) -> JobInfo:
        return cls(
            id=rec.id,
            queue=rec.queue,
            state=rec.state,
            payload=rec.payload,
            priority=rec.priority,
            attempts=rec.attempts,
            result=rec.result,
            error=rec.error,
            superseded_by=rec.superseded_by,
            created_at=to_datetime(rec.created_at),  # type: ignore[arg-type]
            started_at=to_datetime(rec.started_at),
            finished_at=to_datetime(rec.finished_at),
            run_at=to_datetime(rec.run_at) if rec.state is JobState.DELAYED else None,
            max_attempts=rec.max_attempts,
            debounce_key=rec.debounce_key,
        )


# --------------------------------------------------------------------------------------------
# Journal events: one per state transition, appended to the log and folded into the record.


@attrs.frozen
class Enqueued:
    record: JobRecord


@attrs.frozen
class Started:
    id: str
    at: float
    attempt: int
    epoch: int


@attrs.frozen
class Due:
    """A delayed job became ready."""

    id: str
    at: float


@attrs.frozen
class Succeeded:
    id: str
    at: float
    result: Any


@attrs.frozen
class AttemptFailed:
    """An attempt failed and the job will be retried (at ``retry_at``; now if None)."""

    id: str
    at: float
    error: str
    retry_at: float | None


@attrs.frozen
class Failed:
    """The job failed for good."""

    id: str
    at: float
    error: str


@attrs.frozen
class Cancelled:
    id: str
    at: float
    superseded_by: str | None = None


@attrs.frozen
class Requeued:
    """A running attempt was stopped by us (shutdown, a sibling's crash): it does not count."""

    id: str
    at: float


@attrs.frozen
class Interrupted:
    """A running attempt was cut short by a crash; the queue's retry policy decides on spawn."""

    id: str
    at: float
    error: str


Event = Union[  # noqa: UP007 - a runtime Union: cattrs' tagged-union strategy takes it
    Enqueued, Started, Due, Succeeded, AttemptFailed, Failed, Cancelled, Requeued, Interrupted]
EVENT_TAGS: dict[type, str] = {
    Enqueued: "enq",
    Started: "start",
    Due: "due",
    Succeeded: "ok",
    AttemptFailed: "retry",
    Failed: "fail",
    Cancelled: "cancel",
    Requeued: "requeue",
    Interrupted: "intr",
}

# The states as module globals: an enum class attribute lookup (``JobState.RUNNING``) costs
# ~80 ns, a global ~10 ns, and the folds run for every transition.
_PENDING, _DELAYED, _RUNNING = JobState.PENDING, JobState.DELAYED, JobState.RUNNING
_COMPLETED, _FAILED, _CANCELLED = JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED


def apply_event(rec: JobRecord | None, ev: Event, seq: int) -> JobRecord | None:
    """Fold one event into a job's record; None where the transition is not allowed.

    ``seq`` is the log sequence number the event is written under. An event that does not fit
    the record (a start of a job cancelled meanwhile, an enqueue of an id already held) is refused
    rather than applied, so two writers racing on one job can never corrupt it.

    Each transition builds its record with one positional constructor call naming every field
    (``attrs.evolve`` costs about three times as much, and this runs for every transition); the
    fields follow :class:`JobRecord`'s order: id, queue, state, payload, priority, seq,
    created_at, ready_at, run_at, attempts, max_attempts, timeout, started_at, finished_at,
    result, error, superseded_by, epoch, interrupted, debounce_key, debounce_first_at, leading,
    log.
    """
    if isinstance(ev, Enqueued):
        if rec is not None:
            return None
        return enqueued_record(ev.record, seq)
    if rec is None or rec.state in _TERMINAL:
        return None
    fold = _FOLDS.get(type(ev))
    if fold is None:  # a subclass of an event class, or not an event at all
        fold = next((f for base, f in _FOLDS.items() if isinstance(ev, base)), None)
        if fold is None:
            raise TypeError(f"not a journal event: {ev!r}")  # pragma: no cover
    return fold(rec, ev, rec.log + (seq,))


def enqueued_record(r: JobRecord, seq: int) -> JobRecord:
    """The record an ``Enqueued(r)`` written under ``seq`` starts a job with."""
    return _record(r.id, r.queue, r.state, r.payload, r.priority, seq, r.created_at,
                   r.ready_at, r.run_at, r.attempts, r.max_attempts, r.timeout,
                   r.started_at, r.finished_at, r.result, r.error, r.superseded_by,
                   r.epoch, r.interrupted, r.debounce_key, r.debounce_first_at, r.leading,
                   (seq,))


def _started(r: JobRecord, ev: Started, log: tuple[int, ...]) -> JobRecord | None:
    if (r.state is not _PENDING and r.state is not _DELAYED) or r.interrupted:
        return None
    return _record(r.id, r.queue, _RUNNING, r.payload, r.priority, r.seq, r.created_at,
                     r.ready_at, None, ev.attempt, r.max_attempts, r.timeout, ev.at,
                     r.finished_at, r.result, r.error, r.superseded_by, ev.epoch, r.interrupted,
                     r.debounce_key, r.debounce_first_at, r.leading, log)


def _due(r: JobRecord, ev: Due, log: tuple[int, ...]) -> JobRecord | None:
    if r.state is not _DELAYED:
        return None
    return _record(r.id, r.queue, _PENDING, r.payload, r.priority, r.seq, r.created_at,
                     r.ready_at, None, r.attempts, r.max_attempts, r.timeout, r.started_at,
                     r.finished_at, r.result, r.error, r.superseded_by, r.epoch, r.interrupted,
                     r.debounce_key, r.debounce_first_at, r.leading, log)


def _succeeded(r: JobRecord, ev: Succeeded, log: tuple[int, ...]) -> JobRecord | None:
    if r.state is not _RUNNING:
        return None
    return _record(r.id, r.queue, _COMPLETED, r.payload, r.priority, r.seq, r.created_at,
                     r.ready_at, r.run_at, r.attempts, r.max_attempts, r.timeout, r.started_at,
                     ev.at, ev.result, r.error, r.superseded_by, r.epoch, r.interrupted,
                     r.debounce_key, r.debounce_first_at, r.leading, log)


def _attempt_failed(r: JobRecord, ev: AttemptFailed, log: tuple[int, ...]) -> JobRecord | None:
    if r.state is not _RUNNING and not r.interrupted:
        return None
    if ev.retry_at is not None and ev.retry_at > ev.at:
        state, run_at, ready_at = _DELAYED, ev.retry_at, ev.retry_at
    else:
        state, run_at, ready_at = _PENDING, None, ev.at
    return _record(r.id, r.queue, state, r.payload, r.priority, r.seq, r.created_at,
                     ready_at, run_at, r.attempts, r.max_attempts, r.timeout, r.started_at,
                     r.finished_at, r.result, ev.error, r.superseded_by, r.epoch, False,
                     r.debounce_key, r.debounce_first_at, r.leading, log)


def _failed(r: JobRecord, ev: Failed, log: tuple[int, ...]) -> JobRecord | None:
    return _record(r.id, r.queue, _FAILED, r.payload, r.priority, r.seq, r.created_at,
                     r.ready_at, None, r.attempts, r.max_attempts, r.timeout, r.started_at,
                     ev.at, r.result, ev.error, r.superseded_by, r.epoch, False,
                     r.debounce_key, r.debounce_first_at, r.leading, log)


def _cancelled(r: JobRecord, ev: Cancelled, log: tuple[int, ...]) -> JobRecord | None:
    return _record(r.id, r.queue, _CANCELLED, r.payload, r.priority, r.seq, r.created_at,
                     r.ready_at, None, r.attempts, r.max_attempts, r.timeout, r.started_at,
                     ev.at, r.result, r.error, ev.superseded_by, r.epoch, False,
                     r.debounce_key, r.debounce_first_at, r.leading, log)


def _requeued(r: JobRecord, ev: Requeued, log: tuple[int, ...]) -> JobRecord | None:
    if r.state is not _RUNNING:
        return None
    return _record(r.id, r.queue, _PENDING, r.payload, r.priority, r.seq, r.created_at,
                     r.ready_at, r.run_at, max(r.attempts - 1, 0), r.max_attempts, r.timeout,
                     r.started_at, r.finished_at, r.result, r.error, r.superseded_by, r.epoch,
                     r.interrupted, r.debounce_key, r.debounce_first_at, r.leading, log)


def _interrupted(r: JobRecord, ev: Interrupted, log: tuple[int, ...]) -> JobRecord | None:
    if r.state is not _RUNNING:
        return None
    return _record(r.id, r.queue, _PENDING, r.payload, r.priority, r.seq, r.created_at,
                     r.ready_at, r.run_at, r.attempts, r.max_attempts, r.timeout, r.started_at,
                     r.finished_at, r.result, ev.error, r.superseded_by, r.epoch, True,
                     r.debounce_key, r.debounce_first_at, r.leading, log)


# The folds above call JobRecord positionally: a field added, removed or moved must be handled
# there (and in _codec's record layout) before this module imports again.
_FOLDED_FIELDS = (
    "id", "queue", "state", "payload", "priority", "seq", "created_at", "ready_at", "run_at",
    "attempts", "max_attempts", "timeout", "started_at", "finished_at", "result", "error",
    "superseded_by", "epoch", "interrupted", "debounce_key", "debounce_first_at", "leading", "log",
)
if tuple(f.name for f in attrs.fields(JobRecord)) != _FOLDED_FIELDS:  # pragma: no cover
    raise RuntimeError("JobRecord's fields changed: update apply_event's folds")


def _record_builder(fast: bool = True) -> Callable[..., JobRecord]:
    """:func:`_builder` of JobRecord."""
    return _builder(JobRecord, fast)


def _builder(cls: type, fast: bool = True) -> Callable[..., Any]:
    """A positional constructor of the frozen attrs class ``cls`` (JobRecord for the folds
    above; LiveEntry, per entry a queue reads from an index; the events and the Job the queue
    actor builds per job). It makes a draft (a subclass of ``cls`` with no slots of its own,
    whose attributes plain assignment can set: ``STORE_ATTR`` on a slot is specialised by the
    interpreter, and the frozen ``__setattr__`` is set aside), assigns its slots (~10 ns
    each) and turns it into a ``cls`` (``__class__`` assignment: the layouts are the same);
    ~4x cheaper than attrs' ``__init__``, which sets each slot through ``object.__setattr__``
    by name (~50 ns each). Where the interpreter refuses that (``fast=False``, or the
    self-check below fails), it sets each slot through its descriptor's ``__set__`` (~30%
    cheaper than ``__init__``). Equivalent to ``cls(...)`` as long as ``cls`` has no
    validators, converters or ``__attrs_post_init__`` (checked here, at import); nobody sees
    the draft."""
    fields = attrs.fields(cls)
    if (any(f.validator or f.converter for f in fields)
            or hasattr(cls, "__attrs_post_init__")):  # pragma: no cover
        raise RuntimeError(f"{cls.__name__} has validators or converters: drop _builder")
    names = [f.name for f in fields]
    params = ", ".join(names)
    draft = type(f"_{cls.__name__}Draft", (cls,), {
        "__slots__": (), "__setattr__": object.__setattr__, "__delattr__": object.__delattr__})
    ns: dict[str, Any] = {"_new": object.__new__, "_cls": cls, "_draft": draft}
    if fast:
        body = "".join(f"    r.{n} = {n}\n" for n in names)
        exec(f"def build({params}):\n    r = _new(_draft)\n{body}"
             f"    r.__class__ = _cls\n    return r\n", ns)
        build = ns["build"]
        values = [object() for _ in names]
        try:
            probe = build(*values)
            if (type(probe) is cls
                    and all(getattr(probe, n) is v for n, v in zip(names, values))):
                return build  # type: ignore[no-any-return]
        except TypeError:  # pragma: no cover - an interpreter refusing the __class__ change
            pass
    for name in names:  # the fallback
        ns["_set_" + name] = getattr(cls, name).__set__
    body = "".join(f"    _set_{n}(r, {n})\n" for n in names)
    exec(f"def build({params}):\n    r = _new(_cls)\n{body}    return r\n", ns)
    return ns["build"]  # type: ignore[no-any-return]


_record = _record_builder()
_live_entry = _builder(LiveEntry)

_FOLDS: dict[type, Callable[[JobRecord, Any, tuple[int, ...]], JobRecord | None]] = {
    Started: _started,
    Due: _due,
    Succeeded: _succeeded,
    AttemptFailed: _attempt_failed,
    Failed: _failed,
    Cancelled: _cancelled,
    Requeued: _requeued,
    Interrupted: _interrupted,
}


def format_error(exc: BaseException) -> str:
    """``"ExceptionType: message"``, as JobInfo.error holds it."""
    return f"{type(exc).__name__}: {exc}"

