"""litequeue peer: LiteQueue on a file, PRAGMA synchronous=FULL forced (litequeue sets NORMAL),
one connection per thread; consumer threads pop() -> handler -> done(), polling every 1 ms when
the queue is empty (litequeue has no blocking get)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from _threads import Counter, StartSignal, timed_w1, timed_w2
from _util import file_size, now, proc_status, rmtree, work_dir

DURABILITY = "WAL + PRAGMA synchronous=FULL (forced over litequeue's NORMAL), commit per call"
POLL_S = 0.001


def _open(db: Path) -> Any:
    from litequeue import LiteQueue

    q = LiteQueue(str(db), timeout=60)
    q.conn.execute("PRAGMA synchronous=FULL")
    return q


class _PerThread(threading.local):
    q: Any = None


def _putters(db: Path) -> tuple[Any, Any]:
    local = _PerThread()

    def conn() -> Any:
        if local.q is None:
            local.q = _open(db)
        return local.q

    def put(i: int) -> None:
        conn().put(str(i))

    def put_batch(items: range) -> None:
        q = conn()
        with q.transaction(mode="IMMEDIATE"):
            for i in items:
                q.put(str(i))

    return put, put_batch


class _Consumers:
    def __init__(self, db: Path, threads: int, counter: Counter,
                 on_start: StartSignal | None = None) -> None:
        self.db, self.n, self.counter, self.on_start = db, threads, counter, on_start
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def _run(self) -> None:
        q = _open(self.db)
        try:
            while not self.stop.is_set():
                msg = q.pop()
                if msg is None:
                    time.sleep(POLL_S)
                    continue
                if self.on_start is not None:
                    self.on_start.hit()
                q.done(msg.message_id)
                self.counter.add()
        finally:
            q.conn.close()

    def start(self) -> None:
        for _ in range(self.n):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self.threads.append(t)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def w1(*, variant: str, n: int, producers: int = 100, concurrency: int = 32,
       batch: int = 1000) -> dict[str, Any]:
    out: dict[str, Any] = {}
    path = work_dir("lq-w1e")
    try:
        db = path / "q.sqlite3"
        _open(db).conn.close()
        put, put_batch = _putters(db)
        r = timed_w1(variant, n, producers, batch, False, put, put_batch, lambda: None, Counter())
        out["enqueue_s"], out["enqueue_rate"] = r["enqueue_s"], r["enqueue_rate"]
    finally:
        rmtree(path)
    path = work_dir("lq-w1")
    consumers = None
    try:
        db = path / "q.sqlite3"
        _open(db).conn.close()
        put, put_batch = _putters(db)
        counter = Counter()
        consumers = _Consumers(db, concurrency, counter)
        r = timed_w1(variant, n, producers, batch, True, put, put_batch, consumers.start,
                     counter)
        out.update(n=n, e2e_s=r["e2e_s"], e2e_rate=r["e2e_rate"],
                   enqueue_under_load_rate=r["enqueue_rate"])
    finally:
        if consumers is not None:
            consumers.close()
        rmtree(path)
    return out


def w2(*, n: int, warmup: int = 20, concurrency: int = 1) -> dict[str, Any]:
    path = work_dir("lq-w2")
    signal = StartSignal()
    consumers = None
    try:
        db = path / "q.sqlite3"
        q = _open(db)
        counter = Counter()
        consumers = _Consumers(db, concurrency, counter, signal)
        consumers.start()
        return timed_w2(n, warmup, lambda i: q.put(str(i)), signal, counter)
    finally:
        if consumers is not None:
            consumers.close()
        rmtree(path)


def w3_build(*, path: str, n: int, chunk: int = 10_000) -> dict[str, Any]:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    db = p / "q.sqlite3"
    q = _open(db)
    t0 = now()
    for start in range(0, n, chunk):
        with q.transaction(mode="IMMEDIATE"):
            for i in range(start, min(n, start + chunk)):
                q.put(str(i))
    build_s = now() - t0
    q.conn.close()
    size = file_size(db) + file_size(str(db) + "-wal")
    return {"n": n, "build_s": build_s, "db_bytes": size, "bytes_per_job": size / n}


def w3_open(*, path: str, concurrency: int = 1) -> dict[str, Any]:
    signal = StartSignal()
    import litequeue  # noqa: F401  (imports are not part of recovery)
    rss0 = proc_status()
    db = Path(path) / "q.sqlite3"
    t0 = now()
    _open(db).conn.close()
    t_ready = now()
    consumers = _Consumers(db, concurrency, Counter(), signal)
    consumers.start()
    try:
        signal.event.wait(60)
        return {"ready_s": t_ready - t0, "first_start_s": signal.at - t0,
                "rss_before_open": rss0, "rss_after": proc_status()}
    finally:
        consumers.close()
