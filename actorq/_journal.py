"""The journal: one LMDB environment, used synchronously (the writer actor owns the write side).

Tables (LMDB named databases):

- ``meta``: ``format`` (the format version) and ``epoch`` (the current boot epoch).
- ``log``: every transition, keyed by ``>Q`` sequence number, appended in order.
- ``jobs``: each job's current record, keyed by id.
- ``states``: an index ``state code + queue + NUL + >Q seq -> id``: recovery reads only the live
  states of a queue, ``list`` reads one state in enqueue order, never the whole history.
- ``counts``: ``queue + NUL + state code -> >Q`` count, so ``stats`` is O(1).
- ``done``: ``queue + NUL + >Q finish seq -> >d finished_at + id``: finished jobs in the order
  they finished, for retention.

Retention deletes a finished job's record, its index entries and its log entries, so the file
stays bounded under steady load.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import lmdb

from ._codec import decode_event, decode_record, encode_event, encode_record
from ._errors import JournalError, JournalLocked
from ._model import (
    LIVE_STATES,
    TERMINAL_STATES,
    Enqueued,
    Event,
    Interrupted,
    JobRecord,
    JobState,
    Requeued,
    Retention,
    apply_event,
)

FORMAT_VERSION = 1
MiB = 1 << 20

_Q = struct.Struct(">Q")
_D = struct.Struct(">d")
CODES: dict[JobState, bytes] = {
    JobState.PENDING: b"p",
    JobState.DELAYED: b"d",
    JobState.RUNNING: b"r",
    JobState.COMPLETED: b"c",
    JobState.FAILED: b"f",
    JobState.CANCELLED: b"x",
}
_DBS = (b"meta", b"log", b"jobs", b"states", b"counts", b"done")


class MapFull(Exception):
    """The write did not fit in the map: grow it (with no transaction open) and write again."""


def _event_id(ev: Event) -> str:
    return ev.record.id if isinstance(ev, Enqueued) else ev.id


def _qkey(queue: str) -> bytes:
    return queue.encode() + b"\x00"


def _state_key(rec: JobRecord) -> bytes:
    return CODES[rec.state] + _qkey(rec.queue) + _Q.pack(rec.seq)


class Journal:
    """Synchronous access to one actorq journal directory. Not thread-safe for writes: one
    writer at a time (the writer actor), any thread for reads."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sync: bool = True,
        map_size: int = 64 * MiB,
        max_map_size: int = 1 << 40,
    ) -> None:
        self.path = Path(path)
        self.max_map_size = max_map_size
        if self.path.exists() and not self.path.is_dir():
            raise JournalError(f"{self.path} is not a directory (a journal path is a directory)")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._lock()
        try:
            self.env = self._open_env(sync, map_size)
            try:
                self._init_meta()
            except BaseException:
                self.env.close()
                raise
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._next_seq = self._last_seq() + 1
        self.closed = False
        # Fault injection (actorq.testing): called inside every write transaction, after its
        # writes and before it commits; an exception aborts the transaction.
        self.before_commit: Callable[[], None] | None = None

    # ---- opening

    def _lock(self) -> int:
        fd = os.open(self.path / "actorq.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalLocked(
                f"journal {str(self.path)!r} is open in another runtime (this process or another)"
            ) from None
        return fd

    def _open_env(self, sync: bool, map_size: int) -> lmdb.Environment:
        data = self.path / "data.mdb"
        if data.exists() and data.stat().st_size > 0:
            with open(data, "rb") as f:
                head = f.read(4096 * 2)
            # An LMDB file starts with two meta pages whose magic is 0xBEEFC0DE.
            if len(head) < 32 or struct.pack("<I", 0xBEEFC0DE) not in head[:64]:
                raise JournalError(
                    f"{str(data)!r} is not an actorq journal: it is not an LMDB file "
                    f"(starts with {head[:16]!r}); it was left untouched"
                )
        if data.exists():  # room to grow from the start: LMDB maps an existing file tightly
            map_size = max(map_size, 2 * data.stat().st_size)
        try:
            return lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=len(_DBS) + 2,
                sync=sync,
                metasync=sync,
                readahead=False,
                max_readers=256,
            )
        except lmdb.Error as exc:
            raise JournalError(
                f"{str(data)!r} is not a usable actorq journal ({exc}); it was left untouched"
            ) from exc

    def _init_meta(self) -> None:
        env = self.env
        with env.begin() as txn:
            names = [key for key, _ in txn.cursor()]
        if names:
            if b"meta" not in names:
                raise JournalError(
                    f"{str(self.path)!r} holds an LMDB environment that is not an actorq "
                    f"journal (databases: {sorted(n.decode(errors='replace') for n in names)}); "
                    f"it was left untouched"
                )
            try:
                self.dbs = {name.decode(): env.open_db(name, create=False) for name in _DBS
                            if name in names}
            except lmdb.Error as exc:
                raise JournalError(
                    f"{str(self.path)!r} holds an LMDB environment that is not an actorq "
                    f"journal ({exc}); it was left untouched"
                ) from exc
            with env.begin(db=self.dbs["meta"]) as txn:
                raw = txn.get(b"format")
            version = None if raw is None else _Q.unpack(raw)[0]
            if version != FORMAT_VERSION:
                found = "no format version" if version is None else f"format version {version}"
                raise JournalError(
                    f"{str(self.path)!r} has {found}; this actorq reads format version "
                    f"{FORMAT_VERSION} (a newer actorq wrote it?); it was left untouched"
                )
        while True:
            try:
                with env.begin(write=True) as txn:
                    self.dbs = {name.decode(): env.open_db(name, txn=txn) for name in _DBS}
                    meta = self.dbs["meta"]
                    if txn.get(b"format", db=meta) is None:
                        txn.put(b"format", _Q.pack(FORMAT_VERSION), db=meta)
                    raw = txn.get(b"epoch", db=meta)
                    self.epoch = (0 if raw is None else _Q.unpack(raw)[0]) + 1
                    txn.put(b"epoch", _Q.pack(self.epoch), db=meta)
                return
            except lmdb.MapFullError:
                self.grow()

    def _last_seq(self) -> int:
        with self.env.begin(db=self.dbs["log"]) as txn:
            cur = txn.cursor()
            return _Q.unpack(cur.key())[0] if cur.last() else 0

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.env.close()
            os.close(self._lock_fd)

    # ---- writing

    def commit(
        self,
        events: Iterable[Event],
        *,
        retention: Mapping[str, Retention] | None = None,
        now: float | None = None,
    ) -> list[JobRecord | None]:
        """Apply ``events`` in one write transaction; the new record of each (None: refused).

        ``retention`` (queue -> policy, with ``now``) also trims those queues' finished jobs in
        the same transaction. Raises :class:`MapFull` where the map must grow first.
        """
        events = list(events)
        results: list[JobRecord | None] = []
        dbs = self.dbs
        seq = self._next_seq
        try:
            with self.env.begin(write=True) as txn:
                before: dict[str, JobRecord | None] = {}
                after: dict[str, JobRecord] = {}
                for ev in events:
                    job_id = _event_id(ev)
                    if job_id in after:
                        old = after[job_id]
                    else:
                        old = self._get(txn, job_id)
                        before[job_id] = old
                    new = apply_event(old, ev, seq)
                    results.append(new)
                    if new is None:
                        continue
                    txn.put(_Q.pack(seq), encode_event(ev), db=dbs["log"], append=True)
                    seq += 1
                    after[job_id] = new
                for job_id, new in after.items():
                    txn.put(job_id.encode(), encode_record(new), db=dbs["jobs"])
                    self._reindex(txn, before[job_id], new)
                if retention:
                    assert now is not None, "retention needs now"
                    for queue, policy in retention.items():
                        self._trim(txn, queue, policy, now)
                if self.before_commit is not None:
                    self.before_commit()
        except lmdb.MapFullError:
            raise MapFull() from None
        self._next_seq = seq
        return results

    def grow(self) -> None:
        """Double the map size (no transaction may be open in this process)."""
        size = self.env.info()["map_size"]
        if size >= self.max_map_size:
            raise JournalError(
                f"journal {str(self.path)!r} is full: its map reached max_map_size "
                f"({self.max_map_size} bytes)"
            )
        self.env.set_mapsize(min(size * 2, self.max_map_size))

    def commit_growing(self, events: Iterable[Event], **kwargs: object) -> list[JobRecord | None]:
        """:meth:`commit`, growing the map as often as needed (from a thread with no open txn)."""
        events = list(events)
        while True:
            try:
                return self.commit(events, **kwargs)  # type: ignore[arg-type]
            except MapFull:
                self.grow()

    def _reindex(self, txn: lmdb.Transaction, old: JobRecord | None, new: JobRecord) -> None:
        dbs = self.dbs
        if old is not None and old.state is new.state:
            return
        if old is not None:
            txn.delete(_state_key(old), db=dbs["states"])
            self._count(txn, old.queue, old.state, -1)
        txn.put(_state_key(new), new.id.encode(), db=dbs["states"])
        self._count(txn, new.queue, new.state, +1)
        if new.state.terminal:
            key = _qkey(new.queue) + _Q.pack(new.log[-1])
            txn.put(key, _D.pack(new.finished_at or 0.0) + new.id.encode(), db=dbs["done"])

    def _count(self, txn: lmdb.Transaction, queue: str, state: JobState, delta: int) -> None:
        key = _qkey(queue) + CODES[state]
        raw = txn.get(key, db=self.dbs["counts"])
        value = (0 if raw is None else _Q.unpack(raw)[0]) + delta
        txn.put(key, _Q.pack(value), db=self.dbs["counts"])

    def _trim(self, txn: lmdb.Transaction, queue: str, policy: Retention, now: float) -> int:
        """Remove ``queue``'s finished jobs beyond ``policy``; how many were removed."""
        finished = sum(self._counts(txn, queue)[s] for s in TERMINAL_STATES)
        excess = max(finished - policy.max_count, 0)
        cutoff = now - policy.max_age
        prefix = _qkey(queue)
        removed = 0
        cur = txn.cursor(db=self.dbs["done"])
        if not cur.set_range(prefix):
            return 0
        while cur.key().startswith(prefix):
            value = cur.value()
            finished_at = _D.unpack_from(value)[0]
            if removed >= excess and finished_at >= cutoff:
                break
            self._remove(txn, value[_D.size:].decode())
            removed += 1
            if not cur.delete():
                break
        return removed

    def _remove(self, txn: lmdb.Transaction, job_id: str) -> None:
        rec = self._get(txn, job_id)
        if rec is None:
            return
        txn.delete(job_id.encode(), db=self.dbs["jobs"])
        txn.delete(_state_key(rec), db=self.dbs["states"])
        self._count(txn, rec.queue, rec.state, -1)
        for seq in rec.log:
            txn.delete(_Q.pack(seq), db=self.dbs["log"])

    # ---- reading (any thread; each call is one short read transaction)

    def _get(self, txn: lmdb.Transaction, job_id: str) -> JobRecord | None:
        raw = txn.get(job_id.encode(), db=self.dbs["jobs"])
        return None if raw is None else decode_record(raw)

    def get(self, job_id: str) -> JobRecord | None:
        with self.env.begin() as txn:
            return self._get(txn, job_id)

    def _state_ids(self, txn: lmdb.Transaction, state: JobState, queue: str | None
                   ) -> Iterator[tuple[bytes, bytes]]:
        prefix = CODES[state] + (b"" if queue is None else _qkey(queue))
        cur = txn.cursor(db=self.dbs["states"])
        if not cur.set_range(prefix):
            return
        for key, value in cur:
            if not key.startswith(prefix):
                return
            yield key[-8:], value

    def live(self, queue: str) -> list[JobRecord]:
        """Every pending, delayed or running job of ``queue``, in enqueue order."""
        with self.env.begin() as txn:
            ids = heapq.merge(*(self._state_ids(txn, s, queue) for s in LIVE_STATES))
            return [r for _seq, job_id in ids if (r := self._get(txn, job_id.decode()))]

    def running(self, *, before_epoch: int | None = None) -> list[JobRecord]:
        """Running jobs of every queue (started in an epoch before ``before_epoch``, if given)."""
        with self.env.begin() as txn:
            recs = [self._get(txn, job_id.decode())
                    for _seq, job_id in self._state_ids(txn, JobState.RUNNING, None)]
        return [r for r in recs if r and (before_epoch is None or r.epoch < before_epoch)]

    def list(self, queue: str, state: JobState | None = None, limit: int = 100
             ) -> list[JobRecord]:
        """The oldest ``limit`` jobs of ``queue`` (of one state, if given), oldest first."""
        states = JobState if state is None else (state,)
        out = []
        with self.env.begin() as txn:
            ids = heapq.merge(*(self._state_ids(txn, s, queue) for s in states))
            for _seq, job_id in ids:
                if len(out) >= limit:
                    break
                rec = self._get(txn, job_id.decode())
                if rec is not None:
                    out.append(rec)
        return out

    def _counts(self, txn: lmdb.Transaction, queue: str) -> dict[JobState, int]:
        out = {}
        for state, code in CODES.items():
            raw = txn.get(_qkey(queue) + code, db=self.dbs["counts"])
            out[state] = 0 if raw is None else _Q.unpack(raw)[0]
        return out

    def counts(self, queue: str) -> dict[JobState, int]:
        with self.env.begin() as txn:
            return self._counts(txn, queue)

    def log(self, start: int = 0) -> list[tuple[int, Event]]:
        """The log entries still held, from sequence number ``start`` (for tests and tools)."""
        with self.env.begin(db=self.dbs["log"]) as txn:
            cur = txn.cursor()
            if not cur.set_range(_Q.pack(start)):
                return []
            return [(_Q.unpack(k)[0], decode_event(v)) for k, v in cur]

    # ---- boot epochs

    def interrupt_stale(self, now: float) -> list[JobRecord]:
        """At open: record every job running under an older boot epoch as interrupted."""
        events = [
            Interrupted(rec.id, now, f"JobInterrupted: attempt {rec.attempts} was interrupted "
                                     f"(the runtime stopped while it ran, boot epoch {rec.epoch})")
            for rec in self.running(before_epoch=self.epoch)
        ]
        return [r for r in self.commit_growing(events) if r is not None]

    def requeue_running(self, now: float) -> list[JobRecord]:
        """At a clean stop: jobs running in this epoch go back to pending, attempt uncounted."""
        events = [Requeued(rec.id, now) for rec in self.running() if rec.epoch == self.epoch]
        return [r for r in self.commit_growing(events) if r is not None]
