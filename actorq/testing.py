"""Fault injection for tests: yours and ours.

Use these in your own test suite to check that your handlers and your application behave when
actorq's journal or workers fail::

    async with actorq.open_runtime(path, durability="os") as runtime:
        queue = await actorq.spawn_queue("q", handler, retry=actorq.Retry(3))
        actorq.testing.fail_next_commits(runtime, 1)
        with pytest.raises(actorq.JournalError):
            await queue.enqueue("x")          # never acknowledged, never recorded

        actorq.testing.crash_next_job(queue)  # the worker that takes the next job crashes
        job_id = await queue.enqueue("y")     # ... is restarted, and the job is retried
        await queue.wait(job_id)

An injected commit failure aborts the LMDB write transaction just before it commits, as a failing
``fsync`` would: nothing of it is durable, and every caller waiting on that commit gets a
:class:`actorq.JournalError`. The queue actor whose commit failed crashes and is restarted by its
supervisor, rebuilding its state from the journal.
"""

from __future__ import annotations

import errno

from ._api import Queue, Runtime

__all__ = ["crash_next_job", "fail_next_commits"]


def fail_next_commits(runtime: Runtime, n: int = 1, error: BaseException | None = None) -> None:
    """Make the journal's next ``n`` commits fail with ``error`` (default: an ``OSError``
    EIO, as from a failed fsync)."""
    if not isinstance(runtime, Runtime):
        raise TypeError(f"runtime must be an actorq Runtime (got {runtime!r})")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0 (got {n!r})")
    remaining = n
    previous = runtime.journal.before_commit

    def hook() -> None:
        nonlocal remaining
        if remaining > 0:
            remaining -= 1
            raise error if error is not None else OSError(
                errno.EIO, "injected journal commit failure (actorq.testing)")
        if previous is not None:
            previous()

    runtime.journal.before_commit = hook


def crash_next_job(queue: Queue, n: int = 1, error: BaseException | None = None) -> None:
    """Make the workers of ``queue`` crash (raise ``error``, default a ``RuntimeError``) as they
    take each of their next ``n`` jobs: the job held counts a failed attempt under the retry
    policy, and the worker is restarted under the queue's restart policy."""
    if not isinstance(queue, Queue):
        raise TypeError(f"queue must be an actorq Queue (got {queue!r})")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0 (got {n!r})")
    for _ in range(n):
        queue._actor.injected_crashes.append(
            error if error is not None else RuntimeError("injected worker crash (actorq.testing)"))
