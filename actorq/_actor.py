"""Queue actors and worker actors: the thin trio shell around :class:`QueueCore`.

One queue is a small supervision tree::

    queue supervisor (restart loop) ─┬─ queue actor: QueueCore + inbox
                                     └─ worker supervisor ─ worker actors × concurrency

The queue actor works in rounds: it waits for messages (or the core's next wake-up), drains its
inbox, feeds everything to the core, journals the events the core decided in one commit, and only
then replies, hands started jobs to the workers, and runs hooks. Nothing is told before it is
durable.
"""

from __future__ import annotations

import collections
import inspect
import math
import random
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import attrs
import outcome
import trio

from ._clock import from_wall, to_wall, wall_now, wall_offset
from ._codec import normalize, structure
from ._core import CoreJob, GiveUp, QueueCore, RetryAt
from ._debounce import Debouncer
from ._errors import (
    Discard,
    JobInterrupted,
    JobTimeout,
    QueueStopped,
    SupervisorError,
    UnknownJob,
)
from ._model import (
    AttemptFailed,
    Cancelled,
    Debounce,
    Due,
    Enqueued,
    Event,
    Failed,
    Hooks,
    Job,
    JobRecord,
    JobState,
    LiveEntry,
    QueueStatistics,
    Requeued,
    Restart,
    Retention,
    Retry,
    Started,
    Succeeded,
    Throttle,
    _builder,
    format_error,
)
from ._supervisor import CrashLog, find_supervisor_error, log
from ._throttle import TokenBucket

if TYPE_CHECKING:
    from ._api import Runtime


@attrs.frozen
class QueueSpec:
    """A queue's configuration, validated by ``spawn_queue``."""

    name: str
    handler: Callable[..., Any]
    is_sync: bool
    concurrency: int = 1
    retry: Retry | None = None
    timeout: float | None = None
    throttle: Throttle | None = None
    debounce: Debounce | None = None
    dead_letter: str | None = None
    restart: Restart = Restart()
    hooks: Hooks = Hooks()
    payload_type: type | None = None
    retention: Retention = Retention()


# ---------------------------------------------------------------------------------------------
# Values built per job: positional constructors (``_model._builder``)

_started = _builder(Started)  # (id, at, attempt, epoch)
_succeeded = _builder(Succeeded)  # (id, at, result)
_enqueued = _builder(Enqueued)  # (record)
_job = _builder(Job)  # (id, queue, payload, attempt, priority)


# ---------------------------------------------------------------------------------------------
# Messages


class Reply:
    """A one-shot answer slot: the actor sets it after the commit it depends on. One task at a
    time may wait for it (:meth:`get`, cancellable)."""

    __slots__ = ("_done", "_task", "value", "error")

    def __init__(self) -> None:
        self._done = False
        self._task: trio.lowlevel.Task | None = None
        self.value: Any = None
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._done

    @trio.lowlevel.enable_ki_protection
    def _wake(self) -> None:
        self._done = True
        task = self._task
        if task is not None:
            self._task = None
            # The answer travels with the wake-up: the waiter's wait returns it (or raises it).
            answer = outcome.Value(self.value) if self.error is None else outcome.Error(self.error)
            trio.lowlevel.reschedule(task, answer)

    def set(self, value: Any) -> None:
        if not self._done:
            self.value = value
            self._wake()

    def fail(self, error: BaseException) -> None:
        if not self._done:
            self.error = error
            self._wake()

    def get(self) -> Awaitable[Any]:
        """``await reply.get()``: the answer's value, or its error raised (cancellable; a
        checkpoint either way). Not an ``async def``: while the answer is not there yet (the
        usual case), it hands back trio's own wait, whose result is the answer :meth:`_wake`
        sends, and the Reply is its abort function, so that no coroutine and no bound method
        of ours is built and kept alive per request (per ``enqueue``; both showed up in every
        garbage collection of the event loop). The waiting task is registered by the call, so
        the result must be awaited at once (``await reply.get()``), never kept for later."""
        if self._done:
            return self._answered()
        assert self._task is None, "one task at a time waits for a Reply"
        self._task = trio.lowlevel.current_task()
        return trio.lowlevel.wait_task_rescheduled(self)  # noqa: ASYNC105 - the caller awaits it

    async def _answered(self) -> Any:
        await trio.lowlevel.checkpoint()
        if self.error is not None:
            raise self.error
        return self.value

    def __call__(self, _: Any) -> trio.lowlevel.Abort:
        """The abort function of :meth:`get`'s wait: a cancelled waiter leaves."""
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED


class _NoReply(Reply):
    """For a request whose sender does not wait for the answer."""

    __slots__ = ()

    def _wake(self) -> None:
        pass


_NO_REPLY = _NoReply()
_NO_CANCELS: list[Reply] = []  # never appended to


#: A job to enqueue: its record, the core's view of it, and whether its id was given (an
#: idempotency key: check the journal for it). A plain tuple: built per job.
NewJob = tuple[JobRecord, CoreJob, bool]


@attrs.define(eq=False)  # not frozen: built per batch, ~3x cheaper
class EnqueueMsg:
    """Enqueue a batch of jobs; answered with their ids, in order."""

    jobs: list[NewJob]
    reply: Reply


class EnqueueOneMsg(Reply):
    """Enqueue one job (``Queue.enqueue``); answered with its id. The request is its own
    reply slot: one object per enqueue instead of a message, a reply, a list and a NewJob."""

    __slots__ = ("record", "core", "given_id")

    def __init__(self, record: JobRecord, core: CoreJob, given_id: bool) -> None:
        Reply.__init__(self)
        self.record = record
        self.core = core
        self.given_id = given_id

    @property
    def reply(self) -> Reply:
        return self


@attrs.frozen
class CancelMsg:
    job_id: str
    reply: Reply


@attrs.define(eq=False)  # not frozen: built per job, ~3x cheaper
class OutcomeMsg:
    """A worker's attempt ended: ``kind`` is "ok", "error" or "cancelled"."""

    generation: int
    job_id: str
    attempt: int
    kind: str
    result: Any
    error: BaseException | None
    payload: Any
    reply: Reply


@attrs.frozen
class CrashMsg:
    """The worker holding this job crashed: the attempt counts as failed."""

    generation: int
    job_id: str
    attempt: int
    error: BaseException
    payload: Any


@attrs.frozen
class RequeueMsg:
    """A sibling's crash stopped this attempt (one_for_all): back to pending, uncounted."""

    generation: int
    job_id: str
    attempt: int


@attrs.frozen
class ThreadReturnedMsg:
    job_id: str


@attrs.frozen
class PauseMsg:
    paused: bool
    reply: Reply


@attrs.frozen
class JoinMsg:
    reply: Reply


@attrs.frozen
class AdoptMsg:
    """A job of this queue was journaled by someone else (a dead letter)."""

    record: JobRecord


@attrs.frozen
class StopMsg:
    """Shutdown: after committing what came before, the actor answers and returns."""

    reply: Reply


@attrs.frozen
class KickMsg:
    """Run a round: something changed that may let a job start."""


_KICK = KickMsg()


# ---------------------------------------------------------------------------------------------


class _Round:
    """What one round decided: events to journal, then what to do once they are durable."""

    __slots__ = ("events", "on_record", "enqueued", "after", "answered", "new_ids", "finished",
                 "stop")

    def __init__(self, *, finished: bool = False) -> None:
        self.events: list[Event] = []
        self.on_record: list[tuple[int, Callable[[JobRecord | None], None]]] = []
        # Per-job bookkeeping as indexes into ``events`` (no callback object per job):
        self.enqueued: list[int] = []  # the Enqueued events of this queue's new jobs
        self.after: list[Callable[[], None]] = []
        self.answered: list[Reply] = []  # given their ``value`` once the round is durable
        self.new_ids: set[str] = set()
        self.finished = finished  # a job reached a terminal state: apply retention
        self.stop = False  # the runtime is closing: return once this round is durable

    def add(self, ev: Event, on_record: Callable[[JobRecord | None], None] | None = None) -> None:
        if on_record is not None:
            self.on_record.append((len(self.events), on_record))
        self.events.append(ev)


async def call_hook(fn: Callable[..., Any] | None, *args: Any) -> None:
    """Run a hook, plain or async."""
    if fn is None:
        return
    result = fn(*args)
    if inspect.isawaitable(result):
        await result


def _call_in_thread(handler: Callable[[Job], Any], job: Job, token: trio.lowlevel.TrioToken,
                    returned: Callable[[], None]) -> Any:
    try:
        return handler(job)
    finally:
        try:
            token.run_sync_soon(returned)
        except trio.RunFinishedError:
            pass


@attrs.define(eq=False)
class _WorkerSlot:
    index: int
    current: JobRecord | None = None
    crash: BaseException | None = None
    # The attempt whose handler is running (``job`` is None while none is), for its worker to
    # end should a cancel or its timeout stop it (fields of the slot: no object per attempt).
    job: Job | None = None
    timeout: float | None = None
    thread_returned: trio.Event | None = None
    done: tuple[Any, ...] | None = None  # an ended attempt to report outside its used-up scope


class _Inbox:
    """The queue actor's messages, first in first out, for its one receiver: what a trio
    memory channel was, without its wrappers per send and the WouldBlock raised per round."""

    __slots__ = ("msgs", "closed", "_task", "_stopped_error")

    def __init__(self, stopped_error: Callable[[], Exception]) -> None:
        self.msgs: collections.deque[Any] = collections.deque()
        self.closed = False
        self._task: trio.lowlevel.Task | None = None  # the receiver, parked in wait()
        self._stopped_error = stopped_error  # what send() raises once closed (a fresh one)

    @trio.lowlevel.enable_ki_protection
    def send(self, msg: Any) -> None:
        if self.closed:
            raise self._stopped_error()
        self.msgs.append(msg)
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        """Until a message waits; a checkpoint either way (as a channel's receive())."""
        if self.msgs:
            await trio.lowlevel.checkpoint()
            return
        self._task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def take(self) -> collections.deque[Any]:
        """Every message waiting, oldest first."""
        msgs, self.msgs = self.msgs, collections.deque()
        return msgs


class _Dispatch:
    """Started jobs on their way to the workers, first in first out: a job goes straight to
    the worker parked longest, else waits in ``records`` (a trio memory channel without its
    exception and coroutine per receive). One per incarnation of the queue actor."""

    __slots__ = ("records", "idle")

    def __init__(self) -> None:
        self.records: collections.deque[JobRecord] = collections.deque()
        self.idle: collections.deque[trio.lowlevel.Task] = collections.deque()  # parked workers

    @trio.lowlevel.enable_ki_protection
    def send_all(self, records: Iterable[JobRecord | None]) -> None:
        """Hand out a round's started jobs, in order (None, a start the journal refused, is
        skipped): one call per round, not per job."""
        idle, queued = self.idle, self.records
        for rec in records:
            if rec is None:
                continue
            if idle:
                trio.lowlevel.reschedule(idle.popleft(), outcome.Value(rec))
            else:
                queued.append(rec)


def core_job(rec: JobRecord | LiveEntry, offset: float | None = None) -> CoreJob:
    """The core's view of a journaled live job: its due time converted to trio's clock
    (``offset`` is :func:`wall_offset`, read once for many jobs); ``ready_at`` stays in wall
    time, the domain the journal's ready index ranks jobs by."""
    if offset is None:
        offset = wall_offset()
    due = rec.run_at - offset if rec.state is JobState.DELAYED and rec.run_at else None
    # positional (a refill builds a chunk of these): id, priority, seq, ready_at, attempts,
    # max_attempts, timeout, where, due, key
    return CoreJob(rec.id, rec.priority, rec.seq, rec.ready_at, rec.attempts, rec.max_attempts,
                   rec.timeout, "ready", due, rec.debounce_key)


class QueueActor:
    """One queue: its supervisor loop, its actor loop, and its workers."""

    #: At most about this many ready jobs of a queue are held in memory (at least four per
    #: worker; more than twice as many are shed back to the index); the rest wait in the
    #: journal's ready index, in start order, and are read in as the queue works through them
    #: (see :mod:`actorq._core`). A debounced queue holds all its jobs.
    ready_window = 10_000
    #: Ready jobs read from the index in one go: at open (so the first job starts within
    #: milliseconds whatever the backlog), and per refill, once fewer than half a chunk (or two
    #: per worker) are held.
    refill_chunk = 1_000

    def __init__(self, runtime: Runtime, spec: QueueSpec, rng: random.Random) -> None:
        self.runtime = runtime
        self.spec = spec
        self.name = spec.name
        self._inbox = _Inbox(self._stopped_error)
        #: ``send(msg)``: a message to the queue actor; raises once the queue has stopped. The
        #: inbox's own method (no call of ours in between: it runs per enqueue and per outcome).
        self.send: Callable[[Any], None] = self._inbox.send
        self._gave_up: SupervisorError | None = None  # what stopped the queue, if it escalated
        self.crashes = CrashLog(f"queue {spec.name!r}", spec.restart)
        self.rng = rng
        self.paused = False
        # The throttle's bucket is full at spawn and outlives restarts of the queue actor (a
        # crash must not hand out a fresh burst).
        self.bucket = (TokenBucket.from_config(spec.throttle, trio.current_time())
                       if spec.throttle is not None else None)
        self.core = self._new_core()
        self.limiter = trio.CapacityLimiter(spec.concurrency * 2)
        self._scopes: dict[str, trio.CancelScope] = {}
        self._cancel_requested: dict[str, list[Reply]] = {}
        self._joiners: list[Reply] = []
        self._threads: dict[str, trio.Event] = {}  # job id -> set when its abandoned thread returns
        self._outcome_replies: set[Reply] = set()  # workers waiting for their outcome
        self.injected_crashes: list[BaseException] = []  # actorq.testing.crash_next_job
        self.debouncer: Debouncer | None = None  # rebuilt from the journal by each incarnation
        self.stopping = False
        self._workers_scope = trio.CancelScope()
        self._workers_done = trio.Event()
        self.generation = 0  # incarnations of the queue actor (restarts)
        self._nursery: trio.Nursery | None = None
        self._dispatch = _Dispatch()
        self.started = False

    @property
    def _chunk(self) -> int:
        """Jobs read from an index in one go: ``refill_chunk``, or two per slot if more."""
        return max(self.refill_chunk, 2 * self.spec.concurrency)

    def _new_core(self) -> QueueCore:
        spec = self.spec
        window = None if spec.debounce else max(self.ready_window, 4 * spec.concurrency)
        # Refilled a chunk at a time once fewer than this are held: enough for every slot twice
        # over, so a round never finds the window dry while the index holds more.
        low = None if window is None else min(max(self._chunk // 2, 2 * spec.concurrency),
                                              window // 2)
        return QueueCore(spec.concurrency, spec.retry, self.rng, paused=self.paused,
                         bucket=self.bucket, window=window, low_water=low)

    def statistics(self) -> QueueStatistics:
        core = self.core
        counts = core.counts()
        if core.horizon is not None or core.delayed_horizon is not None:
            # jobs wait beyond the window: the journal counts them (as of its last commit)
            stored = self.runtime.journal.counts(self.name)
            if core.horizon is not None:
                counts["ready"] = stored[JobState.PENDING]
            if core.delayed_horizon is not None:
                counts["delayed"] = stored[JobState.DELAYED]
        return QueueStatistics(
            name=self.name, concurrency=self.spec.concurrency, paused=self.paused,
            ready=counts["ready"], delayed=counts["delayed"], running=counts["running"],
            restarts=dict(self.crashes.restarts), last_crash=self.crashes.last_crash,
        )

    def _crashed(self, actor: str, exc: BaseException) -> None:
        self.crashes.record(actor, exc, trio.current_time(), wall_now())

    def _stopped_error(self) -> Exception:
        """What a request to this stopped queue raises (a fresh one per request): the
        SupervisorError that stopped it, where its supervisor gave up; else the runtime
        closed."""
        cause = self._gave_up
        if cause is None:
            return RuntimeError(f"queue {self.name!r} has stopped (its runtime is closed)")
        error = QueueStopped(f"queue {self.name!r} has stopped: {cause}")
        error.__cause__ = cause
        return error

    async def call(self, make: Callable[[Reply], Any]) -> Any:
        """Send a request and wait for the actor's answer (given once it is durable)."""
        reply = Reply()
        self.send(make(reply))
        return await reply.get()

    async def stop(self) -> None:
        """Stop gracefully (the runtime is closing): cancel the handlers, let the workers whose
        handler already returned have their outcome journaled, then stop the actor. Whatever
        is still running in the journal afterwards goes back to pending, uncounted."""
        self.stopping = True
        self._workers_scope.cancel()
        await self._workers_done.wait()
        try:
            await self.call(StopMsg)
        except (RuntimeError, SupervisorError):
            pass  # the queue had stopped already (escalated, or never started)
        for returned in list(self._threads.values()):
            await returned.wait()  # abandoned handler threads (within the runtime's grace)

    def _stopped(self) -> None:
        """The queue stopped for good: no request may wait for an answer that never comes."""
        self._inbox.closed = True
        for msg in self._inbox.take():
            reply = getattr(msg, "reply", None)
            if reply is not None:
                reply.fail(self._stopped_error())
        for reply in self._joiners:
            reply.fail(self._stopped_error())
        for replies in self._cancel_requested.values():
            for reply in replies:
                reply.fail(self._stopped_error())

    # ---- the queue supervisor

    async def supervise(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                        ) -> None:
        """Run the queue; restart its actors when they crash, escalate when too often."""
        try:
            await self._supervise(task_status)
        except BaseException as exc:
            self._gave_up = find_supervisor_error(exc)
            raise
        finally:
            self._stopped()

    async def _supervise(self, task_status: trio.TaskStatus[None]) -> None:
        while True:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await nursery.start(self._actor)
                    await nursery.start(self._worker_supervisor)
                    if not self.started:
                        self.started = True
                        task_status.started()
            except Exception as exc:
                if not self.started:
                    raise _single(exc) from None
                if find_supervisor_error(exc) is not None:
                    raise
                self._crashed("queue actor", exc)
                continue
            except BaseExceptionGroup as group:
                # A crash while we are being cancelled: stopping wins over restarting.
                cancelled, crash = group.split(trio.Cancelled)
                if cancelled is None or find_supervisor_error(group) is not None:
                    raise
                if crash is not None:
                    log.warning("queue %r: crash while stopping: %r", self.name, crash)
                raise cancelled from None
            return  # a graceful stop (the runtime is closing) is not restarted

    # ---- the queue actor

    async def _actor(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                     ) -> None:
        self.core = self._new_core()
        self.generation += 1
        self._scopes.clear()
        self._dispatch = _Dispatch()
        self.debouncer = Debouncer(self.spec.debounce) if self.spec.debounce else None
        rnd = _Round(finished=True)  # apply retention once at spawn
        assert self._nursery is not None
        for job_id, returned in self._threads.items():  # threads abandoned before a restart
            if not returned.is_set():
                self._nursery.start_soon(self._watch_thread, job_id, returned)
        self._load(rnd, trio.current_time())
        await self._finish_round(rnd)
        task_status.started()
        while True:
            wake = self.core.next_wakeup(trio.current_time())
            deadline = math.inf if wake is None else wake
            if wake is None:  # nothing to wake up for but a message (no cancel scope needed)
                await self._inbox.wait()
            else:
                with trio.move_on_at(deadline):
                    await self._inbox.wait()
            msgs = self._inbox.take()
            rnd = _Round()
            now = trio.current_time()
            wall = to_wall(now)
            try:
                self._rebalance(now, wall)  # all so far is journaled: the window may refill
                for msg in msgs:  # (_handle inlined: one call less per message)
                    _HANDLERS.get(type(msg), QueueActor._unknown)(self, msg, rnd, now, wall)
                await self._finish_round(rnd)
            except BaseException as exc:
                error = exc if isinstance(exc, Exception) else RuntimeError("the queue stopped")
                for msg in msgs:  # whatever failed, every request of this batch is answered
                    reply = getattr(msg, "reply", None)
                    if reply is not None:
                        reply.fail(error)
                # Outcomes still in the inbox are stale once this incarnation is gone (the next
                # one requeues their jobs from the journal): answer their workers now, or their
                # shielded waits would keep this incarnation, and so the restart, from ending.
                for reply in list(self._outcome_replies):
                    reply.set(None)
                raise
            if rnd.stop:
                return

    def _load(self, rnd: _Round, now: float) -> None:
        """Rebuild the core from the journal: its running and interrupted jobs, and the first
        chunk of its ready jobs in start order and of its delayed jobs by due time (all of them
        where the queue has no window); the rest are counted and read in later."""
        wall = to_wall(now)
        offset = wall - now
        journal = self.runtime.journal
        entries: list[LiveEntry]
        if self.core.window is None:
            entries = journal.live_entries(self.name)  # scheduling fields only: no payloads
        else:
            chunk = self._chunk
            interrupted = journal.interrupted_entries(self.name)
            first = journal.ready_entries(self.name, None, chunk)
            due_first = journal.delayed_entries(self.name, None, chunk)
            self.core.spill_all()
            self._take_in(first, chunk, "ready", offset)
            # those due already are journaled due in this first round
            self._take_in(due_first, chunk, "delayed", offset)
            self._refill_delayed(wall, offset)
            entries = interrupted + journal.live_entries(self.name, (JobState.RUNNING,))
        for rec in entries:
            job = core_job(rec, offset)
            if rec.interrupted:
                decision = self.core.add_interrupted(job, now, wall=wall)
                full = journal.get(rec.id)
                if decision is not None and full is not None:
                    exc = JobInterrupted(full.error.partition(": ")[2] if full.error else
                                         "the attempt was interrupted")
                    self._decided(rnd, rec.id, full.payload, exc, decision, now, wall,
                                  then=partial(self._hooks_after_failure, exc))
            elif rec.state is JobState.RUNNING:
                # Our previous incarnation crashed while this ran: the attempt is not counted.
                job.attempts = max(job.attempts - 1, 0)
                if self.core.add(job, now):
                    rnd.add(Requeued(rec.id, wall))
            else:
                self._add(rnd, rec, job, now, wall)
                if self.debouncer is not None and rec.debounce_key is not None:
                    self._restore_burst(rec)
        for job_id, returned in self._threads.items():
            if not returned.is_set():
                self.core.block(job_id)
        if self.debouncer is not None and self.debouncer.leading_mode:
            self._restore_finished_leads(wall)

    def _restore_finished_leads(self, wall: float) -> None:
        """Leading mode: a leading job that already finished still holds its key's window
        (``wait`` seconds from its enqueue): rebuild those windows from the jobs that finished
        within the last ``wait`` seconds."""
        assert self.debouncer is not None and self.spec.debounce is not None
        since = wall - self.spec.debounce.wait
        for rec in self.runtime.journal.finished_since(self.name, since):
            if rec.leading and rec.debounce_key is not None and rec.created_at >= since:
                self.debouncer.restore_leading(rec.debounce_key, None,
                                               at=from_wall(rec.created_at))

    def _restore_burst(self, rec: LiveEntry) -> None:
        """Rebuild a waiting debounced job's burst from its journaled wall-clock times."""
        assert self.debouncer is not None and rec.debounce_key is not None
        enqueued = from_wall(rec.created_at)
        if rec.leading:
            self.debouncer.restore_leading(rec.debounce_key, rec.id, at=enqueued)
            return
        first = rec.debounce_first_at if rec.debounce_first_at is not None else rec.created_at
        due = rec.run_at if rec.run_at is not None else rec.ready_at
        self.debouncer.restore(rec.debounce_key, rec.id, first_at=from_wall(first),
                               last_at=enqueued, due_at=from_wall(due))

    async def _finish_round(self, rnd: _Round) -> None:
        now = trio.current_time()
        wall = to_wall(now)
        for job_id in self.core.promote_due(now):
            rnd.add(Due(job_id, wall))
        epoch = self.runtime.journal.epoch
        events = rnd.events
        starting = () if self.stopping else self.core.take_startable(now)
        first_start = len(events)  # their Started events follow, in order
        for job in starting:
            events.append(_started(job.id, wall, job.attempts, epoch))
            if self.debouncer is not None and job.key is not None:
                self.debouncer.started(job.key, job.id)
        if self.debouncer is not None:
            self.debouncer.expire(now)  # bookkeeping: forget bursts that have closed
        if events:
            retention = {self.name: self.spec.retention} if rnd.finished else None
            # Shielded: once submitted, a commit happens; its callers must hear how it went.
            records = await self.runtime.writer.commit(events, retention, shield=True)
            core = self.core
            for index in rnd.enqueued:
                rec = records[index]
                if rec is None:  # another queue journaled this id first: it is held, ours is
                    core.forget(events[index].record.id)  # type: ignore[union-attr]  # dropped
                else:
                    core.journaled(rec.id, rec.seq)  # its place in enqueue order, known now
            # The events (and the records and results they hold) are garbage now: drop them
            # before waking anyone, not at the next round. Freed while the commit's own
            # allocations are fresh, they keep the event loop's young garbage collections
            # away (kept until the next round, in W1 they triggered one collection per round,
            # each promoting the round's live objects towards the costly full collections).
            events.clear()
            for index, callback in rnd.on_record:
                callback(records[index])
            started = records[first_start:first_start + len(starting)]  # of ``starting``
            for job, rec in zip(starting, started):
                if rec is None:  # refused: another writer ended the job meanwhile
                    core.forget(job.id)
                    self.send(_KICK)
            self._dispatch.send_all(started)
        elif rnd.finished:
            await self.runtime.writer.commit([], {self.name: self.spec.retention})
        for reply in rnd.answered:  # (their value is in place, and none is answered yet:
            # set() without its call)
            reply._wake()
        for callback in rnd.after:
            callback()
        if self.core.rebalance_wanted():
            self.send(_KICK)  # in the next round, once the workers had their turn
        if self._joiners and self.core.idle:
            for reply in self._joiners:
                reply.set(None)
            self._joiners.clear()

    def _rebalance(self, now: float, wall: float) -> None:
        """Between rounds (everything decided so far is journaled): keep the ready window
        between half full and twice full, reading the next chunk of jobs from the journal's
        index (the next round starts them)."""
        core = self.core
        core.shed()
        if want := min(core.refill_wanted(), self._chunk):
            entries = self.runtime.journal.ready_entries(self.name, core.horizon, want)
            self._take_in(entries, want, "ready", wall - now)
        self._refill_delayed(wall, wall - now)

    def _refill_delayed(self, wall: float, offset: float) -> None:
        """Read in the next delayed jobs by due time: a chunk where few are held, and every one
        that is due already (so that it is ranked with the ready jobs when promoted)."""
        core = self.core
        while want := min(core.refill_wanted("delayed", wall), self._chunk):
            entries = self.runtime.journal.delayed_entries(self.name, core.delayed_horizon, want)
            self._take_in(entries, want, "delayed", offset)
            if core.delayed_horizon is None or core.delayed_horizon[0] > wall:
                break  # the index ran out, or what is left is not due yet

    def _take_in(self, entries: list[LiveEntry], want: int, kind: Literal["ready", "delayed"],
                 offset: float) -> None:
        """Give the core the next jobs read from an index (fewer than ``want``: it ran out);
        one whose abandoned thread still runs is blocked."""
        jobs = [core_job(e, offset) for e in entries]
        self.core.refilled(jobs, len(entries) < want, kind)
        for job in jobs:
            self._block_if_thread_alive(job.id)

    # ---- messages

    # Each message type has its handler, ``handler(self, msg, rnd, now, wall)`` (``wall``:
    # ``to_wall(now)``, read once per round), found by the message's type in ``_HANDLERS`` (one
    # dict lookup per message instead of a chain of isinstance checks).

    def _unknown(self, msg: Any, rnd: _Round, now: float, wall: float) -> None:  # pragma: no cover
        raise TypeError(f"unknown message {msg!r}")

    def _on_enqueue_one(self, msg: EnqueueOneMsg, rnd: _Round, now: float, wall: float) -> None:
        msg.value = self._enqueue(rnd, msg.record, msg.core, msg.given_id, now, wall)
        rnd.answered.append(msg)

    def _on_enqueue(self, msg: EnqueueMsg, rnd: _Round, now: float, wall: float) -> None:
        msg.reply.value = [self._enqueue(rnd, record, job, given_id, now, wall)
                           for record, job, given_id in msg.jobs]
        rnd.answered.append(msg.reply)

    def _on_crash(self, msg: CrashMsg, rnd: _Round, now: float, wall: float) -> None:
        if self._is_running(msg.generation, msg.job_id, msg.attempt):
            cancels = self._cancel_requested.pop(msg.job_id, [])
            if cancels:  # a cancel was asked for: it ends cancelled, not retried
                self._end_cancelled(rnd, msg.job_id, wall, cancels)
                return
            exc = JobInterrupted(f"the worker running attempt {msg.attempt} crashed: "
                                 f"{type(msg.error).__name__}: {msg.error}")
            self._attempt_ended(rnd, msg.job_id, msg.payload, exc, now, wall,
                                then=partial(self._hooks_after_failure, exc))

    def _on_requeue(self, msg: RequeueMsg, rnd: _Round, now: float, wall: float) -> None:
        if self._is_running(msg.generation, msg.job_id, msg.attempt):
            self.core.requeue(msg.job_id)
            self._block_if_thread_alive(msg.job_id)
            rnd.add(Requeued(msg.job_id, wall))

    def _on_thread_returned(self, msg: ThreadReturnedMsg, rnd: _Round, now: float, wall: float
                            ) -> None:
        self._threads.pop(msg.job_id, None)
        self.core.unblock(msg.job_id)

    def _on_pause(self, msg: PauseMsg, rnd: _Round, now: float, wall: float) -> None:
        self.paused = self.core.paused = msg.paused
        rnd.after.append(partial(msg.reply.set, None))

    def _on_join(self, msg: JoinMsg, rnd: _Round, now: float, wall: float) -> None:
        self._joiners.append(msg.reply)

    def _on_adopt(self, msg: AdoptMsg, rnd: _Round, now: float, wall: float) -> None:
        self._add(rnd, msg.record, core_job(msg.record), now, wall)

    def _on_stop(self, msg: StopMsg, rnd: _Round, now: float, wall: float) -> None:
        rnd.stop = True
        rnd.after.append(partial(msg.reply.set, None))

    def _on_kick(self, msg: KickMsg, rnd: _Round, now: float, wall: float) -> None:
        pass

    def _add(self, rnd: _Round, rec: JobRecord | LiveEntry, job: CoreJob, now: float,
             wall: float) -> None:
        """Give a live job to the core; journal it as due where its delay has passed."""
        if self.core.add(job, now) == "ready" and rec.state is JobState.DELAYED:
            rnd.add(Due(rec.id, wall))

    def _is_running(self, generation: int, job_id: str, attempt: int) -> bool:
        """Whether a worker's report is about the attempt now running: a report from the
        workers of an earlier incarnation of this queue (before a restart) is stale."""
        job = self.core.jobs.get(job_id)
        return (generation == self.generation and job is not None
                and job.where == "running" and job.attempts == attempt)

    def _enqueue(self, rnd: _Round, record: JobRecord, job: CoreJob, given_id: bool,
                 now: float, wall: float) -> str:
        """Take a new job in (unless its id is held already); its id."""
        job_id = record.id
        if job_id in rnd.new_ids or (given_id and (
                job_id in self.core.jobs or self.runtime.journal.get(job_id) is not None)):
            return job_id  # idempotent: that id is held already
        rnd.new_ids.add(job_id)
        superseded = None
        if self.debouncer is not None:
            record, superseded = self._debounce(record, job, now, wall)
        rnd.enqueued.append(len(rnd.events))  # once journaled: forgotten, or given its seq
        rnd.events.append(_enqueued(record))
        # (_add inlined) journaled due where its delay passed meanwhile
        if self.core.add(job, now) == "ready" and record.state is JobState.DELAYED:
            rnd.add(Due(job_id, wall))
        if superseded is not None:
            self._supersede(rnd, superseded, job_id, wall)
        return job_id

    def _debounce(self, record: JobRecord, job: CoreJob, now: float, wall: float
                  ) -> tuple[JobRecord, str | None]:
        """Place a new job of a debounced queue in its key's burst: it is delayed until the
        burst's deadline (a leading job is due at once), and may supersede the survivor."""
        assert self.debouncer is not None and job.key is not None
        decision = self.debouncer.enqueue(job.key, job.id, now)
        first_at = wall + (decision.first_at - now)
        if decision.due_at > now:
            due = wall + (decision.due_at - now)
            job.due, job.ready_at = decision.due_at, due
            record = attrs.evolve(record, state=JobState.DELAYED, run_at=due, ready_at=due,
                                  debounce_first_at=first_at, leading=decision.leading)
        else:
            record = attrs.evolve(record, debounce_first_at=first_at, leading=decision.leading)
        return record, decision.superseded

    def _supersede(self, rnd: _Round, old_id: str, new_id: str, wall: float) -> None:
        """The debouncer replaced a waiting job by a newer one of its burst: it ends cancelled,
        pointing at its successor, in the same transaction as the successor's enqueue."""
        if self.core.cancel(old_id) not in ("ready", "delayed"):
            return  # pragma: no cover - the debouncer ends a burst when its survivor starts
        rnd.finished = True

        def cancelled(rec: JobRecord | None) -> None:
            if rec is not None:
                self._spawn_hook(self.spec.hooks.on_cancel, rec)

        rnd.add(Cancelled(old_id, wall, superseded_by=new_id), cancelled)

    def _outcome(self, msg: OutcomeMsg, rnd: _Round, now: float, wall: float) -> None:
        if not self._is_running(msg.generation, msg.job_id, msg.attempt):
            rnd.after.append(partial(msg.reply.set, None))
            return
        # (no empty list built per outcome where no cancel is pending, the usual case)
        cancels = self._cancel_requested.pop(msg.job_id, None) if self._cancel_requested else None
        if cancels is None:
            cancels = _NO_CANCELS
        if msg.kind == "ok":
            self.core.succeeded(msg.job_id)
            rnd.finished = True
            if msg.reply is _NO_REPLY:  # the worker does not wait for the outcome
                rnd.events.append(_succeeded(msg.job_id, wall, msg.result))
            else:
                rnd.add(_succeeded(msg.job_id, wall, msg.result),
                        lambda rec: msg.reply.set(rec and ("completed", rec)))
            for reply in cancels:  # it finished before the cancel could stop it
                rnd.after.append(partial(reply.set, False))
        elif msg.kind == "cancelled" or cancels:
            self._end_cancelled(rnd, msg.job_id, wall, cancels,
                                then=lambda rec: msg.reply.set(rec and ("cancelled", rec)))
        else:
            assert msg.error is not None
            self._attempt_ended(rnd, msg.job_id, msg.payload, msg.error, now, wall,
                                then=lambda kind, rec: msg.reply.set(rec and (kind, rec)))

    def _end_cancelled(self, rnd: _Round, job_id: str, wall: float, cancels: list[Reply],
                       then: Callable[[JobRecord | None], None] | None = None) -> None:
        """A running job whose cancel was asked for ends cancelled; its cancels are answered."""
        self.core.forget(job_id)
        rnd.finished = True

        def cancelled(rec: JobRecord | None) -> None:
            if then is not None:
                then(rec)
            for reply in cancels:
                reply.set(rec is not None)

        rnd.add(Cancelled(job_id, wall), cancelled)

    def _attempt_ended(self, rnd: _Round, job_id: str, payload: Any, exc: BaseException,
                       now: float, wall: float, *, then: Callable[[str, JobRecord | None], None]
                       ) -> None:
        decision = self.core.attempt_failed(job_id, now, discard=isinstance(exc, Discard),
                                            wall=wall)
        if isinstance(decision, RetryAt):
            self._block_if_thread_alive(job_id)
        self._decided(rnd, job_id, payload, exc, decision, now, wall, then=then)

    def _block_if_thread_alive(self, job_id: str) -> None:
        returned = self._threads.get(job_id)
        if returned is not None and not returned.is_set():
            self.core.block(job_id)

    def _decided(self, rnd: _Round, job_id: str, payload: Any, exc: BaseException,
                 decision: RetryAt | GiveUp, now: float, wall: float,
                 *, then: Callable[[str, JobRecord | None], None]) -> None:
        error = format_error(exc)
        if isinstance(decision, RetryAt):
            retry_at = wall + decision.delay if decision.delay > 0 else None
            rnd.add(AttemptFailed(job_id, wall, error, retry_at), partial(then, "retry"))
            return
        rnd.finished = True
        rnd.add(Failed(job_id, wall, error), partial(then, "failed"))
        if self.spec.dead_letter is not None:
            dead = self.runtime.dead_letter_record(
                self.spec.dead_letter, job_id, self.name, payload, error, decision.attempts, wall)
            rnd.add(Enqueued(dead), self.runtime.deliver)

    async def _watch_thread(self, job_id: str, returned: trio.Event) -> None:
        await returned.wait()
        self.send(ThreadReturnedMsg(job_id))

    def _cancel(self, msg: CancelMsg, rnd: _Round, now: float, wall: float) -> None:
        job = self.core.jobs.get(msg.job_id)
        where = self.core.cancel(msg.job_id)
        if where in ("ready", "delayed") and job is not None and job.key is not None:
            assert self.debouncer is not None
            self.debouncer.cancelled(job.key, job.id)
        if where == "running":
            self._cancel_requested.setdefault(msg.job_id, []).append(msg.reply)
            scope = self._scopes.get(msg.job_id)
            if scope is not None:
                scope.cancel()
            return
        if where is None:  # not in memory: finished, beyond the window, or another queue's
            rec = self.runtime.journal.get(msg.job_id)
            if rec is None:
                rnd.after.append(partial(msg.reply.fail, UnknownJob(msg.job_id)))
                return
            if rec.state.terminal:
                rnd.after.append(partial(msg.reply.set, False))
                return
        rnd.finished = True

        def cancelled(rec: JobRecord | None) -> None:
            msg.reply.set(rec is not None)
            if rec is not None:
                self._spawn_hook(self.spec.hooks.on_cancel, rec)

        rnd.add(Cancelled(msg.job_id, wall), cancelled)

    # ---- hooks run outside workers (their transitions were decided by the actor)

    def _job(self, rec: JobRecord) -> Job:
        payload = rec.payload
        if self.spec.payload_type is not None:
            payload = structure(payload, self.spec.payload_type)
        return _job(rec.id, rec.queue, payload, rec.attempts, rec.priority)

    def _spawn_hook(self, fn: Callable[..., Any] | None, rec: JobRecord, *args: Any) -> None:
        if fn is not None:
            assert self._nursery is not None
            self._nursery.start_soon(call_hook, fn, self._job(rec), *args)

    def _hooks_after_failure(self, exc: BaseException, kind: str, rec: JobRecord | None) -> None:
        if rec is None:
            return
        hooks = self.spec.hooks
        if hooks.on_error is None and hooks.on_failure is None:
            return
        job = self._job(rec)

        async def run() -> None:
            await call_hook(hooks.on_error, job, exc)
            if kind == "failed":
                await call_hook(hooks.on_failure, job, exc)

        assert self._nursery is not None
        self._nursery.start_soon(run)

    # ---- workers

    async def _worker_supervisor(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        slots = [_WorkerSlot(i) for i in range(self.spec.concurrency)]
        generation = self.generation
        self._workers_done = done = trio.Event()
        try:
            with trio.CancelScope() as self._workers_scope:
                if self.stopping:
                    self._workers_scope.cancel()
                task_status.started()
                await self._supervise_workers(slots, generation)
        finally:
            done.set()

    async def _supervise_workers(self, slots: list[_WorkerSlot], generation: int) -> None:
        if self.spec.restart.strategy == "one_for_one":
            async with trio.open_nursery() as nursery:
                for slot in slots:
                    nursery.start_soon(self._supervise_worker, slot, generation)
            return  # pragma: no cover - workers never return
        while True:  # one_for_all: a crash restarts every worker
            try:
                async with trio.open_nursery() as nursery:
                    for slot in slots:
                        nursery.start_soon(self._marked_worker, slot, generation)
            except Exception as exc:
                for slot in slots:
                    if slot.current is not None:
                        held, slot.current = slot.current, None
                        if slot.crash is not None:
                            self.send(CrashMsg(generation, held.id, held.attempts, slot.crash,
                                               held.payload))
                        else:
                            self.send(RequeueMsg(generation, held.id, held.attempts))
                    slot.crash = None
                self._crashed("workers (one_for_all)", exc)

    async def _marked_worker(self, slot: _WorkerSlot, generation: int) -> None:
        try:
            await self._worker(slot, generation)
        except Exception as exc:
            slot.crash = exc
            raise

    async def _supervise_worker(self, slot: _WorkerSlot, generation: int) -> None:
        while True:
            try:
                await self._worker(slot, generation)
            except Exception as exc:
                if slot.current is not None:
                    held, slot.current = slot.current, None
                    self.send(CrashMsg(generation, held.id, held.attempts, exc, held.payload))
                self._crashed(f"worker {slot.index}", exc)

    async def _worker(self, slot: _WorkerSlot, generation: int) -> None:
        # One cancel scope serves this worker's attempts until a cancel or a timeout uses it
        # up (entering a fresh scope per attempt costs as much as the rest of a no-op job).
        slot.job = slot.done = None
        while True:
            scope = trio.CancelScope()
            with scope:
                await self._attempts(slot, generation, scope)
            job, slot.job = slot.job, None
            done, slot.done = slot.done, None
            if done is not None:
                await self._attempt_done(*done)
                slot.current = None
            if job is not None and scope.cancelled_caught:
                # A cancel or the timeout stopped the handler: the attempt ends here.
                rec = slot.current
                assert rec is not None
                if rec.id in self._cancel_requested:
                    kind, error = "cancelled", None
                else:
                    kind, error = "error", JobTimeout(
                        f"attempt {rec.attempts} timed out after {slot.timeout}s")
                await self._attempt_done(rec, job, generation, kind, None, error, None,
                                         slot.thread_returned)
                slot.current = None

    async def _attempts(self, slot: _WorkerSlot, generation: int, scope: trio.CancelScope
                        ) -> None:
        """Run attempts under ``scope`` until one is stopped by it (its handler raises
        Cancelled out of here) or it was cancelled meanwhile."""
        dispatch = self._dispatch
        records, idle = dispatch.records, dispatch.idle
        task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            if task in idle:  # (it always is: _Dispatch.send_all is KI-protected)
                idle.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        while True:
            # Cancelled (a sibling's crash under one_for_all) before a job is taken, never
            # between taking it and holding it in ``slot.current``: a job taken is never lost.
            # (Parking delivers a pending cancel by itself.)
            if records:
                await trio.lowlevel.checkpoint_if_cancelled()
                rec = records.popleft()
            else:
                idle.append(task)  # parked until _Dispatch.send_all hands it a job
                rec = await trio.lowlevel.wait_task_rescheduled(abort)
            slot.current = rec
            if self.injected_crashes:
                raise self.injected_crashes.pop(0)
            if await self._run_attempt(rec, generation, slot, scope):
                return  # the scope is used up: a fresh one for the next attempt
            slot.current = None

    async def _run_attempt(self, rec: JobRecord, generation: int, slot: _WorkerSlot,
                           scope: trio.CancelScope) -> bool:
        """Run one attempt, its handler under the worker's ``scope`` (registered for the job
        while the handler runs, with the attempt's deadline). Where the scope stops the
        handler, trio.Cancelled leaves here with ``slot.job`` set: :meth:`_worker` ends it.
        Returns whether the scope was cancelled meanwhile (used up; the attempt is then left
        in ``slot.done`` for the worker to report outside it)."""
        spec = self.spec
        hooks = spec.hooks
        kind, result, error, value = "ok", None, None, None
        job: Job | None = None
        try:
            job = self._job(rec)
        except Exception as exc:  # a journaled payload that no longer fits payload_type
            kind, error = "error", exc
        thread_returned: trio.Event | None = None
        if job is not None:
            if hooks.on_start is not None:
                await call_hook(hooks.on_start, job)
            timeout = rec.timeout if rec.timeout is not None else spec.timeout
            slot.job, slot.timeout, slot.thread_returned = job, timeout, None
            if timeout is not None:
                scope.deadline = trio.current_time() + timeout
            self._scopes[rec.id] = scope
            if rec.id in self._cancel_requested:
                scope.cancel()
            try:
                try:
                    if spec.is_sync:
                        # Tracked by the queue (not this worker): a thread abandoned on a
                        # timeout, a cancel or a restart blocks the job's next attempt
                        # until it returns, whichever incarnation runs it.
                        thread_returned = slot.thread_returned = self._threads[rec.id] = (
                            trio.Event())
                        value = await trio.to_thread.run_sync(
                            _call_in_thread, spec.handler, job,
                            trio.lowlevel.current_trio_token(), thread_returned.set,
                            abandon_on_cancel=True, limiter=self.limiter)
                    else:
                        value = await spec.handler(job)
                    result = None if value is None else normalize(value, "handler result")
                except Exception as exc:
                    kind, error = "error", exc
            finally:
                self._scopes.pop(rec.id, None)
                if timeout is not None:
                    scope.deadline = math.inf
            slot.job = None
        # Cancelled meanwhile, too late to stop the handler? Only a cancel asked for (it is in
        # _cancel_requested until this attempt's outcome is handled) or the attempt's deadline
        # cancel this scope: ask it (its cancel_called reads the clock) only then.
        if (job is not None and (timeout is not None or self._cancel_requested)
                and scope.cancel_called):
            slot.done = (rec, job, generation, kind, result, error, value, thread_returned)
            return True  # ... report it outside the scope
        # (_attempt_done inlined: no coroutine per job where no hook waits for the outcome)
        reply = self._report(rec, job, generation, kind, result, error, thread_returned)
        if reply is not None:
            await self._hooks_after_outcome(reply, job, value, error)
        return False

    async def _attempt_done(self, rec: JobRecord, job: Job | None, generation: int, kind: str,
                            result: Any, error: BaseException | None, value: Any,
                            thread_returned: trio.Event | None) -> None:
        """Report an attempt's outcome to the queue actor; run the hooks that wait for it."""
        reply = self._report(rec, job, generation, kind, result, error, thread_returned)
        if reply is not None:
            await self._hooks_after_outcome(reply, job, value, error)

    def _report(self, rec: JobRecord, job: Job | None, generation: int, kind: str,
                result: Any, error: BaseException | None, thread_returned: trio.Event | None
                ) -> Reply | None:
        """Send an attempt's outcome to the queue actor; the Reply to wait for where a hook
        waits for the outcome (``job`` is not None then)."""
        hooks = self.spec.hooks
        if thread_returned is not None:
            if thread_returned.is_set():
                self._threads.pop(rec.id, None)
            else:
                assert self._nursery is not None
                self._nursery.start_soon(self._watch_thread, rec.id, thread_returned)
        if job is None or not (hooks.on_success or hooks.on_cancel or hooks.on_error
                               or hooks.on_failure):
            # No hook waits for the outcome: hand it to the queue actor and move on (the actor
            # journals it, in order, before anything sent after it, a stop included).
            self.send(OutcomeMsg(generation, rec.id, rec.attempts, kind, result, error,
                                 rec.payload, _NO_REPLY))
            return None
        reply = Reply()
        self._outcome_replies.add(reply)
        self.send(OutcomeMsg(generation, rec.id, rec.attempts, kind, result, error, rec.payload,
                             reply))
        return reply

    async def _hooks_after_outcome(self, reply: Reply, job: Job | None, value: Any,
                                   error: BaseException | None) -> None:
        """Wait for the outcome sent with ``reply`` to be journaled; run the hooks for it."""
        hooks = self.spec.hooks
        try:
            # Shielded: a handler that returned has its outcome journaled even while the
            # runtime is closing (the actor answers every request, or fails it as it stops;
            # where it crashes first, it answers this outcome as stale).
            with trio.CancelScope(shield=True):
                answer = await reply.get()
        except Exception:
            # The queue actor crashed before the outcome was durable. Its supervisor is
            # stopping this incarnation's workers too: wait for that, it is not our crash.
            await trio.sleep_forever()
        finally:
            self._outcome_replies.discard(reply)
        if answer is None:
            return
        what, _new = answer
        if what == "completed":
            await call_hook(hooks.on_success, job, value)
        elif what == "cancelled":
            await call_hook(hooks.on_cancel, job)
        else:
            await call_hook(hooks.on_error, job, error)
            if what == "failed":
                await call_hook(hooks.on_failure, job, error)


_HANDLERS: dict[type, Callable[[QueueActor, Any, _Round, float, float], None]] = {
    EnqueueOneMsg: QueueActor._on_enqueue_one,
    OutcomeMsg: QueueActor._outcome,
    EnqueueMsg: QueueActor._on_enqueue,
    CancelMsg: QueueActor._cancel,
    CrashMsg: QueueActor._on_crash,
    RequeueMsg: QueueActor._on_requeue,
    ThreadReturnedMsg: QueueActor._on_thread_returned,
    PauseMsg: QueueActor._on_pause,
    JoinMsg: QueueActor._on_join,
    AdoptMsg: QueueActor._on_adopt,
    StopMsg: QueueActor._on_stop,
    KickMsg: QueueActor._on_kick,
}


def _single(exc: BaseException) -> BaseException:
    """The one error inside a group of one (a startup failure reads better bare)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
