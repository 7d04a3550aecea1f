"""The public surface: ``open_runtime``, ``spawn_queue``, the runtime and queue handles."""

from __future__ import annotations

import contextvars
import datetime as _dt
import inspect
import os
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio

from ._actor import (
    AdoptMsg,
    CancelMsg,
    EnqueueMsg,
    EnqueueOneMsg,
    JoinMsg,
    NewJob,
    PauseMsg,
    QueueActor,
    QueueSpec,
)
from ._clock import from_wall, now_and_wall, to_wall, wall_now
from ._codec import check_structures, normalize
from ._core import UNASSIGNED_SEQ, CoreJob
from ._debounce import resolve_key
from ._errors import JobCancelled, JobFailed, UnknownJob
from ._journal import Journal
from ._model import (
    PRIORITIES,
    Cancelled,
    Debounce,
    Hooks,
    JobInfo,
    JobRecord,
    JobState,
    QueueStatistics,
    Restart,
    Retention,
    Retry,
    Throttle,
    _record,
    check_int_at_least,
    check_positive_number,
    parse_priority,
    parse_state,
)
from ._supervisor import log
from ._writer import Records, Writer

_current_runtime: contextvars.ContextVar[Runtime] = contextvars.ContextVar("actorq_runtime")

DURABILITIES = ("fsync", "os")
SHUTDOWN_GRACE = 10.0  # seconds the queues get to journal outcomes already reached
_MAX_ID_BYTES = 200
_DEFAULT_PRIORITY = "normal"
_NORMAL = PRIORITIES[_DEFAULT_PRIORITY]


class _RandomHex:
    """64-bit random suffixes from ``os.urandom``, read 4 KiB at a time (one system call per 512
    ids, not per id); the buffer is dropped in a forked child."""

    def __init__(self) -> None:
        self._hex = ""
        self._at = 0
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._hex, self._at = "", 0

    def take(self) -> str:
        at = self._at
        if at >= len(self._hex):
            self._hex, at = secrets.token_bytes(4096).hex(), 0
        self._at = at + 16
        return self._hex[at:at + 16]


_random_hex = _RandomHex()


def new_job_id() -> str:
    """32 hex digits: the wall clock in nanoseconds, then 64 random bits. Ids generated later sort
    later, so new jobs land at the end of the journal's B-trees instead of dirtying a random page
    each (random keys cost ~17% more per journaled transition)."""
    return f"{time.time_ns():016x}{_random_hex.take()}"


def _check_instance(name: str, value: Any, cls: type | tuple[type, ...], what: str) -> None:
    if value is not None and not isinstance(value, cls):
        raise TypeError(f"{name} must be {what} or None (got {value!r})")


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str (got {name!r})")
    if not name or "\x00" in name or len(name.encode()) > 100:
        raise ValueError(f"{what} must be 1 to 100 bytes of UTF-8 without NUL (got {name!r})")
    return name


@attrs.define(eq=False)
class _Waiter:
    event: trio.Event = attrs.field(factory=trio.Event)
    record: JobRecord | None = None


class Runtime:
    """An open journal and the queues that run on it. Create it with :func:`open_runtime`."""

    def __init__(self, journal: Journal, durability: str) -> None:
        self.journal = journal
        self.durability = durability
        self.writer = Writer(journal, durability == "fsync", self._on_commit)
        self.queues: dict[str, QueueActor] = {}
        self._handles: dict[str, Queue] = {}
        self._waiters: dict[str, list[_Waiter]] = {}
        self._nursery: trio.Nursery | None = None
        self.closed = False

    @property
    def path(self) -> os.PathLike[str]:
        return self.journal.path

    # ---- queues

    async def spawn_queue(
        self,
        name: str,
        handler: Callable[..., Any],
        *,
        concurrency: int = 1,
        retry: Retry | None = None,
        timeout: float | None = None,
        throttle: Throttle | None = None,
        debounce: Debounce | None = None,
        dead_letter: str | None = None,
        restart: Restart | None = None,
        hooks: Hooks | None = None,
        payload_type: type | None = None,
        retention: Retention | None = None,
        rng: random.Random | None = None,
    ) -> Queue:
        """Start a queue actor and its workers; returns its handle once the journal's jobs of
        this queue are loaded. See API.md for every argument. ``rng`` (an extension) is the
        ``random.Random`` that backoff jitter draws from: pass a seeded one for reproducible
        delays."""
        _check_name(name, "name")
        if not callable(handler):
            raise TypeError(f"handler must be callable (got {handler!r})")
        check_int_at_least("concurrency", concurrency, 1)
        if timeout is not None:
            check_positive_number("timeout", timeout)
        _check_instance("retry", retry, Retry, "an actorq.Retry")
        _check_instance("throttle", throttle, Throttle, "an actorq.Throttle")
        _check_instance("debounce", debounce, Debounce, "an actorq.Debounce")
        _check_instance("restart", restart, Restart, "an actorq.Restart")
        _check_instance("hooks", hooks, Hooks, "an actorq.Hooks")
        _check_instance("retention", retention, Retention, "an actorq.Retention")
        _check_instance("rng", rng, random.Random, "a random.Random")
        if dead_letter is not None:
            _check_name(dead_letter, "dead_letter")
            if dead_letter == name:
                raise ValueError(f"dead_letter must name another queue (got {dead_letter!r})")
        if payload_type is not None and not (
                isinstance(payload_type, type) and attrs.has(payload_type)):
            raise TypeError(f"payload_type must be an attrs class (got {payload_type!r})")
        if self.closed or self._nursery is None:
            raise RuntimeError("this runtime is closed")
        if name in self.queues:
            raise ValueError(f"name must be unique within a runtime: queue {name!r} exists")
        call = getattr(handler, "__call__", None)  # noqa: B004
        is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)
        spec = QueueSpec(
            name=name, handler=handler, is_sync=not is_async, concurrency=concurrency,
            retry=retry, timeout=timeout, throttle=throttle, debounce=debounce,
            dead_letter=dead_letter, restart=restart or Restart(), hooks=hooks or Hooks(),
            payload_type=payload_type, retention=retention or Retention(),
        )
        actor = QueueActor(self, spec, rng or random.Random())
        self.queues[name] = actor
        try:
            await self._nursery.start(actor.supervise)
        except BaseException:
            del self.queues[name]
            raise
        handle = Queue(self, actor)
        self._handles[name] = handle
        return handle

    # ---- jobs of any queue

    async def status(self, job_id: str) -> JobInfo:
        """The job as it stands; :class:`UnknownJob` for an id the journal does not hold."""
        await trio.lowlevel.checkpoint()
        return JobInfo.from_record(self._get(job_id))

    async def wait(self, job_id: str) -> Any:
        """Wait until the job finishes: its result, or :class:`JobFailed` /
        :class:`JobCancelled`. A job superseded by debounce follows its chain to the survivor."""
        await trio.lowlevel.checkpoint()
        rec = self._get(job_id)
        while True:
            if rec.state is JobState.COMPLETED:
                return rec.result
            if rec.state is JobState.FAILED:
                raise JobFailed(rec.id, rec.error)
            if rec.state is JobState.CANCELLED:
                if rec.superseded_by is None:
                    raise JobCancelled(rec.id)
                rec = self._get(rec.superseded_by)
                continue
            waiter = _Waiter()
            self._waiters.setdefault(rec.id, []).append(waiter)
            try:
                await waiter.event.wait()
            finally:
                waiters = self._waiters.get(rec.id)
                if waiters and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[rec.id]
            if waiter.record is None:
                raise RuntimeError(f"the runtime closed while job {rec.id!r} was waited on")
            rec = waiter.record

    async def cancel(self, job_id: str) -> bool:
        """Cancel a waiting or running job; False where it had already finished."""
        rec = self._get(job_id)
        actor = self.queues.get(rec.queue)
        if actor is not None:
            return await actor.call(partial(CancelMsg, job_id))
        if rec.state.terminal:
            await trio.lowlevel.checkpoint()
            return False
        (new,) = await self.writer.commit([Cancelled(job_id, wall_now())])
        return new is not None

    def _get(self, job_id: str) -> JobRecord:
        if not isinstance(job_id, str):
            raise TypeError(f"job_id must be a str (got {job_id!r})")
        rec = self._reader().get(job_id)
        if rec is None:
            raise UnknownJob(job_id)
        return rec

    def _reader(self) -> Journal:
        if self.journal.closed:
            raise RuntimeError(f"the runtime of {str(self.journal.path)!r} is closed")
        return self.journal

    # ---- called by actors

    def _on_commit(self, records: Records) -> None:
        waiters = self._waiters
        if not waiters:
            return
        for rec in records:
            if rec is not None and rec.state.terminal and rec.id in waiters:
                for waiter in waiters.pop(rec.id):
                    waiter.record = rec
                    waiter.event.set()

    def deliver(self, rec: JobRecord | None) -> None:
        """A job was journaled for a queue by someone else: tell that queue, if spawned here."""
        if rec is None:
            return
        actor = self.queues.get(rec.queue)
        if actor is not None:
            actor.send(AdoptMsg(rec))

    def dead_letter_record(self, queue: str, job_id: str, from_queue: str, payload: Any,
                           error: str, attempts: int, wall: float) -> JobRecord:
        return JobRecord(
            id=new_job_id(), queue=queue, state=JobState.PENDING,
            payload={"job_id": job_id, "queue": from_queue, "payload": payload, "error": error,
                     "attempts": attempts},
            priority=2, seq=0, created_at=wall, ready_at=wall,
        )

    async def _stop_queues(self) -> None:
        """Graceful part of closing: handlers are cancelled, outcomes of handlers that already
        returned are journaled. Bounded by SHUTDOWN_GRACE seconds; then the rest is cancelled."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + SHUTDOWN_GRACE
            async with trio.open_nursery() as nursery:
                for actor in list(self.queues.values()):
                    nursery.start_soon(actor.stop)

    def _close_waiters(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.event.set()
        self._waiters.clear()


class Queue:
    """A handle on a spawned queue: enqueue jobs, inspect and control them."""

    def __init__(self, runtime: Runtime, actor: QueueActor) -> None:
        self.runtime = runtime
        self._actor = actor
        self.name = actor.name

    def __repr__(self) -> str:
        return f"<actorq.Queue {self.name!r}>"

    def _new_job(self, payload: Any, priority: Any, delay: Any, run_at: Any, job_id: Any,
                 max_attempts: Any, timeout: Any, debounce_key: Any, now: float, wall: float
                 ) -> NewJob:
        spec = self._actor.spec
        stored = normalize(payload)
        if spec.payload_type is not None:
            check_structures(stored, spec.payload_type)
        # the default (the very object: no comparison with an arbitrary value) needs no parsing
        prio = _NORMAL if priority is _DEFAULT_PRIORITY else parse_priority(priority)
        if delay is not None and run_at is not None:
            raise ValueError("delay and run_at cannot both be given")
        due: float | None = None
        if delay is not None:
            due = now + check_positive_number("delay", delay, allow_zero=True)
        elif run_at is not None:
            if not isinstance(run_at, _dt.datetime):
                raise TypeError(f"run_at must be a datetime (got {run_at!r})")
            if run_at.tzinfo is None or run_at.tzinfo.utcoffset(run_at) is None:
                raise ValueError(f"run_at must be timezone-aware (got naive {run_at!r})")
            due = from_wall(run_at.timestamp())
        given = job_id is not None
        if given:
            if not isinstance(job_id, str):
                raise TypeError(f"job_id must be a str (got {job_id!r})")
            if not job_id or len(job_id.encode()) > _MAX_ID_BYTES:
                raise ValueError(f"job_id must be 1 to {_MAX_ID_BYTES} bytes of UTF-8 "
                                 f"(got {job_id!r})")
        else:
            job_id = new_job_id()
        if max_attempts is not None:
            check_int_at_least("max_attempts", max_attempts, 1)
        if timeout is not None:
            timeout = check_positive_number("timeout", timeout)
        key = None
        if spec.debounce is not None:
            if delay is not None or run_at is not None:
                raise ValueError(f"delay and run_at cannot be given on a debounced queue "
                                 f"(queue {self.name!r} has debounce=)")
            key = resolve_key(spec.debounce, self.name, payload, debounce_key)
        elif debounce_key is not None:
            raise ValueError(f"debounce_key needs a queue spawned with debounce= "
                             f"(queue {self.name!r} has none)")
        delayed = due is not None and due > now
        ready_at = due if delayed else now
        # _record: JobRecord(...) without attrs' per-field __setattr__ (this runs per enqueue),
        # positional, in field order: id, queue, state, payload, priority, seq, created_at,
        # ready_at, run_at, attempts, max_attempts, timeout, started_at, finished_at, result,
        # error, superseded_by, epoch, interrupted, debounce_key, debounce_first_at, leading, log
        record = _record(
            job_id, self.name, JobState.DELAYED if delayed else JobState.PENDING, stored, prio,
            0, wall, wall + (ready_at - now),
            wall + (due - now) if delayed else None,  # type: ignore[operator]
            0, max_attempts, timeout, None, None, None, None, None, 0, False, key, None, False,
            (),
        )
        # id, priority, seq, ready_at (as journaled: the ranking time), attempts, max_attempts,
        # timeout, where, due, key
        core = CoreJob(job_id, prio, UNASSIGNED_SEQ, record.ready_at, 0, max_attempts, timeout,
                       "ready", due if delayed else None, key)
        return record, core, given

    def _like(self, payload: Any, first: NewJob) -> NewJob:
        """A job of the batch whose first job is ``first``: ``_new_job`` with the same options
        (validated and resolved once, by the first), the same ``now`` and no ``job_id``.
        Not for a debounced queue (a job's key depends on its payload)."""
        spec = self._actor.spec
        stored = normalize(payload)
        if spec.payload_type is not None:
            check_structures(stored, spec.payload_type)
        job_id = new_job_id()
        rec, core = first[0], first[1]
        record = _record(
            job_id, rec.queue, rec.state, stored, rec.priority, 0, rec.created_at, rec.ready_at,
            rec.run_at, 0, rec.max_attempts, rec.timeout, None, None, None, None, None, 0, False,
            None, None, False, (),
        )
        return record, CoreJob(job_id, core.priority, UNASSIGNED_SEQ, core.ready_at, 0,
                               core.max_attempts, core.timeout, "ready", core.due, None), False

    async def enqueue(
        self,
        payload: Any,
        *,
        priority: int | str = _DEFAULT_PRIORITY,
        delay: float | None = None,
        run_at: _dt.datetime | None = None,
        job_id: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        debounce_key: str | None = None,
    ) -> str:
        """Record a job durably and return its id (an existing ``job_id`` adds nothing)."""
        now, wall = now_and_wall()
        record, core, given = self._new_job(payload, priority, delay, run_at, job_id,
                                            max_attempts, timeout, debounce_key, now, wall)
        msg = EnqueueOneMsg(record, core, given)
        self._actor.send(msg)
        job: str = await msg.get()
        return job

    async def enqueue_batch(self, payloads: Iterable[Any], **options: Any) -> list[str]:
        """Record many jobs in one journal transaction; their ids, in order. Takes the options
        of :meth:`enqueue` except ``job_id``. Nothing is recorded if any payload is invalid."""
        if "job_id" in options:
            raise TypeError("enqueue_batch() takes no job_id: each job gets its own id")
        unknown = set(options) - {"priority", "delay", "run_at", "max_attempts", "timeout",
                                  "debounce_key"}
        if unknown:
            raise TypeError(f"enqueue_batch() got unexpected options: {sorted(unknown)}")
        if isinstance(payloads, (str, bytes, dict)):
            raise TypeError(f"payloads must be an iterable of payloads (got {payloads!r})")
        opts = {"priority": _DEFAULT_PRIORITY, "delay": None, "run_at": None, "max_attempts": None,
                "timeout": None, "debounce_key": None, **options}
        now = trio.current_time()
        wall = to_wall(now)
        jobs: list[NewJob] = []
        # The options are validated and resolved once, by the first job; the others are built
        # like it (only a debounced queue's jobs differ by more than their payload).
        like = None if self._actor.spec.debounce is not None else self._like
        for index, payload in enumerate(payloads):
            try:
                if jobs and like is not None:
                    jobs.append(like(payload, jobs[0]))
                else:
                    jobs.append(self._new_job(payload, job_id=None, now=now, wall=wall, **opts))
            except Exception as exc:
                exc.add_note(f"(payloads[{index}] of enqueue_batch; nothing was recorded)")
                raise
        if not jobs:
            await trio.lowlevel.checkpoint()
            return []
        return await self._actor.call(lambda reply: EnqueueMsg(jobs, reply))

    async def status(self, job_id: str) -> JobInfo:
        """The job (of any queue) as it stands."""
        return await self.runtime.status(job_id)

    async def wait(self, job_id: str) -> Any:
        """Wait until the job (of any queue) finishes; see :meth:`Runtime.wait`."""
        return await self.runtime.wait(job_id)

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job (of any queue); False where it had already finished."""
        return await self.runtime.cancel(job_id)

    async def list(self, state: JobState | str | None = None, limit: int = 100
                   ) -> list[JobInfo]:
        """Jobs of this queue (of one state, if given): the oldest ``limit``, oldest first."""
        st = None if state is None else parse_state(state)
        check_int_at_least("limit", limit, 0)
        await trio.lowlevel.checkpoint()
        return [JobInfo.from_record(r) for r in self.runtime._reader().list(self.name, st, limit)]

    async def stats(self) -> dict[str, int]:
        """The number of this queue's jobs in each state (every state a key)."""
        await trio.lowlevel.checkpoint()
        return {state.value: n for state, n in self.runtime._reader().counts(self.name).items()}

    async def pause(self) -> None:
        """Stop starting jobs (running ones finish). Not persisted."""
        await self._actor.call(lambda reply: PauseMsg(True, reply))

    async def resume(self) -> None:
        """Start jobs again after :meth:`pause`."""
        await self._actor.call(lambda reply: PauseMsg(False, reply))

    async def join(self) -> None:
        """Wait until this queue has no pending, delayed or running job."""
        await self._actor.call(JoinMsg)

    def statistics(self) -> QueueStatistics:
        """Live numbers from memory: jobs ready, delayed and running, restarts per actor and
        the last crash. Sync and cheap."""
        return self._actor.statistics()


# ---------------------------------------------------------------------------------------------


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


@asynccontextmanager
async def open_runtime(path: str | os.PathLike[str], *, durability: str = "fsync"
                       ) -> AsyncIterator[Runtime]:
    """Open (or create) the journal at ``path`` and run queues on it until the block exits.

    ``durability="fsync"`` (default): every call that records a transition returns once it is on
    disk; concurrent transitions share one commit and one fsync. ``"os"``: committed without fsync
    in the event loop's thread (survives a crash of the process, not of the machine).

    Leaving the block stops every queue: running handlers are cancelled and their jobs go back to
    pending, the attempt uncounted. A second ``open_runtime`` of the same path raises
    :class:`JournalLocked`.
    """
    if durability not in DURABILITIES:
        raise ValueError(f"durability must be 'fsync' or 'os' (got {durability!r})")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or a path (got {path!r})")
    journal = Journal(path, sync=durability == "fsync")
    body_error: BaseException | None = None
    leaving: BaseException | None = None  # what leaves the runtime's block, if anything
    try:
        journal.interrupt_stale(wall_now())
        runtime = Runtime(journal, durability)
        try:
            async with trio.open_nursery() as root:
                await root.start(runtime.writer.supervise)
                try:
                    async with trio.open_nursery() as queues:
                        runtime._nursery = queues
                        token = _current_runtime.set(runtime)
                        try:
                            yield runtime
                        except BaseException as exc:
                            body_error = exc
                            raise
                        finally:
                            _current_runtime.reset(token)
                            runtime.closed = True
                            await runtime._stop_queues()
                            queues.cancel_scope.cancel()
                finally:
                    runtime.writer.close()
        except BaseExceptionGroup as group:
            leaving = group
            if body_error is not None and all(
                    leaf is body_error or isinstance(leaf, trio.Cancelled)
                    for leaf in _leaves(group)):
                raise body_error from None
            raise
        except BaseException as exc:
            leaving = exc
            raise
        finally:
            runtime._close_waiters()
            try:
                with trio.CancelScope(shield=True):
                    if durability == "fsync":
                        await trio.to_thread.run_sync(journal.requeue_running, wall_now())
                    else:
                        journal.requeue_running(wall_now())
            except Exception as exc:
                if leaving is None:
                    raise
                # What is already leaving open_runtime (a SupervisorError, say) says more; the
                # jobs left running are recorded interrupted at the next open, as after a crash.
                log.warning("could not requeue the running jobs at close: %r", exc)
    finally:
        journal.close()


async def spawn_queue(name: str, handler: Callable[..., Any], **options: Any) -> Queue:
    """Spawn a queue on the runtime of the enclosing :func:`open_runtime` (or ``runtime=``)."""
    runtime = options.pop("runtime", None)
    if runtime is None:
        try:
            runtime = _current_runtime.get()
        except LookupError:
            raise RuntimeError(
                "actorq.spawn_queue() needs a runtime: call it inside "
                "'async with actorq.open_runtime(path)' or pass runtime="
            ) from None
    elif not isinstance(runtime, Runtime):
        raise TypeError(f"runtime must be an actorq Runtime (got {runtime!r})")
    return await runtime.spawn_queue(name, handler, **options)

