"""actorq: an embedded, durable task-queue runtime for trio, journaled in LMDB.

    async with actorq.open_runtime("jobs.journal") as runtime:
        email = await actorq.spawn_queue("email", send_email, concurrency=5,
                                         retry=actorq.Retry(max_attempts=5))
        job_id = await email.enqueue({"to": "ada@example.com"})
        await email.wait(job_id)

See README.md for a tour and API.md for the contract.
"""

from ._api import Queue, Runtime, open_runtime, spawn_queue
from ._errors import (
    ActorqError,
    Discard,
    JobCancelled,
    JobFailed,
    JobInterrupted,
    JobTimeout,
    JournalError,
    JournalLocked,
    PayloadError,
    QueueStopped,
    SupervisorError,
    UnknownJob,
)
from ._model import (
    Debounce,
    Hooks,
    Job,
    JobInfo,
    JobState,
    Restart,
    Retention,
    Retry,
    Throttle,
    exponential,
    fixed,
    linear,
)

__version__ = "0.1.0"

__all__ = [
    "ActorqError",
    "Debounce",
    "Discard",
    "Hooks",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobInfo",
    "JobInterrupted",
    "JobState",
    "JobTimeout",
    "JournalError",
    "JournalLocked",
    "PayloadError",
    "Queue",
    "QueueStopped",
    "Restart",
    "Retention",
    "Retry",
    "Runtime",
    "SupervisorError",
    "Throttle",
    "UnknownJob",
    "exponential",
    "fixed",
    "linear",
    "open_runtime",
    "spawn_queue",
]
