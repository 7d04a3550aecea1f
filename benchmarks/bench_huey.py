"""huey peer: SqliteHuey(fsync=True) (PRAGMA synchronous=FULL, WAL), results stored (the no-op
returns True, so each completion is recorded), a real threaded consumer in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _threads import Counter, StartSignal, timed_w1, timed_w2
from _util import file_size, now, proc_status, rmtree, work_dir

DURABILITY = "SqliteStorage(fsync=True): WAL + PRAGMA synchronous=FULL; results stored"


def _setup(path: Path, *, on_start: StartSignal | None = None) -> tuple[Any, Any, Counter]:
    from huey import SqliteHuey
    from huey.signals import SIGNAL_COMPLETE

    huey = SqliteHuey("bench", filename=str(path / "huey.db"), fsync=True, results=True)
    counter = Counter()

    @huey.task()
    def noop(i: int) -> bool:
        if on_start is not None:
            on_start.hit()
        return True

    @huey.signal(SIGNAL_COMPLETE)
    def completed(signal: str, task: Any) -> None:
        counter.add()

    return huey, noop, counter


def _consumer(huey: Any, workers: int) -> Any:
    # Polling tuned for latency (1 ms first poll, backing off to 50 ms) rather than huey's
    # default (100 ms, backing off to 10 s), which would dominate every latency number.
    return huey.create_consumer(workers=workers, worker_type="thread", initial_delay=0.001,
                                backoff=1.15, max_delay=0.05, periodic=False,
                                check_worker_health=False)


def w1(*, variant: str, n: int, producers: int = 100, concurrency: int = 8,
       batch: int = 1000) -> dict[str, Any]:
    if variant == "batch":
        return {"skipped": "huey has no batch enqueue (Task.map enqueues one by one)"}
    out: dict[str, Any] = {}
    # enqueue-only: no consumer
    path = work_dir("huey-w1e")
    try:
        huey, noop, counter = _setup(path)
        r = timed_w1(variant, n, producers, batch, False, noop, None, lambda: None, counter)
        out["enqueue_s"], out["enqueue_rate"] = r["enqueue_s"], r["enqueue_rate"]
        huey.storage.close()
    finally:
        rmtree(path)
    # end to end
    path = work_dir("huey-w1")
    consumer = None
    try:
        huey, noop, counter = _setup(path)
        consumer = _consumer(huey, concurrency)
        r = timed_w1(variant, n, producers, batch, True, noop, None, consumer.start, counter)
        out.update(n=n, e2e_s=r["e2e_s"], e2e_rate=r["e2e_rate"],
                   enqueue_under_load_rate=r["enqueue_rate"])
    finally:
        if consumer is not None:
            consumer.stop(graceful=True)
        rmtree(path)
    return out


def w2(*, n: int, warmup: int = 20, concurrency: int = 1) -> dict[str, Any]:
    path = work_dir("huey-w2")
    signal = StartSignal()
    consumer = None
    try:
        huey, noop, counter = _setup(path, on_start=signal)
        consumer = _consumer(huey, concurrency)
        consumer.start()
        return timed_w2(n, warmup, noop, signal, counter)
    finally:
        if consumer is not None:
            consumer.stop(graceful=True)
        rmtree(path)


def w3_build(*, path: str, n: int, chunk: int = 10_000) -> dict[str, Any]:
    """``n`` pending tasks, inserted through huey's own enqueue in one SQLite transaction per
    chunk (built without fsync: only the recovery is measured)."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    huey, noop, _counter = _setup(p)
    storage = huey.storage
    t0 = now()
    conn = storage.conn
    for start in range(0, n, chunk):
        rows = [(storage.name, storage.to_blob(huey.serialize_task(noop.s(i))), 0)
                for i in range(start, min(n, start + chunk))]
        conn.execute("begin")
        conn.executemany("insert into task (queue, data, priority) values (?, ?, ?)", rows)
        conn.execute("commit")
    build_s = now() - t0
    storage.close()
    size = file_size(p / "huey.db") + file_size(p / "huey.db-wal")
    return {"n": n, "build_s": build_s, "db_bytes": size, "bytes_per_job": size / n}


def w3_open(*, path: str, concurrency: int = 1) -> dict[str, Any]:
    """Fresh process: SqliteHuey on the file, consumer started -> first task started. huey
    loads nothing up front ("all ready" is immediate: the consumer polls the table)."""
    signal = StartSignal()
    import huey.signals  # noqa: F401  (imports are not part of recovery)
    rss0 = proc_status()
    t0 = now()
    app, noop, _counter = _setup(Path(path), on_start=signal)
    consumer = _consumer(app, concurrency)
    consumer.start()
    t_ready = now()
    try:
        signal.event.wait(60)
        return {"ready_s": t_ready - t0, "first_start_s": signal.at - t0,
                "rss_before_open": rss0, "rss_after": proc_status()}
    finally:
        consumer.stop(graceful=False)
