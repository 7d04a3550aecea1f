"""The exceptions of actorq's public contract (values layer: imports nothing of ours)."""

from __future__ import annotations


class ActorqError(Exception):
    """Base class of every error actorq raises on its own account."""


class JobFailed(ActorqError):
    """``wait()`` on a job that ended ``failed``: ``.error`` is its last attempt's error."""

    def __init__(self, job_id: str, error: str | None) -> None:
        super().__init__(f"job {job_id!r} failed: {error}")
        self.job_id = job_id
        self.error = error


class JobCancelled(ActorqError):
    """``wait()`` on a job that ended ``cancelled``."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} was cancelled")
        self.job_id = job_id


class JobTimeout(ActorqError):
    """An attempt ran past its timeout and was cancelled (passed to ``on_error``)."""


class JobInterrupted(ActorqError):
    """An attempt was cut short by a crash of the process or of the actor running it."""


class UnknownJob(ActorqError, KeyError):
    """The journal holds no job with this id (never enqueued, or removed by retention)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"unknown job id {self.job_id!r}"


class PayloadError(ActorqError, TypeError):
    """A payload (or a handler's result) holds a value the journal cannot store."""


class JournalError(ActorqError):
    """The journal cannot be used: not an actorq journal, a newer format, or a failed write."""


class JournalLocked(JournalError):
    """Another runtime (in this process or another) already has this journal open."""


class SupervisorError(ActorqError):
    """A supervisor gave up: its children crashed more often than its restart policy allows."""


class QueueStopped(SupervisorError):
    """A request to a queue whose supervisor gave up (chained to that escalation with
    ``__cause__``). A SupervisorError to the caller; to a supervisor that sees it, a crash of
    the caller like any other, never an escalation of its own."""


class Discard(Exception):  # noqa: N818 - the contract's name
    """Raise in a handler to fail the job at once, with no further attempts."""
