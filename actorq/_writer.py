"""The journal-writer actor: the only writer of the journal, with group commit.

Every transition reaches the journal through :meth:`Writer.commit`. In ``"fsync"`` mode, all that
arrived since the last commit goes into one LMDB write transaction: the event loop prepares it
(folds the events, encodes every key and value: :meth:`Journal.prepare`), and the writer's one
long-lived thread writes and commits it (one fsync, the GIL released), so the event loop never
blocks on the disk; the thread's completion (``run_sync_soon``) releases every submitter once
that commit is on disk, or gives them the error where it failed (a failed commit never
acknowledges anything), and starts the next group at once. In ``"os"``
mode a commit happens inline, in the event loop's thread, without fsync.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping, Sequence

import attrs
import trio

from ._clock import wall_now
from ._errors import JournalError
from ._journal import CommitPlan, Journal, MapFull
from ._model import Event, JobRecord, Restart, Retention
from ._supervisor import CrashLog

Records = list[JobRecord | None]


class _Submission:
    """What one caller of :meth:`Writer.commit` submitted, and how it went; the caller waits
    for :meth:`finish` (parked on its task: cheaper than a trio.Event)."""

    __slots__ = ("events", "retention", "results", "error", "finished", "_task")

    def __init__(self, events: Sequence[Event], retention: Mapping[str, Retention] | None
                 ) -> None:
        self.events = events
        self.retention = retention
        self.results: Records | None = None
        self.error: BaseException | None = None
        self.finished = False
        self._task: trio.lowlevel.Task | None = None

    def finish(self, results: Records | None, error: BaseException | None = None) -> None:
        # Once finished, nothing reads ``events`` again: the submitter may reuse or clear the
        # list (the queue actor clears a round's events as soon as its commit is done).
        if not self.finished:
            self.finished = True
            self.results, self.error = results, error
            task, self._task = self._task, None
            if task is not None:
                trio.lowlevel.reschedule(task)

    async def wait(self, shield: bool = False) -> None:
        """Until :meth:`finish` (cancellable unless ``shield``; the commit goes on
        regardless)."""
        if self.finished:
            if shield:
                await trio.lowlevel.cancel_shielded_checkpoint()
            else:
                await trio.lowlevel.checkpoint()
            return
        self._task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            if shield:
                return trio.lowlevel.Abort.FAILED
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


@attrs.frozen
class WriterStatistics:
    commits: int
    transitions: int
    largest_group: int


def _commit_error(exc: BaseException) -> JournalError:
    """A fresh error for one submitter (one exception object raised in many tasks would
    collect all their tracebacks)."""
    if isinstance(exc, JournalError):
        err = JournalError(str(exc))
        err.__cause__ = exc.__cause__
        return err
    err = JournalError(f"journal commit failed: {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


@attrs.define(eq=False)
class Writer:
    journal: Journal
    fsync: bool
    on_commit: Callable[[Records], None]
    _commits: int = 0
    _transitions: int = 0
    _largest: int = 0
    _pending: list[_Submission] = attrs.field(factory=list)  # waiting for the next group
    _inflight: tuple[list[_Submission], CommitPlan] | None = None  # the group being written
    _closed: bool = False
    _crash: BaseException | None = None
    _wake: trio.Event = attrs.field(factory=trio.Event)  # for run(): a change to look at
    _thread: threading.Thread | None = None
    _jobs: queue.SimpleQueue[CommitPlan | None] = attrs.field(factory=queue.SimpleQueue)

    @property
    def before_commit(self) -> Callable[[], None] | None:
        """Fault injection: called inside each write transaction before it commits (see
        :mod:`actorq.testing`); an exception aborts that commit."""
        return self.journal.before_commit

    @before_commit.setter
    def before_commit(self, hook: Callable[[], None] | None) -> None:
        self.journal.before_commit = hook

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(self._commits, self._transitions, self._largest)

    async def commit(
        self, events: Sequence[Event], retention: Mapping[str, Retention] | None = None,
        *, shield: bool = False,
    ) -> Records:
        """Journal ``events`` durably; their new records (None where a transition was refused).

        ``shield``: not cancellable at all (as inside a shielded cancel scope, without the
        cost of one): the caller hears how the commit went."""
        if not self.fsync:
            if not shield:
                await trio.lowlevel.checkpoint_if_cancelled()
            try:
                results = self._commit_now(events, retention)
            except Exception as exc:
                raise _commit_error(exc) from exc
            self.on_commit(results)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return results
        if self._closed:
            raise JournalError("the journal writer has stopped")
        sub = _Submission(events, retention)
        self._pending.append(sub)
        if self._inflight is None:
            self._write_next()
        await sub.wait(shield)
        if sub.error is not None:
            raise sub.error
        assert sub.results is not None
        return sub.results

    def _commit_now(self, events: Sequence[Event], retention: Mapping[str, Retention] | None
                    ) -> Records:
        results = self.journal.commit_growing(events, retention=retention, now=wall_now())
        self._count(len(events))
        return results

    def _count(self, n: int) -> None:
        self._commits += 1
        self._transitions += n
        self._largest = max(self._largest, n)

    def close(self) -> None:
        """No more submissions; :meth:`run` returns once what was submitted is committed."""
        self._closed = True
        self._wake.set()

    async def supervise(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                        ) -> None:
        """Run the writer; restart it when it crashes (a bug: commit errors go to the
        submitters and are no crash), escalate with SupervisorError when too often."""
        crashes = CrashLog("journal writer", Restart())
        task_status.started()
        try:
            while True:
                try:
                    await self.run()
                    return
                except Exception as exc:
                    crashes.record("journal writer", exc, trio.current_time(), wall_now())
        finally:  # stopped for good (also by escalating): nothing waits, no thread is left
            self._closed = True
            self._fail_pending(JournalError("the journal writer has stopped"))
            self._stop_thread()

    async def run(self) -> None:
        """Watch the writer until :meth:`close` and until what was submitted is committed, then
        stop its thread. (Groups are written as they come, from :meth:`commit` and from the
        thread's completions, not by this task.) Raises what crashed the writer."""
        try:
            while True:
                crash, self._crash = self._crash, None
                if crash is not None:
                    raise crash
                if self._inflight is None and self._pending:
                    self._write_next()  # left by a crash
                if self._closed and self._inflight is None and not self._pending:
                    return
                await self._wake.wait()
                self._wake = trio.Event()
        except Exception:
            raise  # a crash: supervise() runs this again
        except BaseException:
            self._closed = True  # cancelled: the writer stops for good
            raise
        finally:
            with trio.CancelScope(shield=True):
                while self._inflight is not None:  # the thread is writing: let it finish
                    await self._wake.wait()
                    self._wake = trio.Event()
            if self._closed:
                self._fail_pending(JournalError("the journal writer has stopped"))
                self._stop_thread()

    # ---- fsync mode: one group written at a time by the writer thread

    def _write_next(self) -> None:
        """Prepare everything submitted since the last group, here in the event loop's thread,
        and hand it to the writer thread (nothing is in flight)."""
        group, self._pending = self._pending, []
        if not group:
            return
        if len(group) == 1:
            events: Sequence[Event] = group[0].events
            retention = group[0].retention
        else:
            events = [ev for sub in group for ev in sub.events]
            retention = {}
            for sub in group:
                retention.update(sub.retention or {})
        try:
            plan = self.journal.prepare(events, retention=retention, now=wall_now())
            self._inflight = (group, plan)
            self._start_thread()
            self._jobs.put(plan)
        except Exception as exc:  # every submitter of the group learns of the failure
            self._inflight = None
            self._fail(group, exc)
            self._write_next()  # pragma: no cover - the next group was empty (submitted above)

    def _written(self, plan: CommitPlan, exc: BaseException | None) -> None:
        """In the event loop's thread (run_sync_soon), once the writer thread wrote ``plan``.
        Never raises: a crash is handed to :meth:`run`."""
        assert self._inflight is not None
        group, inflight = self._inflight
        assert inflight is plan
        try:
            if isinstance(exc, MapFull):
                try:
                    self.journal.grow()  # no transaction is open in this process
                except Exception as grow_exc:
                    exc = grow_exc
                else:
                    self._jobs.put(plan)
                    return
            if exc is not None:
                self._fail(group, exc)
            else:
                results = self.journal.finish(plan)
                self._count(len(results))
                try:
                    self.on_commit(results)
                except Exception as crash:
                    self._fail(group, crash)
                    self._crash = crash
                    self._wake.set()
                else:
                    if len(group) == 1:
                        group[0].finish(results)
                    else:
                        start = 0
                        for sub in group:
                            stop = start + len(sub.events)
                            sub.finish(results[start:stop])
                            start = stop
        except BaseException as crash:  # never leave a submitter hanging
            self._fail(group, crash)
            self._crash = crash if isinstance(crash, Exception) else RuntimeError(repr(crash))
        self._inflight = None
        self._wake.set()
        if self._pending and self._crash is None:
            self._write_next()

    @staticmethod
    def _fail(group: list[_Submission], exc: BaseException) -> None:
        error = (_commit_error(exc) if isinstance(exc, Exception)
                 else JournalError("the journal writer stopped"))
        for sub in group:
            sub.finish(None, error)

    def _fail_pending(self, error: JournalError) -> None:
        group, self._pending = self._pending, []
        for sub in group:
            sub.finish(None, error)

    def _start_thread(self) -> None:
        if self._thread is not None:
            return
        token = trio.lowlevel.current_trio_token()
        jobs = self._jobs
        write = self.journal.write
        written = self._written

        def main() -> None:
            while True:
                plan = jobs.get()
                if plan is None:
                    return
                try:
                    write(plan)
                    exc = None
                except BaseException as e:  # noqa: BLE001 - handed to the event loop
                    exc = e
                try:
                    token.run_sync_soon(written, plan, exc)
                except trio.RunFinishedError:  # pragma: no cover - the run ended meanwhile
                    return

        self._thread = threading.Thread(target=main, name="actorq journal writer", daemon=True)
        self._thread.start()

    def _stop_thread(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join()
