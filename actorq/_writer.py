"""The journal-writer actor: the only writer of the journal, with group commit.

Every transition reaches the journal through :meth:`Writer.commit`. In ``"fsync"`` mode, all that
arrived since the last commit goes into one LMDB write transaction, committed (one fsync) on a
worker thread so the event loop never blocks; every submitter is released once that commit is on
disk, or gets the error where it failed: a failed commit never acknowledges anything. In ``"os"``
mode a commit happens inline, in the event loop's thread, without fsync.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import trio

from ._clock import wall_now
from ._errors import JournalError
from ._journal import Journal, MapFull
from ._model import Event, JobRecord, Restart, Retention
from ._supervisor import CrashLog

Records = list[JobRecord | None]


@attrs.define(eq=False)
class _Submission:
    events: Sequence[Event]
    retention: Mapping[str, Retention] | None
    done: trio.Event = attrs.field(factory=trio.Event)
    results: Records | None = None
    error: BaseException | None = None


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
    _send: Any = None
    _recv: Any = None

    def __attrs_post_init__(self) -> None:
        self._send, self._recv = trio.open_memory_channel[_Submission](math.inf)

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
        self, events: Sequence[Event], retention: Mapping[str, Retention] | None = None
    ) -> Records:
        """Journal ``events`` durably; their new records (None where a transition was refused)."""
        if not self.fsync:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                results = self._commit_now(events, retention)
            except Exception as exc:
                raise _commit_error(exc) from exc
            self.on_commit(results)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return results
        sub = _Submission(events, retention)
        try:
            self._send.send_nowait(sub)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise JournalError("the journal writer has stopped") from None
        await sub.done.wait()
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
        self._send.close()

    async def supervise(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                        ) -> None:
        """Run the writer; restart it when it crashes (a bug: commit errors go to the
        submitters and are no crash), escalate with SupervisorError when too often."""
        crashes = CrashLog("journal writer", Restart())
        task_status.started()
        while True:
            try:
                await self.run()
                return
            except Exception as exc:
                crashes.record("journal writer", exc, trio.current_time(), wall_now())

    async def run(self) -> None:
        """Commit what is submitted, group by group, until :meth:`close`."""
        recv = self._recv
        while True:
            try:
                first = await recv.receive()
            except trio.EndOfChannel:
                return
            group = [first]
            while True:
                try:
                    group.append(recv.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            try:
                await self._commit_group(group)
            except BaseException as exc:  # never leave a submitter hanging
                error = (_commit_error(exc) if isinstance(exc, Exception)
                         else JournalError("the journal writer stopped"))
                for sub in group:
                    if not sub.done.is_set():
                        sub.error = error
                        sub.done.set()
                raise

    async def _commit_group(self, group: list[_Submission]) -> None:
        events: list[Event] = [ev for sub in group for ev in sub.events]
        retention: dict[str, Retention] = {}
        for sub in group:
            retention.update(sub.retention or {})
        try:
            now = wall_now()
            while True:
                try:
                    results = await trio.to_thread.run_sync(
                        lambda: self.journal.commit(events, retention=retention, now=now)
                    )
                    break
                except MapFull:
                    self.journal.grow()  # here, in the event loop's thread, no txn is open
        except Exception as exc:  # every submitter of the group learns of the failure
            for sub in group:
                sub.error = _commit_error(exc)
                sub.done.set()
            return
        self._count(len(events))
        self.on_commit(results)
        start = 0
        for sub in group:
            sub.results = results[start:start + len(sub.events)]
            start += len(sub.events)
            sub.done.set()
