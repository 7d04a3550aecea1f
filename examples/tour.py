"""A narrated tour of actorq, in real time, on a real journal.

    python examples/tour.py [journal_path]        # default: ./tour-journal

Every section below really happens: jobs are journaled in LMDB (durability="fsync", the default),
run by trio, retried, dead-lettered, delayed and cancelled. The tour leaves a few jobs unfinished
when it ends; run it again on the same path and it recovers them from the journal first.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import trio

import actorq

LIVE = ("pending", "delayed", "running")


def say(text: str = "") -> None:
    print(text, flush=True)


def section(title: str) -> None:
    say()
    say(f"== {title} " + "=" * max(3, 70 - len(title)))


async def clear_leftovers(queue: actorq.Queue) -> None:
    """A run stopped half-way (Ctrl-C) can leave live jobs on a demo queue: start it clean."""
    left = [info for state in LIVE for info in await queue.list(state)]
    cancelled = [info for info in left if await queue.cancel(info.id)]
    if cancelled:
        say(f"   (cancelled {len(cancelled)} job(s) left on {queue.name!r} by an interrupted run)")


# ---------------------------------------------------------------------------------------------
# 1. Recovery: jobs the previous run left in the journal


async def carryover_handler(job: actorq.Job) -> str:
    await trio.sleep(job.payload["seconds"])
    say(f"   done: {job.payload['task']:<16} (attempt {job.attempt})")
    return "done"


async def recover(carry: actorq.Queue, path: Path) -> None:
    section("1. Recovery: what the journal already holds")
    stats = await carry.stats()  # right after spawn: exactly what the journal held
    live = {state: stats[state] for state in LIVE}
    total = sum(live.values())
    if total == 0:
        say(f"   the journal at {str(path)!r} holds no unfinished job of queue 'carryover':")
        say("   nothing to recover (first run). The tour will leave some for the next run.")
        return
    say(f"   the journal at {str(path)!r} holds {total} unfinished jobs of queue 'carryover':")
    say(f"   stats() -> {live}")
    for state in LIVE:
        for info in await carry.list(state):
            note = ""
            if info.payload["task"] == "nightly export" and state == "running":
                note = ("  <- running when the last run stopped: restarted, "
                        "the cut-short attempt not counted")
            elif state == "delayed":
                note = f"  <- due at {info.run_at:%H:%M:%S.%f}"[:-3] + " UTC"
            say(f"     - {info.payload['task']:<16} {state:<8} attempts={info.attempts}{note}")
    await carry.join()
    say(f"   recovered {total} jobs from the previous run, and finished them")


async def leave_work_for_next_run(carry: actorq.Queue, path: Path) -> None:
    section("7. Leaving work for the next run")
    # A long job that will still be running when we leave the runtime: shutdown cancels it and
    # puts it back to pending, without counting the attempt.
    await carry.enqueue({"task": "nightly export", "seconds": 1.5})
    info = (await carry.list("running"))[0]
    say(f"   'nightly export' is {info.state} (attempt {info.attempts})")
    # Pausing is not persisted: these stay pending now and run as soon as the next run spawns
    # the queue.
    await carry.pause()
    await carry.enqueue_batch([{"task": f"invoice #{n}", "seconds": 0.01} for n in (1, 2, 3)])
    await carry.enqueue({"task": "follow-up email", "seconds": 0.01}, delay=0.5)
    stats = await carry.stats()
    say(f"   queue paused, 3 invoices + 1 delayed job enqueued: "
        f"stats() -> { {state: stats[state] for state in LIVE} }")
    say("   leaving the runtime now: nothing is lost. Run the tour again on the same path:")
    say(f"       python examples/tour.py {path}")


# ---------------------------------------------------------------------------------------------
# 2. Priorities and concurrency


async def priorities() -> None:
    section("2. Priorities and concurrency")
    running = 0
    most = 0

    async def pack(job: actorq.Job) -> str:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await trio.sleep(0.1)
        running -= 1
        return f"packed {job.payload['order']}"

    orders = await actorq.spawn_queue("orders", pack, concurrency=2,
                                      retention=actorq.Retention(max_count=6))
    await clear_leftovers(orders)
    running = most = 0
    await orders.pause()  # let the jobs pile up, so priority decides who goes first
    submitted = [("standard #1", "normal"), ("bulk #1", "low"), ("express", "high"),
                 ("standard #2", "normal"), ("recall", "critical"), ("backfill", 10)]
    ids = [await orders.enqueue({"order": name}, priority=prio) for name, prio in submitted]
    say("   enqueued (queue paused): " + ", ".join(f"{n} [{p}]" for n, p in submitted))
    await orders.resume()
    await orders.join()
    infos = [await orders.status(job_id) for job_id in ids]
    # Jobs started in the same scheduling round share started_at; priority broke the tie.
    infos.sort(key=lambda i: (i.started_at, i.priority, i.created_at))
    say("   started in this order: " + ", ".join(i.payload["order"] for i in infos))
    say(f"   at most {most} ran at once (concurrency=2)")


# ---------------------------------------------------------------------------------------------
# 3. Retries with exponential backoff, then a dead letter


async def retries() -> None:
    section("3. Retries with exponential backoff, then the dead-letter queue")
    t0 = trio.current_time()
    dead: dict[str, dict] = {}  # dead letters by the id of the job that failed

    async def call_partner(job: actorq.Job) -> str:
        say(f"   {job.payload['call']}: attempt {job.attempt} at +{trio.current_time() - t0:.2f}s")
        if job.payload["call"] == "sync-stock" and job.attempt == 3:
            return "synced"
        raise ConnectionError("partner API unavailable")

    def on_error(job: actorq.Job, exc: BaseException) -> None:
        say(f"      attempt {job.attempt} failed: {type(exc).__name__}: {exc}")

    def on_failure(job: actorq.Job, exc: BaseException) -> None:
        say(f"      {job.payload['call']} failed for good after {job.attempt} attempts")

    async def record_dead_letter(job: actorq.Job) -> None:
        dead[job.payload["job_id"]] = job.payload

    dlq = await actorq.spawn_queue("partner.dead", record_dead_letter,
                                   retention=actorq.Retention(max_count=1))
    partner = await actorq.spawn_queue(
        "partner", call_partner,
        retry=actorq.Retry(max_attempts=4, backoff=actorq.exponential(0.1, factor=2.0)),
        dead_letter="partner.dead",
        hooks=actorq.Hooks(on_error=on_error, on_failure=on_failure),
        retention=actorq.Retention(max_count=2),
    )
    await clear_leftovers(dlq)
    await clear_leftovers(partner)
    say("   Retry(max_attempts=4, backoff=exponential(0.1)): waits 0.1, 0.2, 0.4 s")

    t0 = trio.current_time()
    job_id = await partner.enqueue({"call": "sync-stock"})
    say(f"   wait() -> {await partner.wait(job_id)!r}")

    t0 = trio.current_time()
    job_id = await partner.enqueue({"call": "push-prices"})
    error = None
    try:
        await partner.wait(job_id)
    except actorq.JobFailed as exc:
        error = exc.error
    await dlq.join()
    say(f"   wait() raised JobFailed: {error}")
    say("   the dead-letter queue 'partner.dead' received:")
    for key, value in dead[job_id].items():
        say(f"      {key}: {value!r}")


# ---------------------------------------------------------------------------------------------
# 4. Delayed jobs


async def delays() -> None:
    section("4. Delayed jobs: delay= and run_at=")
    t0 = trio.current_time()

    async def remind(job: actorq.Job) -> None:
        say(f"   reminder {job.payload['text']!r} ran at +{trio.current_time() - t0:.1f}s")

    reminders = await actorq.spawn_queue("reminders", remind,
                                         retention=actorq.Retention(max_count=2))
    await clear_leftovers(reminders)
    t0 = trio.current_time()
    first = await reminders.enqueue({"text": "stand up"}, delay=0.6)
    run_at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=0.3)
    second = await reminders.enqueue({"text": "drink water"}, run_at=run_at)
    info = await reminders.status(first)
    say(f"   enqueue(delay=0.6) -> state {info.state.value}, run_at {info.run_at:%H:%M:%S} UTC")
    say("   enqueue(run_at=now + 0.3 s) -> state "
        f"{(await reminders.status(second)).state.value}")
    await reminders.wait(first)
    await reminders.wait(second)


# ---------------------------------------------------------------------------------------------
# 5. status, wait, list, stats and cancel


async def inspect_and_cancel() -> None:
    section("5. status / wait / list / stats / cancel")

    async def build_report(job: actorq.Job) -> dict:
        await trio.sleep(job.payload["seconds"])
        return {"report": job.payload["report"], "rows": 42}

    # Retention(max_count=3): only the newest 3 finished jobs stay in the journal, so stats() is
    # the same on every run of the tour and the journal does not grow (each queue here has one).
    reports = await actorq.spawn_queue("reports", build_report, concurrency=1,
                                       retention=actorq.Retention(max_count=3))
    await clear_leftovers(reports)
    yearly = await reports.enqueue({"report": "yearly", "seconds": 60})
    daily = await reports.enqueue({"report": "daily", "seconds": 0.05})
    weekly = await reports.enqueue({"report": "weekly", "seconds": 0.05}, delay=3600)
    for state in LIVE:
        names = [i.payload["report"] for i in await reports.list(state)]
        say(f"   list({state!r}) -> {names}")
    say(f"   cancel(yearly) -> {await reports.cancel(yearly)}   (its running handler is cancelled)")
    say(f"   cancel(weekly) -> {await reports.cancel(weekly)}   (a delayed job never runs)")
    say(f"   wait(daily) -> {await reports.wait(daily)}")
    say(f"   cancel(daily) -> {await reports.cancel(daily)}   (already completed)")
    try:
        await reports.wait(yearly)
    except actorq.JobCancelled:
        say("   wait(yearly) raised JobCancelled")
    info = await reports.status(daily)
    took = (info.finished_at - info.started_at).total_seconds()
    say(f"   status(daily) -> state={info.state.value} attempts={info.attempts} "
        f"result={info.result} (ran {took:.2f}s)")
    say(f"   stats() -> {await reports.stats()}")
    say("   (Retention(max_count=3) keeps only the newest 3 finished jobs: the journal stays small")
    say("    however often the tour runs)")


# ---------------------------------------------------------------------------------------------
# 6. Rate shaping


async def rate_shaping() -> None:
    section("6. Rate shaping: Throttle and Debounce")
    starts: list[float] = []

    async def notify(job: actorq.Job) -> None:
        starts.append(trio.current_time())

    # A token bucket: 2 tokens at first, then 5 a second, whatever the concurrency.
    notify_q = await actorq.spawn_queue(
        "notify", notify, concurrency=10, throttle=actorq.Throttle(5, per=1.0, burst=2),
        retention=actorq.Retention(max_count=6))
    await clear_leftovers(notify_q)
    t0 = trio.current_time()
    await notify_q.enqueue_batch([{"n": i} for i in range(6)])
    await notify_q.join()
    offsets = ", ".join(f"+{t - t0:.1f}s" for t in starts)
    say(f"   Throttle(5, per=1.0, burst=2): 6 jobs started at {offsets}")

    rebuilt: list[str] = []

    async def reindex(job: actorq.Job) -> str:
        rebuilt.append(f"{job.payload['doc']} v{job.payload['version']}")
        return f"indexed {job.payload['doc']} v{job.payload['version']}"

    # One rebuild per burst of edits of the same document, 0.3 s after its last edit.
    index = await actorq.spawn_queue(
        "reindex", reindex, concurrency=2,
        debounce=actorq.Debounce(0.3, key=lambda payload: payload["doc"]),
        retention=actorq.Retention(max_count=8))
    await clear_leftovers(index)
    first = await index.enqueue({"doc": "readme", "version": 1})
    for version in (2, 3):
        await trio.sleep(0.05)
        await index.enqueue({"doc": "readme", "version": version})
    await index.enqueue({"doc": "faq", "version": 1})
    await index.join()
    say(f"   Debounce(0.3s) per document: 3 edits of readme and 1 of faq -> rebuilt "
        f"{sorted(rebuilt)}")
    info = await index.status(first)
    say(f"   the first edit ended {info.state.value} (superseded_by set); "
        f"wait(first edit) -> {await index.wait(first)!r}")


# ---------------------------------------------------------------------------------------------


async def main(path: Path) -> None:
    say(f"actorq tour: journal at {str(path)!r}, durability='fsync' "
        "(every call returns once its transition is on disk)")
    started = trio.current_time()
    async with actorq.open_runtime(path, durability="fsync"):
        carry = await actorq.spawn_queue("carryover", carryover_handler,
                                         retention=actorq.Retention(max_count=5))
        await recover(carry, path)
        await priorities()
        await retries()
        await delays()
        await inspect_and_cancel()
        await rate_shaping()
        await leave_work_for_next_run(carry, path)
    say()
    say(f"tour finished in {trio.current_time() - started:.1f}s")


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1] if len(sys.argv) > 1 else "tour-journal"))
