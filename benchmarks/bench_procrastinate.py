"""procrastinate peer: PsycopgConnector on a local PostgreSQL (fsync=on, synchronous_commit=on),
an in-process async worker (LISTEN/NOTIFY on), jobs kept after completion (status 'succeeded').

``url`` is the server's maintenance URL (``postgresql://postgres@127.0.0.1:PORT/postgres``);
every case works in a database of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from _aio import StartSignal, poll_until, timed_w1, timed_w2
from _util import now, proc_status

DURABILITY = "PostgreSQL 15, fsync=on, synchronous_commit=on (defaults); worker LISTEN/NOTIFY"
POOL = {"min_size": 10, "max_size": 20}


def _db_url(url: str, db: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + db


def _create_db(url: str, db: str | None = None) -> str:
    import psycopg

    db = db or "b_" + uuid.uuid4().hex[:12]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db}"')
    return db


def _drop_db(url: str, db: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _app(url: str, on_start: StartSignal | None = None) -> tuple[Any, Any]:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url, **POOL))

    @app.task(name="noop", queue="bench")
    async def noop(i: int) -> None:
        if on_start is not None:
            on_start.hit()

    return app, noop


async def _count_succeeded(app: Any) -> int:
    row = await app.connector.execute_query_one_async(
        "SELECT count(*) AS c FROM procrastinate_jobs WHERE status = 'succeeded'")
    return row["c"]


def _worker(app: Any, concurrency: int) -> asyncio.Task[None]:
    return asyncio.create_task(app.run_worker_async(
        queues=["bench"], concurrency=concurrency, wait=True, install_signal_handlers=False,
        listen_notify=True, fetch_job_polling_interval=1.0))


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass


def w1(*, url: str, variant: str, n: int, producers: int = 100, concurrency: int = 100,
       batch: int = 1000) -> dict[str, Any]:
    out: dict[str, Any] = {}

    async def run(consume: bool) -> dict[str, Any]:
        db = _create_db(url)
        try:
            app, noop = _app(_db_url(url, db))
            async with app.open_async():
                await app.schema_manager.apply_schema_async()
                worker = _worker(app, concurrency) if consume else None
                try:
                    async def enqueue(i: int) -> Any:
                        return await noop.defer_async(i=i)

                    async def enqueue_batch(items: range) -> Any:
                        return await noop.batch_defer_async(*({"i": i} for i in items))

                    async def wait_completed(k: int) -> None:
                        async def check() -> bool:
                            return await _count_succeeded(app) >= k
                        await poll_until(check, 0.005)

                    if consume:
                        await asyncio.sleep(0.2)  # let the worker connect and LISTEN
                    return await timed_w1(variant, n, producers, batch, enqueue, enqueue_batch,
                                          wait_completed if consume else None)
                finally:
                    await _stop(worker)
        finally:
            _drop_db(url, db)

    r = asyncio.run(run(False))
    out["enqueue_s"], out["enqueue_rate"] = r["enqueue_s"], r["enqueue_rate"]
    r = asyncio.run(run(True))
    out.update(n=n, e2e_s=r["e2e_s"], e2e_rate=r["e2e_rate"],
               enqueue_under_load_rate=r["enqueue_rate"])
    return out


def w2(*, url: str, n: int, warmup: int = 20, concurrency: int = 1) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        db = _create_db(url)
        try:
            signal = StartSignal()
            app, noop = _app(_db_url(url, db), signal)
            async with app.open_async():
                await app.schema_manager.apply_schema_async()
                worker = _worker(app, concurrency)
                await asyncio.sleep(0.3)
                try:
                    async def wait_done(job_id: int) -> None:
                        async def check() -> bool:
                            row = await app.connector.execute_query_one_async(
                                "SELECT status FROM procrastinate_jobs WHERE id = %(id)s",
                                id=job_id)
                            return row["status"] == "succeeded"
                        await poll_until(check, 0.0005)

                    async def enqueue(i: int) -> Any:
                        return await noop.defer_async(i=i)

                    return await timed_w2(n, warmup, enqueue, signal, wait_done)
                finally:
                    await _stop(worker)
        finally:
            _drop_db(url, db)

    return asyncio.run(run())


def w3_build(*, url: str, db: str, n: int, chunk: int = 10_000) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        _create_db(url, db)
        app, noop = _app(_db_url(url, db))
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            t0 = now()
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                await noop.batch_defer_async(*({"i": i} for i in range(start, stop)))
            build_s = now() - t0
            row = await app.connector.execute_query_one_async(
                "SELECT pg_total_relation_size('procrastinate_jobs') AS s")
            size = row["s"]
        return {"n": n, "build_s": build_s, "db_bytes": size, "bytes_per_job": size / n}

    return asyncio.run(run())


def w3_open(*, url: str, db: str, concurrency: int = 1) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        signal = StartSignal()
        import procrastinate  # noqa: F401  (imports are not part of recovery)
        rss0 = proc_status()
        t0 = now()
        app, _noop = _app(_db_url(url, db), signal)
        async with app.open_async():
            t_ready = now()
            worker = _worker(app, concurrency)
            try:
                await asyncio.wait_for(signal.event.wait(), 60)
                return {"ready_s": t_ready - t0, "first_start_s": signal.at - t0,
                        "rss_before_open": rss0, "rss_after": proc_status()}
            finally:
                await _stop(worker)

    return asyncio.run(run())


def drop(*, url: str, db: str) -> dict[str, Any]:
    _drop_db(url, db)
    return {}
