"""The persistence layer: locking, refusing what is not a journal, boot epochs, map growth, group
commit, failed commits, recovery reads, retention and the refusal of invalid transitions.

Public behaviour goes through ``actorq.open_runtime``; internals through
``actorq._journal.Journal``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import sys
import textwrap

import lmdb
import pytest
import trio

import actorq
import actorq._journal as journal_module
from actorq._journal import _Q, FORMAT_VERSION, Journal, MapFull
from actorq._model import (
    AttemptFailed,
    Cancelled,
    Due,
    Enqueued,
    Failed,
    Interrupted,
    JobRecord,
    JobState,
    Requeued,
    Retention,
    Started,
    Succeeded,
    apply_event,
)
from actorq._supervisor import find_supervisor_error
from tests.support import run

S = JobState
KiB = 1024


def record(job_id: str, queue: str = "q", *, state: JobState = S.PENDING, payload=None,
           at: float = 1_000.0, **changes) -> JobRecord:
    return JobRecord(id=job_id, queue=queue, state=state, payload=payload, priority=2, seq=0,
                     created_at=at, ready_at=at, **changes)


def data_bytes(path) -> bytes:
    with open(os.path.join(path, "data.mdb"), "rb") as f:
        return f.read()


def event_id(ev) -> str:
    return ev.record.id if isinstance(ev, Enqueued) else ev.id


async def noop(job):
    return None


# ---------------------------------------------------------------------------------------------
# Locking


def test_second_open_runtime_in_the_same_process_is_locked(journal_path):
    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as runtime:
            with pytest.raises(actorq.JournalLocked, match="another runtime"):
                async with actorq.open_runtime(journal_path, durability="os"):
                    pytest.fail("a second runtime opened the same journal")  # pragma: no cover
            with pytest.raises(actorq.JournalLocked):
                Journal(journal_path)
            # the failed attempts did not disturb the first runtime nor release its lock
            queue = await runtime.spawn_queue("q", lambda job: job.payload + 1)
            assert await queue.wait(await queue.enqueue(1)) == 2
            with pytest.raises(actorq.JournalLocked):
                Journal(journal_path)
        # once it is closed, the path opens again
        async with actorq.open_runtime(journal_path, durability="os") as runtime:
            assert runtime.journal.epoch == 2

    run(main)


def test_journal_locked_is_a_journal_error(journal_path):
    first = Journal(journal_path, sync=False)
    try:
        with pytest.raises(actorq.JournalError):
            Journal(journal_path, sync=False)
        assert issubclass(actorq.JournalLocked, actorq.JournalError)
    finally:
        first.close()
    Journal(journal_path, sync=False).close()


CHILD_OPEN = textwrap.dedent("""
    import sys, trio, actorq

    async def main(path):
        try:
            async with actorq.open_runtime(path, durability="os"):
                print("opened")
        except Exception as exc:
            print(type(exc).__name__)
            print(exc)

    trio.run(main, sys.argv[1])
""")


def _child_open(path) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", CHILD_OPEN, str(path)], capture_output=True,
                          text=True, timeout=60, check=True)
    return proc.stdout.splitlines()


def test_open_runtime_from_another_process_is_locked(journal_path):
    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as runtime:
            # a same-process attempt fails first: it must not drop our lock
            with pytest.raises(actorq.JournalLocked):
                Journal(journal_path)
            out = _child_open(journal_path)
            assert out[0] == "JournalLocked", out
            assert str(journal_path) in out[1]
            assert runtime.journal.epoch == 1

    run(main)
    # released on close: now the other process gets in
    assert _child_open(journal_path) == ["opened"]


# ---------------------------------------------------------------------------------------------
# Refusing what is not a journal, never overwriting it


def test_a_regular_file_is_not_a_journal(tmp_path):
    path = tmp_path / "jobs.db"
    path.write_bytes(b"some file")

    async def main():
        with pytest.raises(actorq.JournalError) as info:
            async with actorq.open_runtime(path, durability="os"):
                pytest.fail("opened a regular file")  # pragma: no cover
        assert str(path) in str(info.value)
        assert "not a directory" in str(info.value)

    run(main)
    assert path.read_bytes() == b"some file"


@pytest.mark.parametrize("garbage", [
    b"hello",
    b"SQLite format 3\x00" + bytes(range(256)) * 64,
    os.urandom(3 * 4096),
], ids=["tiny", "sqlite-like", "random"])
def test_garbage_data_file_is_refused_and_left_untouched(journal_path, garbage):
    journal_path.mkdir()
    (journal_path / "data.mdb").write_bytes(garbage)

    async def main():
        with pytest.raises(actorq.JournalError,
                           match=r"is not an actorq journal: it is not an LMDB file") as info:
            async with actorq.open_runtime(journal_path, durability="os"):
                pytest.fail("opened garbage")  # pragma: no cover
        assert "data.mdb" in str(info.value)
        assert not isinstance(info.value, actorq.JournalLocked)

    run(main)
    assert data_bytes(journal_path) == garbage
    # the lock was released: a second try fails the same way, not with JournalLocked
    with pytest.raises(actorq.JournalError, match="not an LMDB file"):
        Journal(journal_path)
    assert data_bytes(journal_path) == garbage


def _foreign_lmdb(path, fill) -> bytes:
    env = lmdb.open(str(path), max_dbs=4, map_size=1 << 20)
    with env.begin(write=True) as txn:
        fill(env, txn)
    env.close()
    return data_bytes(path)


def _other_named_db(env, txn):
    db = env.open_db(b"users", txn=txn)
    txn.put(b"ada", b"lovelace", db=db)


def _plain_keys(env, txn):
    txn.put(b"alpha", b"1")
    txn.put(b"beta", b"2")


def _meta_as_a_plain_key(env, txn):
    txn.put(b"meta", b"not a database")
    txn.put(b"zeta", b"2")


def _meta_db_without_format(env, txn):
    db = env.open_db(b"meta", txn=txn)
    txn.put(b"owner", b"someone else", db=db)


@pytest.mark.parametrize("fill", [_other_named_db, _plain_keys, _meta_as_a_plain_key,
                                  _meta_db_without_format],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_foreign_lmdb_environment_is_refused_and_left_untouched(journal_path, fill):
    before = _foreign_lmdb(journal_path, fill)

    async def main():
        with pytest.raises(actorq.JournalError) as info:
            async with actorq.open_runtime(journal_path, durability="os"):
                pytest.fail("opened a foreign environment")  # pragma: no cover
        assert str(journal_path) in str(info.value)
        assert "untouched" in str(info.value)

    run(main)
    assert data_bytes(journal_path) == before
    # and its data is still there
    env = lmdb.open(str(journal_path), max_dbs=4, readonly=True)
    try:
        with env.begin() as txn:
            assert txn.cursor().first()
    finally:
        env.close()


def test_foreign_environment_error_names_what_was_found(journal_path):
    _foreign_lmdb(journal_path, _other_named_db)
    with pytest.raises(actorq.JournalError, match=r"not an actorq journal.*users"):
        Journal(journal_path)


def test_a_newer_format_version_is_refused_and_left_untouched(journal_path):
    Journal(journal_path, sync=False).close()
    env = lmdb.open(str(journal_path), max_dbs=10)
    with env.begin(write=True) as txn:
        meta = env.open_db(b"meta", txn=txn)
        assert _Q.unpack(txn.get(b"format", db=meta))[0] == FORMAT_VERSION
        txn.put(b"format", _Q.pack(FORMAT_VERSION + 1), db=meta)
        epoch = txn.get(b"epoch", db=meta)
    env.close()
    before = data_bytes(journal_path)

    async def main():
        with pytest.raises(actorq.JournalError) as info:
            async with actorq.open_runtime(journal_path, durability="os"):
                pytest.fail("opened a newer format")  # pragma: no cover
        message = str(info.value)
        assert f"format version {FORMAT_VERSION + 1}" in message
        assert f"reads format version {FORMAT_VERSION}" in message

    run(main)
    assert data_bytes(journal_path) == before
    env = lmdb.open(str(journal_path), max_dbs=10, readonly=True)
    try:
        with env.begin() as txn:
            meta = env.open_db(b"meta", txn=txn, create=False)
            assert txn.get(b"epoch", db=meta) == epoch  # no new boot epoch was written
    finally:
        env.close()


# ---------------------------------------------------------------------------------------------
# Boot epochs


def test_each_open_writes_a_new_epoch(journal_path):
    epochs = []
    for _ in range(3):
        j = Journal(journal_path, sync=False)
        epochs.append(j.epoch)
        j.close()

    async def main():
        for _ in range(2):
            async with actorq.open_runtime(journal_path, durability="os") as runtime:
                epochs.append(runtime.journal.epoch)

    run(main)
    assert epochs == [1, 2, 3, 4, 5]


def test_a_job_running_in_an_older_epoch_is_interrupted_at_open(journal_path):
    j = Journal(journal_path, sync=False)
    j.commit([Enqueued(record("a", payload={"n": 1})), Enqueued(record("b"))])
    j.commit([Started("a", 1_001.0, 1, j.epoch)])
    j.close()

    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as runtime:
            info = await runtime.status("a")
            assert info.state is actorq.JobState.PENDING
            assert "interrupted" in info.error
            assert info.error.startswith("JobInterrupted: ")
            assert info.attempts == 1  # the interrupted attempt counts, nothing added
            assert info.payload == {"n": 1}
            other = await runtime.status("b")  # a job that was not running is untouched
            assert other.state is actorq.JobState.PENDING
            assert other.error is None
            assert other.attempts == 0

    run(main)


def test_interrupt_stale_spares_jobs_of_the_current_epoch(journal_path):
    j = Journal(journal_path, sync=False)
    j.commit([Enqueued(record("old"))])
    j.commit([Started("old", 1.0, 1, j.epoch)])
    j.close()
    j = Journal(journal_path, sync=False)
    try:
        j.commit([Enqueued(record("new"))])
        j.commit([Started("new", 2.0, 1, j.epoch)])
        interrupted = j.interrupt_stale(3.0)
        assert [r.id for r in interrupted] == ["old"]
        old = j.get("old")
        assert old.state is S.PENDING and old.interrupted and old.attempts == 1
        assert "interrupted" in old.error
        assert j.get("new").state is S.RUNNING
        assert j.interrupt_stale(4.0) == []  # idempotent
    finally:
        j.close()


CHILD_CRASH = textwrap.dedent("""
    import os, sys, trio, actorq

    async def handler(job):
        os._exit(0)  # the process dies in the middle of the attempt

    async def main(path):
        async with actorq.open_runtime(path) as runtime:
            queue = await actorq.spawn_queue("q", handler)
            await queue.enqueue({"n": 1}, job_id="crashy")
            await trio.sleep(30)
        print("not reached")

    trio.run(main, sys.argv[1])
""")


def test_a_process_that_dies_mid_attempt_leaves_an_interrupted_job(journal_path):
    proc = subprocess.run([sys.executable, "-c", CHILD_CRASH, str(journal_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "not reached" not in proc.stdout, proc.stderr

    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as runtime:
            info = await runtime.status("crashy")
            assert info.state is actorq.JobState.PENDING
            assert "interrupted" in info.error
            assert info.attempts == 1
            runs = []

            async def handler(job):
                runs.append(job.attempt)
                return "ok"

            queue = await runtime.spawn_queue("q", handler, retry=actorq.Retry(max_attempts=2,
                                                                               backoff=0))
            assert await queue.wait("crashy") == "ok"
            assert runs == [2]

    run(main)


# ---------------------------------------------------------------------------------------------
# Map growth


def _big_batch(prefix: str, n: int, size: int = 1000):
    return [Enqueued(record(f"{prefix}{i}", payload="x" * size)) for i in range(n)]


def test_the_map_grows_when_a_commit_needs_it(journal_path):
    j = Journal(journal_path, sync=False, map_size=64 * KiB)
    try:
        initial = j.env.info()["map_size"]
        assert initial == 64 * KiB
        events = _big_batch("big", 300)
        with pytest.raises(MapFull):
            j.commit(events)
        assert j.log() == []  # the aborted transaction left nothing
        results = j.commit_growing(events)
        assert all(r is not None for r in results)
        assert j.env.info()["map_size"] > initial
        assert j.counts("q")[S.PENDING] == 300
    finally:
        j.close()
    j = Journal(journal_path, sync=False)
    try:
        assert j.counts("q")[S.PENDING] == 300
        assert j.get("big299").payload == "x" * 1000
        assert [seq for seq, _ in j.log()] == list(range(1, 301))
    finally:
        j.close()


def test_a_full_journal_raises_a_clear_error_and_writes_nothing(journal_path):
    j = Journal(journal_path, sync=False, map_size=64 * KiB, max_map_size=128 * KiB)
    try:
        assert all(j.commit_growing(_big_batch("small", 5, size=100)))
        log_before = j.log()
        with pytest.raises(actorq.JournalError, match=r"is full.*max_map_size \(131072 bytes\)"):
            j.commit_growing(_big_batch("big", 300))
        assert j.log() == log_before
        assert j.counts("q")[S.PENDING] == 5
        assert all(j.get(f"small{i}") is not None for i in range(5))
        assert j.get("big0") is None and j.get("big299") is None
        # still usable, and sequence numbers go on where they were
        (rec,) = j.commit_growing([Enqueued(record("after"))])
        assert rec.seq == 6
    finally:
        j.close()
    j = Journal(journal_path, sync=False)
    try:
        assert j.counts("q")[S.PENDING] == 6
        assert j.get("big0") is None
    finally:
        j.close()


def test_a_journal_bigger_than_map_size_reopens(journal_path):
    # Opening writes the new boot epoch. LMDB sizes the map of an existing file to at least its
    # used pages, so when the file is fuller than map_size that write needs the map to grow,
    # like any other commit; it must not fail.
    j = Journal(journal_path, sync=False, map_size=64 * KiB)
    try:
        j.commit_growing(_big_batch("big", 300))
    finally:
        j.close()
    j = Journal(journal_path, sync=False, map_size=64 * KiB)
    try:
        assert j.epoch == 2
        assert j.counts("q")[S.PENDING] == 300
        assert all(j.commit_growing([Enqueued(record("after"))]))
    finally:
        j.close()


def test_open_runtime_reopens_a_journal_bigger_than_the_default_map(journal_path):
    # The same through the public API: a journal that grew past the default 64 MiB map in an
    # earlier run (here 36 jobs with 1 MiB payloads, each stored as a record and a log entry).
    j = Journal(journal_path, sync=False)
    try:
        j.commit_growing(_big_batch("big", 36, size=1 << 20))
        assert j.env.info()["map_size"] > 64 << 20
    finally:
        j.close()

    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as runtime:
            assert runtime.journal.epoch == 2
            info = await runtime.status("big35")
            assert info.state is actorq.JobState.PENDING
            assert len(info.payload) == 1 << 20

    run(main)


# ---------------------------------------------------------------------------------------------
# Group commit


def test_concurrent_enqueues_are_group_committed_and_durable(journal_path):
    n = 200
    ids = [f"job-{i}" for i in range(n)]

    async def main():
        async with actorq.open_runtime(journal_path, durability="fsync") as runtime:
            queue = await runtime.spawn_queue("q", noop)
            await queue.pause()
            before = runtime.writer.statistics()
            returned = []

            async def enqueue(job_id):
                returned.append(await queue.enqueue({"id": job_id}, job_id=job_id))

            async with trio.open_nursery() as nursery:
                for job_id in ids:
                    nursery.start_soon(enqueue, job_id)
            after = runtime.writer.statistics()
            assert sorted(returned) == sorted(ids)
            assert after.transitions - before.transitions == n
            assert after.commits - before.commits < n
            assert after.largest_group > 1

    run(main)

    async def check():
        async with actorq.open_runtime(journal_path, durability="os") as runtime:
            for job_id in ids:
                info = await runtime.status(job_id)
                assert info.state is actorq.JobState.PENDING
                assert info.payload == {"id": job_id}
            assert runtime.journal.counts("q")[S.PENDING] == n

    run(check)


def test_the_writer_groups_concurrent_submissions_into_one_commit(journal_path):
    n = 200

    async def main():
        async with actorq.open_runtime(journal_path, durability="fsync") as runtime:
            writer = runtime.writer
            before = writer.statistics()
            results = {}

            async def submit(i):
                (rec,) = await writer.commit([Enqueued(record(f"w{i}", "w", payload=i))])
                results[i] = rec

            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(submit, i)
            after = writer.statistics()
            assert all(results[i] is not None and results[i].payload == i for i in range(n))
            assert len({rec.seq for rec in results.values()}) == n
            assert after.transitions - before.transitions == n
            assert after.commits - before.commits < n / 10
            assert after.largest_group > 1

    run(main)
    j = Journal(journal_path, sync=False)
    try:
        assert j.counts("w")[S.PENDING] == n
        assert [r.payload for r in j.live("w")] == sorted(
            range(n), key=lambda i: j.get(f"w{i}").seq)
    finally:
        j.close()


# ---------------------------------------------------------------------------------------------
# A failed commit never acknowledges


@pytest.mark.parametrize("durability", ["os", "fsync"])
def test_a_failed_commit_never_acknowledges_an_enqueue(journal_path, durability):
    async def main():
        ran = []

        async def handler(job):
            ran.append(job.id)

        async with actorq.open_runtime(journal_path, durability=durability) as runtime:
            queue = await runtime.spawn_queue("q", handler)
            calls = []

            def fail_once():
                calls.append(1)
                if len(calls) == 1:
                    raise OSError("disk on fire")

            runtime.writer.before_commit = fail_once
            with pytest.raises(actorq.JournalError) as info:
                await queue.enqueue("lost", job_id="lost")
            assert not isinstance(info.value, BaseExceptionGroup)
            assert "disk on fire" in str(info.value)
            assert isinstance(info.value.__cause__, OSError)
            with pytest.raises(actorq.UnknownJob):
                await runtime.status("lost")
            # the runtime goes on: the next enqueue is recorded and runs
            kept = await queue.enqueue("kept", job_id="kept")
            await queue.wait(kept)
            assert ran == ["kept"]
            assert [i.id for i in await queue.list()] == ["kept"]

    run(main)

    async def check():
        async with actorq.open_runtime(journal_path, durability="os") as runtime:
            with pytest.raises(actorq.UnknownJob):
                await runtime.status("lost")
            assert (await runtime.status("kept")).state is actorq.JobState.COMPLETED
            queue = await runtime.spawn_queue("q", noop)
            assert [i.id for i in await queue.list()] == ["kept"]

    run(check)


@pytest.mark.parametrize("durability", ["os", "fsync"])
def test_concurrent_enqueues_return_exactly_when_they_are_durable(journal_path, durability):
    n = 30
    outcomes: dict[str, str] = {}

    async def main():
        async with actorq.open_runtime(journal_path, durability=durability) as runtime:
            queue = await runtime.spawn_queue("q", noop)
            await queue.pause()
            calls = []

            def fail_once():
                calls.append(1)
                if len(calls) == 1:
                    raise OSError("write error")

            runtime.writer.before_commit = fail_once

            async def enqueue(i):
                job_id = f"j{i}"
                try:
                    await queue.enqueue(i, job_id=job_id)
                except actorq.JournalError:
                    outcomes[job_id] = "error"
                else:
                    outcomes[job_id] = "ok"

            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(enqueue, i)
                    if i % 10 == 9:
                        await trio.sleep(0.1)  # a few separate commits

    run(main)
    assert len(outcomes) == n
    assert "error" in outcomes.values()
    assert "ok" in outcomes.values()

    async def check():
        async with actorq.open_runtime(journal_path, durability="os") as runtime:
            for job_id, outcome in outcomes.items():
                if outcome == "ok":
                    assert (await runtime.status(job_id)).state is actorq.JobState.PENDING
                else:
                    with pytest.raises(actorq.UnknownJob):
                        await runtime.status(job_id)

    run(check)


# ---------------------------------------------------------------------------------------------
# Recovery reads only unfinished jobs; list and counts


def _populate(j: Journal):
    """60 jobs of "q" in every state (and some of "qq"), through real transitions."""
    expected: dict[str, JobState] = {}
    epoch = j.epoch
    t = 1_000.0
    j.commit([Enqueued(record(f"x{i}", "qq")) for i in range(5)])
    for i in range(60):
        job_id = f"j{i:02}"
        kind = i % 6
        if kind == 1:
            j.commit([Enqueued(record(job_id, state=S.DELAYED, run_at=t + 100))])
        else:
            j.commit([Enqueued(record(job_id))])
        if kind == 0:
            expected[job_id] = S.PENDING
        elif kind == 1:
            expected[job_id] = S.DELAYED
        elif kind == 2:
            j.commit([Started(job_id, t, 1, epoch)])
            expected[job_id] = S.RUNNING
        elif kind == 3:
            j.commit([Started(job_id, t, 1, epoch), Succeeded(job_id, t + 1, i)])
            expected[job_id] = S.COMPLETED
        elif kind == 4:
            j.commit([Started(job_id, t, 1, epoch)])
            j.commit([Failed(job_id, t + 1, "ValueError: x")])
            expected[job_id] = S.FAILED
        else:
            j.commit([Cancelled(job_id, t)])
            expected[job_id] = S.CANCELLED
    return expected


def test_live_returns_only_unfinished_jobs_in_enqueue_order(journal_path):
    j = Journal(journal_path, sync=False)
    try:
        expected = _populate(j)
        live = j.live("q")
        assert [r.id for r in live] == sorted(
            k for k, s in expected.items() if s in (S.PENDING, S.DELAYED, S.RUNNING))
        assert [r.seq for r in live] == sorted(r.seq for r in live)
        assert all(r.queue == "q" for r in live)
        assert [r.id for r in j.live("qq")] == [f"x{i}" for i in range(5)]
        assert j.live("nope") == []
    finally:
        j.close()


def test_recovery_decodes_only_live_records(journal_path, monkeypatch):
    j = Journal(journal_path, sync=False)
    try:
        finished = [Enqueued(record(f"done{i}")) for i in range(1000)]
        j.commit(finished)
        j.commit([Cancelled(f"done{i}", 2.0) for i in range(1000)])
        j.commit([Enqueued(record(f"live{i}")) for i in range(7)])
        decoded = []
        real = journal_module.decode_record

        def counting(data):
            rec = real(data)
            decoded.append(rec.id)
            return rec

        monkeypatch.setattr(journal_module, "decode_record", counting)
        live = j.live("q")
        assert [r.id for r in live] == [f"live{i}" for i in range(7)]
        assert sorted(decoded) == sorted(r.id for r in live)
    finally:
        j.close()


def test_list_is_oldest_first_and_counts_match(journal_path):
    j = Journal(journal_path, sync=False)
    try:
        expected = _populate(j)
        order = sorted(expected)  # enqueue order: j00, j01, ...
        for state in JobState:
            of_state = [k for k in order if expected[k] is state]
            assert [r.id for r in j.list("q", state, limit=1000)] == of_state
            assert [r.id for r in j.list("q", state, limit=3)] == of_state[:3]
            assert all(r.state is state for r in j.list("q", state))
        assert [r.id for r in j.list("q", limit=1000)] == order
        assert [r.id for r in j.list("q", limit=7)] == order[:7]
        assert j.list("q", limit=0) == []
        counts = collections.Counter(expected.values())
        assert j.counts("q") == {s: counts.get(s, 0) for s in JobState}
        assert j.counts("qq") == {s: (5 if s is S.PENDING else 0) for s in JobState}
    finally:
        j.close()


def test_queue_list_and_stats_through_the_public_api(journal_path):
    async def main():
        async def handler(job):
            if job.payload % 3 == 0:
                raise ValueError("no")
            return job.payload

        async with actorq.open_runtime(journal_path, durability="os"):
            queue = await actorq.spawn_queue("q", handler)
            ids = await queue.enqueue_batch(list(range(12)))
            later = await queue.enqueue(99, delay=60)
            await trio.sleep(1)
            stats = await queue.stats()
            assert stats == {"pending": 0, "delayed": 1, "running": 0, "completed": 8,
                             "failed": 4, "cancelled": 0}
            assert [i.id for i in await queue.list("failed")] == [ids[i] for i in (0, 3, 6, 9)]
            assert [i.id for i in await queue.list(actorq.JobState.COMPLETED, limit=2)] == [
                ids[1], ids[2]]
            assert [i.id for i in await queue.list()] == ids + [later]

    run(main)


# ---------------------------------------------------------------------------------------------
# Retention


def _ids_in_log(j: Journal) -> collections.Counter:
    return collections.Counter(event_id(ev) for _seq, ev in j.log())


def test_retention_max_count_keeps_the_newest_finished_jobs(journal_path):
    keep = 10

    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as runtime:
            queue = await actorq.spawn_queue("q", noop, retention=Retention(max_count=keep))
            other = await actorq.spawn_queue("other", noop)
            other_ids = await other.enqueue_batch(range(20))
            ids = await queue.enqueue_batch(range(50))
            await queue.join()
            await other.join()
            stats = await queue.stats()
            assert stats["completed"] == keep
            assert sum(stats.values()) == keep
            kept = [i.id for i in await queue.list(limit=1000)]
            assert kept == ids[-keep:]  # the newest ones stay
            for job_id in ids[:-keep]:
                with pytest.raises(actorq.UnknownJob):
                    await runtime.status(job_id)
            # their log entries went with them: only the kept jobs' three entries remain
            in_log = _ids_in_log(runtime.journal)
            assert {k: v for k, v in in_log.items() if k in set(ids)} == dict.fromkeys(kept, 3)
            assert sum(in_log.values()) == 3 * keep + 3 * 20
            # another queue's finished jobs are not touched by this queue's policy
            assert (await other.stats())["completed"] == 20
            for job_id in other_ids:
                assert (await runtime.status(job_id)).state is actorq.JobState.COMPLETED

    run(main)


def test_retention_shrinks_the_log(journal_path):
    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as runtime:
            queue = await actorq.spawn_queue("q", noop, retention=Retention(max_count=5))
            sizes = []
            for _ in range(4):
                await queue.enqueue_batch(range(25))
                await queue.join()
                sizes.append(len(runtime.journal.log()))
            assert sizes == [15, 15, 15, 15]

    run(main)


def test_retention_max_age_removes_old_finished_jobs_at_the_next_finish(journal_path):
    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as runtime:
            queue = await actorq.spawn_queue("q", noop, retention=Retention(max_age=60))
            first = await queue.enqueue("first")
            await queue.wait(first)
            await trio.sleep(30)
            second = await queue.enqueue("second")
            await queue.wait(second)
            await trio.sleep(31)  # first is 61 s old, second 31 s
            assert (await runtime.status(first)).state is actorq.JobState.COMPLETED
            # a waiting job finishing (here: cancelled) is a commit that finishes a job
            pending = await queue.enqueue("third", delay=1000)
            assert await queue.cancel(pending)
            with pytest.raises(actorq.UnknownJob):
                await runtime.status(first)
            assert (await runtime.status(second)).state is actorq.JobState.COMPLETED
            assert "first" not in [ev.record.payload for _s, ev in runtime.journal.log()
                                   if isinstance(ev, Enqueued)]
            await trio.sleep(61)
            third = await queue.enqueue("fourth")
            await queue.wait(third)
            with pytest.raises(actorq.UnknownJob):
                await runtime.status(second)
            with pytest.raises(actorq.UnknownJob):
                await runtime.status(pending)
            assert [i.id for i in await queue.list()] == [third]
            # a removed id is free again: enqueueing it records a new job
            again = await queue.enqueue("again", job_id=first)
            assert again == first
            assert (await queue.wait(first)) is None
            assert (await runtime.status(first)).payload == "again"

    run(main)


def test_the_data_file_levels_off_under_steady_load(journal_path):
    sizes = []

    async def main():
        async with actorq.open_runtime(journal_path, durability="os") as runtime:
            queue = await actorq.spawn_queue("q", noop, concurrency=4,
                                             retention=Retention(max_count=500))
            for _ in range(5):
                await queue.enqueue_batch([{"i": i, "pad": "x" * 50} for i in range(2000)])
                await queue.join()
                assert runtime.journal.counts("q")[S.COMPLETED] == 500
                assert len(runtime.journal.log()) == 1500
                sizes.append(os.path.getsize(journal_path / "data.mdb"))

    run(main)
    # 10,000 jobs went through; the file holds about 500 of them. LMDB reuses freed pages, so
    # after the first rounds the file stops growing (some slack for page-level fragmentation).
    assert sizes[-1] <= sizes[1] * 1.2, sizes
    assert sizes[-1] - sizes[2] <= 0.1 * sizes[0], sizes
    assert sizes[-1] < 2 * sizes[0], sizes


# ---------------------------------------------------------------------------------------------
# apply_event refuses transitions that do not fit


def test_apply_event_refuses_invalid_transitions():
    pending = apply_event(None, Enqueued(record("a")), 1)
    assert pending is not None and pending.state is S.PENDING and pending.log == (1,)
    running = apply_event(pending, Started("a", 2.0, 1, 1), 2)
    assert running.state is S.RUNNING
    completed = apply_event(running, Succeeded("a", 3.0, "r"), 3)
    assert completed.state is S.COMPLETED and completed.log == (1, 2, 3)

    assert apply_event(completed, Started("a", 4.0, 2, 1), 4) is None
    assert apply_event(pending, Enqueued(record("a")), 4) is None
    assert apply_event(completed, Enqueued(record("a")), 4) is None
    assert apply_event(pending, Succeeded("a", 4.0, "r"), 4) is None
    assert apply_event(None, Started("a", 4.0, 1, 1), 4) is None
    assert apply_event(running, Started("a", 4.0, 2, 1), 4) is None
    assert apply_event(pending, Requeued("a", 4.0), 4) is None
    assert apply_event(pending, Interrupted("a", 4.0, "x"), 4) is None
    assert apply_event(pending, Due("a", 4.0), 4) is None
    assert apply_event(pending, AttemptFailed("a", 4.0, "E: x", None), 4) is None
    for terminal_event in (Failed("a", 4.0, "E"), Cancelled("a", 4.0), Succeeded("a", 4.0, 1)):
        assert apply_event(completed, terminal_event, 4) is None


def test_the_folds_build_plain_frozen_records():
    """apply_event builds its records without attrs' __init__ (actorq._model._record_builder):
    what it builds is a plain JobRecord, equal to the one __init__ builds, frozen, hashable and
    weak-referenceable; on this interpreter, the fast builder (a draft turned into a
    JobRecord) is the one in use, and the fallback builds the same."""
    import weakref

    import attrs

    from actorq._model import _record, _record_builder

    fields = [f.name for f in attrs.fields(JobRecord)]
    values = ["a", "q", S.RUNNING, ("n", 1), 2, 7, 1.0, 2.0, 3.0, 1, 5, 9.5, 4.0, None, "r",
              "E: x", "b", 3, True, "k", 0.5, True, (7, 8)]
    assert len(values) == len(fields)
    assert "_draft" in _record.__code__.co_names  # the fast builder
    for build in (_record, _record_builder(fast=False)):
        rec = build(*values)
        assert type(rec) is JobRecord
        assert rec == JobRecord(*values) and hash(rec) == hash(JobRecord(*values))
        assert [getattr(rec, name) for name in fields] == values
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            rec.state = S.PENDING
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            del rec.state
        assert weakref.ref(rec)() is rec
    enqueued = apply_event(None, Enqueued(record("a")), 1)
    assert type(enqueued) is JobRecord and enqueued == attrs.evolve(record("a"), seq=1, log=(1,))


def test_decode_live_builds_plain_frozen_entries():
    """decode_live builds its LiveEntry without attrs' __init__ (actorq._model._builder): a
    plain LiveEntry, equal to the one __init__ builds, frozen, hashable, weak-referenceable."""
    import weakref

    import attrs

    from actorq._codec import Encoder, decode_live
    from actorq._model import LiveEntry, _builder, _live_entry

    rec = attrs.evolve(record("a"), priority=-3, ready_at=2.5, attempts=2, max_attempts=4,
                       timeout=1.5, interrupted=True, debounce_key="k", debounce_first_at=0.5,
                       leading=True)
    assert "_draft" in _live_entry.__code__.co_names  # the fast builder
    for entry in (decode_live(Encoder().live(rec), 9, S.PENDING),
                  _builder(LiveEntry, fast=False)(
                      *attrs.astuple(LiveEntry.from_record(attrs.evolve(rec, seq=9)),
                                     recurse=False))):
        expected = LiveEntry.from_record(attrs.evolve(rec, seq=9, state=S.PENDING))
        assert type(entry) is LiveEntry
        assert entry == expected and hash(entry) == hash(expected)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            entry.seq = 1
        assert weakref.ref(entry)() is entry


def test_the_journal_does_not_log_a_refused_transition(journal_path):
    j = Journal(journal_path, sync=False)
    try:
        j.commit([Enqueued(record("a", payload=1))])
        results = j.commit([
            Enqueued(record("a", payload=2)),   # an id already held
            Succeeded("a", 2.0, "r"),           # not running
            Started("a", 2.0, 1, j.epoch),      # fine
            Started("a", 2.0, 2, j.epoch),      # already running
            Succeeded("a", 3.0, "r"),           # fine
            Started("a", 4.0, 2, j.epoch),      # completed
            Cancelled("nobody", 4.0),           # unknown id
        ])
        assert [r is not None for r in results] == [False, False, True, False, True, False,
                                                    False]
        rec = j.get("a")
        assert rec.state is S.COMPLETED and rec.payload == 1 and rec.result == "r"
        assert [type(ev).__name__ for _s, ev in j.log()] == ["Enqueued", "Started", "Succeeded"]
        assert rec.log == tuple(seq for seq, _ev in j.log())
        assert j.get("nobody") is None
        assert j.counts("q") == {s: (1 if s is S.COMPLETED else 0) for s in JobState}
    finally:
        j.close()


# ---------------------------------------------------------------------------------------------
# The fsync writer: commits prepared in the event loop, written by one long-lived thread


def test_the_fsync_writer_grows_the_map_and_writes_the_group_again(journal_path):
    from actorq._writer import Writer

    j = Journal(journal_path, sync=True, map_size=64 * KiB)
    committed = []

    async def main():
        writer = Writer(j, True, committed.append)
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.supervise)
            results = await writer.commit(_big_batch("big", 300))
            assert [r.id for r in results] == [f"big{i}" for i in range(300)]
            writer.close()
        assert writer.statistics().commits == 1

    try:
        run(main)
        assert j.env.info()["map_size"] > 64 * KiB
        assert j.counts("q")[S.PENDING] == 300
        assert [seq for seq, _ in j.log()] == list(range(1, 301))
        assert len(committed) == 1
    finally:
        j.close()


def test_a_prepared_commit_changes_nothing_until_written_and_finished(journal_path):
    j = Journal(journal_path, sync=False)
    try:
        _prepared_commit_checks(j)
    finally:
        j.close()


def _prepared_commit_checks(j: Journal) -> None:
    j.commit([Enqueued(record("a", payload={"n": 1}))])
    plan = j.prepare([Started("a", 2.0, 1, j.epoch), Enqueued(record("b"))])
    # dropped: nothing was written, and the in-memory state did not move
    assert j.get("a").state is S.PENDING and j.get("b") is None
    assert j.counts("q")[S.PENDING] == 1 and j.counts("q")[S.RUNNING] == 0
    started, enq = j.commit([Started("a", 2.0, 1, j.epoch), Enqueued(record("b"))])
    assert started.state is S.RUNNING and enq.seq == started.log[-1] + 1
    assert j.counts("q")[S.PENDING] == 1 and j.counts("q")[S.RUNNING] == 1
    # a plan written and finished returns what commit() would have
    plan = j.prepare([Succeeded("a", 3.0, "r")])
    j.write(plan)
    (done,) = j.finish(plan)
    assert done.state is S.COMPLETED and j.get("a").result == "r"
    assert j.counts("q")[S.COMPLETED] == 1 and j.counts("q")[S.RUNNING] == 0


def test_open_runtime_leaves_no_writer_thread_running(journal_path):
    import threading

    async def main():
        async with actorq.open_runtime(journal_path) as rt:
            q = await rt.spawn_queue("q", lambda job: None)
            await q.wait(await q.enqueue(1))
            assert any(t.name == "actorq journal writer" for t in threading.enumerate())

    run(main)
    assert not any(t.name == "actorq journal writer" for t in threading.enumerate())


def test_a_writer_that_escalates_leaves_no_thread_running(journal_path):
    """A writer crashing more often than its restart intensity allows (here: a bug in its
    commit callback) escalates out of open_runtime; its thread stops with it."""
    import threading

    def broken(records):
        raise RuntimeError("bug in on_commit")

    async def main():
        async with actorq.open_runtime(journal_path) as rt:
            q = await rt.spawn_queue("q", lambda job: None)
            await q.wait(await q.enqueue(1))
            rt.writer.on_commit = broken
            for i in range(10):
                with contextlib.suppress(Exception):
                    await q.enqueue(i)
            await trio.sleep(10)

    with pytest.raises(BaseException) as info:  # noqa: B017 - checked below
        run(main)
    assert find_supervisor_error(info.value) is not None
    assert not any(t.name == "actorq journal writer" for t in threading.enumerate())


@pytest.mark.parametrize("durability", ["os", "fsync"])
def test_a_shielded_commit_returns_its_records_to_a_cancelled_caller(journal_path, durability):
    async def main():
        async with actorq.open_runtime(journal_path, durability=durability) as rt:
            got = []
            with trio.CancelScope() as scope:
                scope.cancel()
                got.append(await rt.writer.commit([Enqueued(record("s1"))], shield=True))
                await trio.lowlevel.checkpoint()  # the cancel lands here
                got.append("not reached")
            assert scope.cancelled_caught
            assert len(got) == 1 and got[0][0].id == "s1"
            with trio.CancelScope() as scope:
                scope.cancel()
                await rt.writer.commit([Enqueued(record("s2"))])
            assert scope.cancelled_caught
            await rt.writer.commit([Enqueued(record("s3"))])  # written after s2's
            assert rt.journal.get("s1") is not None and rt.journal.get("s3") is not None
            # a cancelled fsync commit goes on regardless ("os": checked before it starts)
            assert (rt.journal.get("s2") is None) == (durability == "os")

    run(main)


def test_finished_since_reads_back_one_queues_recent_finishes(journal_path):
    j = Journal(journal_path, sync=False)
    try:
        jobs = [("a", "q", 10.0), ("b", "q2", 11.0), ("c", "q", 12.0), ("d", "q", 13.0),
                ("e", "r", 14.0)]
        j.commit([Enqueued(record(job_id, queue)) for job_id, queue, _at in jobs])
        for job_id, _queue, at in jobs:
            j.commit([Started(job_id, at, 1, j.epoch)])
            j.commit([Succeeded(job_id, at, None)])
        assert [r.id for r in j.finished_since("q", 12.0)] == ["d", "c"]
        assert [r.id for r in j.finished_since("q", 0.0)] == ["d", "c", "a"]
        assert [r.id for r in j.finished_since("q2", 0.0)] == ["b"]
        assert [r.id for r in j.finished_since("r", 0.0)] == ["e"]  # the last queue of all
        assert j.finished_since("p", 0.0) == [] and j.finished_since("q", 20.0) == []
    finally:
        j.close()

