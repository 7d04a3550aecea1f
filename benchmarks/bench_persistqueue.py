"""persist-queue peer: SQLiteAckQueue (multithreading=True, auto_commit=True), PRAGMA
synchronous=FULL forced on both of its connections; consumer threads get() -> handler -> ack()."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from _threads import Counter, StartSignal, timed_w1, timed_w2
from _util import file_size, now, proc_status, rmtree, work_dir

DURABILITY = "SQLiteAckQueue, WAL + PRAGMA synchronous=FULL (forced), commit per put/get/ack"


def _open(path: Path, *, auto_resume: bool = True) -> Any:
    from persistqueue import SQLiteAckQueue

    q = SQLiteAckQueue(str(path), multithreading=True, auto_resume=auto_resume)
    for conn in {id(q._putter): q._putter, id(q._getter): q._getter}.values():
        conn.execute("PRAGMA synchronous=FULL")
    return q


class _Consumers:
    def __init__(self, q: Any, threads: int, counter: Counter,
                 on_start: StartSignal | None = None) -> None:
        self.q, self.n, self.counter, self.on_start = q, threads, counter, on_start
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def _run(self) -> None:
        from persistqueue import Empty

        q = self.q
        while not self.stop.is_set():
            try:
                item = q.get(block=True, timeout=0.05, raw=True)
            except Empty:
                continue
            if self.on_start is not None:
                self.on_start.hit()
            q.ack(id=item["pqid"])
            self.counter.add()

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
    if variant == "batch":
        return {"skipped": "persist-queue's SQLiteAckQueue has no batch put"}
    out: dict[str, Any] = {}
    path = work_dir("pq-w1e")
    try:
        q = _open(path)
        r = timed_w1(variant, n, producers, batch, False, q.put, None, lambda: None, Counter())
        out["enqueue_s"], out["enqueue_rate"] = r["enqueue_s"], r["enqueue_rate"]
        q.close()
    finally:
        rmtree(path)
    path = work_dir("pq-w1")
    consumers = None
    try:
        q = _open(path)
        counter = Counter()
        consumers = _Consumers(q, concurrency, counter)
        r = timed_w1(variant, n, producers, batch, True, q.put, None, consumers.start, counter)
        out.update(n=n, e2e_s=r["e2e_s"], e2e_rate=r["e2e_rate"],
                   enqueue_under_load_rate=r["enqueue_rate"])
    finally:
        if consumers is not None:
            consumers.close()
        rmtree(path)
    return out


def w2(*, n: int, warmup: int = 20, concurrency: int = 1) -> dict[str, Any]:
    path = work_dir("pq-w2")
    signal = StartSignal()
    consumers = None
    try:
        q = _open(path)
        counter = Counter()
        consumers = _Consumers(q, concurrency, counter, signal)
        consumers.start()
        return timed_w2(n, warmup, q.put, signal, counter)
    finally:
        if consumers is not None:
            consumers.close()
        rmtree(path)


def w3_build(*, path: str, n: int, chunk: int = 10_000) -> dict[str, Any]:
    """``n`` pending items via put(), synchronous=OFF for the build (only recovery is timed)."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    q = _open(p)
    q._putter.execute("PRAGMA synchronous=OFF")
    t0 = now()
    for i in range(n):
        q.put(i)
    build_s = now() - t0
    q.close()
    size = file_size(p / "data.db") + file_size(p / "data.db-wal")
    return {"n": n, "build_s": build_s, "db_bytes": size, "bytes_per_job": size / n}


def w3_open(*, path: str, concurrency: int = 1) -> dict[str, Any]:
    """Fresh process: open the queue (auto_resume: it counts and resumes unacked items) ->
    "all ready"; a consumer thread -> first item started."""
    signal = StartSignal()
    import persistqueue  # noqa: F401  (imports are not part of recovery)
    rss0 = proc_status()
    t0 = now()
    q = _open(Path(path))
    t_ready = now()
    consumers = _Consumers(q, concurrency, Counter(), signal)
    consumers.start()
    try:
        signal.event.wait(60)
        return {"ready_s": t_ready - t0, "first_start_s": signal.at - t0,
                "rss_before_open": rss0, "rss_after": proc_status()}
    finally:
        consumers.close()
