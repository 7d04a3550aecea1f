"""The journal: one LMDB environment, used synchronously (the writer actor owns the write side).

Tables (LMDB named databases):

- ``meta``: ``format`` (the format version) and ``epoch`` (the current boot epoch).
- ``log``: every transition, keyed by ``>Q`` sequence number, appended in order.
- ``jobs``: each job's current record, keyed by id.
- ``states``: an index ``state code + queue + NUL + >Q seq``: recovery reads only the live
  states of a queue, ``list`` reads one state in enqueue order, never the whole history. A live
  job's entry holds its id and scheduling fields (``_codec.encode_live``), so ``live_entries``
  rebuilds a queue from this index alone; a finished job's entry holds its id.
- ``counts``: ``queue + NUL + state code -> >Q`` count, so ``stats`` is O(1).
- ``done``: ``queue + NUL + >Q finish seq -> >d finished_at + [id, seq, state, log]``: finished
  jobs in the order they finished, for retention, with what removing them takes.
- ``ready``: the pending jobs of each queue in the order they start: ``queue + NUL + kind +
  priority + ready_at + seq`` (each packed to sort as its number does; ``kind`` puts interrupted
  jobs first) -> the same live entry as ``states``. A queue reads its backlog from here a window
  at a time (``ready_entries``), so opening a journal with a million pending jobs reads a few
  thousand of them.
- ``sched``: the delayed jobs of each queue by due time: ``queue + NUL + due (ready_at) + seq``
  -> the live entry; read a window at a time too (``delayed_entries``).

Retention deletes a finished job's record, its index entries and its log entries, so the file
stays bounded under steady load.

The write path keeps, in memory, the records of live jobs it committed (read from LMDB on a miss,
then kept with their encoded payloads), so a transition neither reads nor decodes the record it
changes; and the counts it wrote. Both follow a commit only once it succeeded (a failed or aborted
one leaves them as they were); a job leaves the cache when it finishes, and the cache is bounded
(``Journal.cache_max``, ``Journal.cache_max_bytes``). Readers (``get``, ``live``, ``list``, ...)
always read LMDB.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

import lmdb

from ._codec import (
    STATE_INDEX,
    STATES,
    Encoder,
    decode_event,
    decode_live,
    decode_record,
    decode_value,
    encode_value,
    live_id,
)
from ._errors import JournalError, JournalLocked
from ._model import (
    _FOLDS,
    LIVE_STATES,
    TERMINAL_STATES,
    Enqueued,
    Event,
    Interrupted,
    JobRecord,
    JobState,
    LiveEntry,
    Requeued,
    Retention,
    Succeeded,
    apply_event,
    enqueued_record,
)

FORMAT_VERSION = 3
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
_DBS = (b"meta", b"log", b"jobs", b"states", b"counts", b"done", b"ready", b"sched")
_INTERRUPTED, _WAITING = b"\x00", b"\x01"  # the kinds of ready index entries, in start order
_BIAS = 1 << 63
_ALL = (1 << 64) - 1
_TERMINAL = frozenset(TERMINAL_STATES)
# Payload and result values that cannot be changed in place: a record holding only these may be
# shared between the cache and the caller.
_IMMUTABLE = frozenset({type(None), str, int, float, bool})

# A job as a commit sees it: its record, and its payload encoded (None: not yet encoded; the
# cache holds only entries with their payload encoded).
_Entry = tuple[JobRecord, "bytes | None"]


class _QueueKeys:
    """A queue's key prefixes, built once (the write path would concatenate them per job):
    ``qkey``, its ``states`` index prefix and its ``counts`` key for each state."""

    __slots__ = ("qkey", "states", "counts")

    def __init__(self, qkey: bytes) -> None:
        self.qkey = qkey
        self.states = {state: code + qkey for state, code in CODES.items()}
        self.counts = {state: qkey + code for state, code in CODES.items()}


class MapFull(Exception):
    """The write did not fit in the map: grow it (with no transaction open) and write again."""


def _entry_seq(entry: LiveEntry) -> int:
    return entry.seq


def _prefixed(cur: lmdb.Cursor, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The items from ``cur`` (at its first key) on, while keys begin with ``prefix``."""
    for item in cur:
        if not item[0].startswith(prefix):
            return
        yield item


def _from(cur: lmdb.Cursor, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every item of ``cur``'s database whose key begins with ``prefix``, in key order."""
    return _prefixed(cur, prefix) if cur.set_range(prefix) else iter(())


def _index_run(cur: lmdb.Cursor, prefix: bytes, state: JobState) -> Iterator[LiveEntry]:
    """The live entries of an index run (keys ending in the job's ``>Q`` seq) from ``cur``
    (at its first key) on, while keys begin with ``prefix``."""
    unpack = _Q.unpack_from
    for key, value in _prefixed(cur, prefix):
        yield decode_live(value, unpack(key, len(key) - 8)[0], state)


def _qkey(queue: str) -> bytes:
    return queue.encode() + b"\x00"


def _float_order(x: float) -> int:
    """``x``'s IEEE 754 bits, sign-fixed so that, packed big-endian, they sort as ``x`` does."""
    bits = int.from_bytes(_D.pack(x), "big")
    return bits ^ _ALL if bits & _BIAS else bits | _BIAS


_RANK = struct.Struct(">QQQ")
_DUE = struct.Struct(">QQ")


def rank_key(qkey: bytes, priority: int, ready_at: float, seq: int,
             interrupted: bool = False) -> bytes:
    """A ready index key: its bytes sort as ``(interrupted first, priority, ready_at, seq)``."""
    return (qkey + (_INTERRUPTED if interrupted else _WAITING)
            + _RANK.pack(priority + _BIAS, _float_order(ready_at), seq))


def due_key(qkey: bytes, due: float, seq: int) -> bytes:
    """A ``sched`` index key: its bytes sort as ``(due, seq)``."""
    return qkey + _DUE.pack(_float_order(due), seq)


_set_field = object.__setattr__
_PENDING, _DELAYED = JobState.PENDING, JobState.DELAYED
_UNSEEN = object()  # a job that a commit did not look up yet


def _own_values(new: JobRecord, payload: bytes, ev: Event) -> None:
    """Give ``new``, just built by ``apply_event`` and not yet seen by anyone, a payload (and a
    result) of its own where they are mutable: as when every transition decoded its record, what
    :meth:`Journal.commit` returns never shares a mutable payload with an earlier result (whose
    holder may have changed it) nor with the cache. ``payload`` is the encoded payload.
    A Succeeded record keeps the event's result object, as it always did."""
    if type(new.payload) not in _IMMUTABLE:
        _set_field(new, "payload", decode_value(payload))
    if type(new.result) not in _IMMUTABLE and type(ev) is not Succeeded:
        _set_field(new, "result", decode_value(encode_value(new.result)))


class _Ops:
    """Stands in for the write transaction while a commit is prepared: records the puts and
    deletes of each database, in order (to replay in the real one: see :meth:`Journal.write`),
    and reads from a short read transaction, opened at the first read and closed by
    :meth:`close`. ``states``, ``ready``, ``sched`` and ``done`` are the runs of those index
    databases, appended to directly by :meth:`Journal._reindex`."""

    __slots__ = ("env", "runs", "states", "ready", "sched", "done", "_jobs_db", "_txn", "_jobs")

    def __init__(self, env: lmdb.Environment, dbs: dict[str, Any]) -> None:
        self.env = env
        # db -> its operations in order: (key, value), value None for a delete
        self.states: list[tuple[bytes, bytes | None]] = []
        self.ready: list[tuple[bytes, bytes | None]] = []
        self.sched: list[tuple[bytes, bytes | None]] = []
        self.done: list[tuple[bytes, bytes | None]] = []
        self.runs: dict[object, list[tuple[bytes, bytes | None]]] = {
            dbs["states"]: self.states, dbs["ready"]: self.ready, dbs["sched"]: self.sched,
            dbs["done"]: self.done}
        self._jobs_db = dbs["jobs"]
        self._txn: lmdb.Transaction | None = None
        self._jobs: lmdb.Cursor | None = None

    def _run(self, db: object) -> list[tuple[bytes, bytes | None]]:
        run = self.runs.get(db)
        if run is None:
            run = self.runs[db] = []
        return run

    def put(self, key: bytes, value: bytes, db: object = None) -> None:
        self._run(db).append((key, value))

    def delete(self, key: bytes, db: object = None) -> None:
        self._run(db).append((key, None))

    def get(self, key: bytes, db: object = None) -> bytes | None:
        if self._txn is None:
            self._txn = self.env.begin()
        return self._txn.get(key, db=db)  # type: ignore[no-any-return]

    def get_job(self, key: bytes) -> bytes | None:
        """``get(key, db=jobs)``, through a cursor kept open (cheaper than ``txn.get(db=)``)."""
        if self._jobs is None:
            if self._txn is None:
                self._txn = self.env.begin()
            self._jobs = self._txn.cursor(db=self._jobs_db)
        return self._jobs.get(key)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._txn is not None:
            if self._jobs is not None:
                self._jobs.close()
                self._jobs = None
            self._txn.abort()
            self._txn = None


class CommitPlan:
    """A prepared commit (:meth:`Journal.prepare`): what it writes, and what it returns."""

    __slots__ = ("first_seq", "log", "job_keys", "job_values", "ops", "counts", "retention",
                 "now", "results", "changed", "written_counts")

    def __init__(self, first_seq: int, log: list[bytes], job_keys: list[bytes],
                 job_values: list[bytes], ops: _Ops, counts: dict[bytes, int],
                 retention: dict[str, Retention], now: float | None,
                 results: list[JobRecord | None], changed: list[tuple[str, _Entry | None]]
                 ) -> None:
        self.first_seq = first_seq  # the log entries' sequence numbers follow from it
        self.log = log
        self.job_keys = job_keys
        self.job_values = job_values
        self.ops = ops
        self.counts = counts
        self.retention = retention
        self.now = now
        self.results = results
        self.changed = changed
        self.written_counts: dict[bytes, int] | None = None

    @property
    def next_seq(self) -> int:
        return self.first_seq + len(self.log)


class Journal:
    """Synchronous access to one actorq journal directory. Not thread-safe for writes: one
    writer at a time (the writer actor), any thread for reads."""

    #: The write path keeps at most this many live records in memory, holding at most
    #: ``cache_max_bytes`` of encoded payloads (a cached record holds its payload twice: as an
    #: object and encoded). Beyond either, a transition reads its record from LMDB (a miss).
    cache_max = 16_384
    cache_max_bytes = 4 * MiB

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
        self._states_db = self.dbs["states"]
        self._done_db = self.dbs["done"]
        self._ready_db = self.dbs["ready"]
        self._sched_db = self.dbs["sched"]
        self._next_seq = self._last_seq() + 1
        self._cache: dict[str, _Entry] = {}  # live job id -> its committed record
        self._cache_bytes = 0  # the encoded payloads the cache holds
        self._count_values: dict[bytes, int] = {}  # counts key -> its committed value
        self._qkeys: dict[str, _QueueKeys] = {}  # queue -> its key prefixes (write path)
        self._enc = Encoder()  # prepare's (one at a time)
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
            migrate = version == 2  # format 3 added the ready index: built from ``states``
            if version != FORMAT_VERSION and not migrate:
                found = "no format version" if version is None else f"format version {version}"
                writer = ("an older actorq wrote it; there is no migration"
                          if version is not None and version < FORMAT_VERSION
                          else "a newer actorq wrote it?")
                raise JournalError(
                    f"{str(self.path)!r} has {found}; this actorq reads format version "
                    f"{FORMAT_VERSION} ({writer}); it was left untouched"
                )
        while True:
            try:
                with env.begin(write=True) as txn:
                    self.dbs = {name.decode(): env.open_db(name, txn=txn) for name in _DBS}
                    meta = self.dbs["meta"]
                    if txn.get(b"format", db=meta) is None:
                        txn.put(b"format", _Q.pack(FORMAT_VERSION), db=meta)
                    elif _Q.unpack(txn.get(b"format", db=meta))[0] == 2:
                        self._build_ready_index(txn)
                        txn.put(b"format", _Q.pack(FORMAT_VERSION), db=meta)
                    raw = txn.get(b"epoch", db=meta)
                    self.epoch = (0 if raw is None else _Q.unpack(raw)[0]) + 1
                    txn.put(b"epoch", _Q.pack(self.epoch), db=meta)
                return
            except lmdb.MapFullError:
                self.grow()

    def _build_ready_index(self, txn: lmdb.Transaction) -> None:
        """Format 2 -> 3: index every pending job by rank and every delayed one by due time
        (in the transaction that opens)."""
        for state in (JobState.PENDING, JobState.DELAYED):
            for key, value in _from(txn.cursor(db=self.dbs["states"]), CODES[state]):
                e = decode_live(value, _Q.unpack_from(key, len(key) - 8)[0], state)
                qkey = key[1:-8]
                if state is JobState.PENDING:
                    txn.put(rank_key(qkey, e.priority, e.ready_at, e.seq, e.interrupted),
                            value, db=self.dbs["ready"])
                else:
                    txn.put(due_key(qkey, e.ready_at, e.seq), value, db=self.dbs["sched"])

    def _last_seq(self) -> int:
        with self.env.begin(db=self.dbs["log"]) as txn:
            cur = txn.cursor()
            return _Q.unpack(cur.key())[0] if cur.last() else 0

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._cache.clear()
            self._cache_bytes = 0
            self._count_values.clear()
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

        The same as :meth:`prepare`, then :meth:`write`, then :meth:`finish`.
        """
        plan = self.prepare(events, retention=retention, now=now)
        self.write(plan)
        return self.finish(plan)

    def prepare(
        self,
        events: Iterable[Event],
        *,
        retention: Mapping[str, Retention] | None = None,
        now: float | None = None,
    ) -> CommitPlan:
        """The Python half of a commit, with no write transaction open: fold ``events`` into
        their records and encode every key and value the commit writes. Changes nothing, in
        LMDB or in memory: :meth:`write` writes the plan, :meth:`finish` then updates the
        in-memory state. Plans are written one at a time, in the order they were prepared,
        each prepared after the previous one finished (or was dropped)."""
        if retention:
            assert now is not None, "retention needs now"
        results: list[JobRecord | None] = []
        cache = self._cache
        seq = self._next_seq
        # job id -> (record, encoded payload) as this transaction leaves it (None: no such job)
        current: dict[str, _Entry | None] = {}
        first: dict[str, JobRecord | None] = {}  # job id -> its record before this transaction
        changed: dict[str, None] = {}  # the jobs this transaction wrote, in order
        counts: dict[bytes, int] = {}  # counts written by this transaction: key -> value
        first_seq = seq
        log: list[bytes] = []  # the log entries, keyed first_seq, first_seq + 1, ...
        job_keys: list[bytes] = []
        job_values: list[bytes] = []
        ops = _Ops(self.env, self.dbs)
        folds = _FOLDS
        enc = self._enc
        pack = enc.pack
        try:
            for ev in events:
                enqueued = isinstance(ev, Enqueued)
                job_id = ev.record.id if enqueued else ev.id  # type: ignore[union-attr]
                entry = current.get(job_id, _UNSEEN)
                if entry is _UNSEEN:
                    entry = cache.get(job_id)
                    if entry is None:
                        raw = ops.get_job(job_id.encode())
                        if raw is not None:
                            entry = (decode_record(raw), None)
                    current[job_id] = entry
                    first[job_id] = None if entry is None else entry[0]
                # apply_event(old, ev, seq), inlined for the common cases
                if enqueued:
                    if entry is not None:  # the id is taken
                        results.append(None)
                        continue
                    new = enqueued_record(ev.record, seq)  # type: ignore[union-attr]
                    payload = pack(new.payload)
                    log.append(enc.enqueued(ev.record, payload))  # type: ignore[union-attr]
                else:
                    if entry is None:
                        results.append(None)
                        continue
                    old, payload = entry
                    fold = folds.get(type(ev))
                    if fold is None or old.state in _TERMINAL:
                        new = apply_event(old, ev, seq)
                    else:
                        new = fold(old, ev, old.log + (seq,))
                    if new is None:
                        results.append(None)
                        continue
                    if payload is None:
                        payload = pack(old.payload)
                    log.append(enc.event(ev))
                    if type(new.payload) not in _IMMUTABLE or type(new.result) not in _IMMUTABLE:
                        _own_values(new, payload, ev)
                results.append(new)
                seq += 1
                current[job_id] = (new, payload)
                changed[job_id] = None
            deltas: dict[bytes, int] = {}
            reindex = self._reindex
            for job_id in changed:
                new, payload = current[job_id]  # type: ignore[misc]
                job_keys.append(job_id.encode())
                job_values.append(enc.record_with(new, payload))
                reindex(ops, first[job_id], new, deltas)
            self._write_counts(ops, deltas, counts)  # type: ignore[arg-type]
        finally:
            ops.close()
        assert seq == first_seq + len(log)
        return CommitPlan(first_seq, log, job_keys, job_values, ops, counts,
                          dict(retention or {}), now, results,
                          [(job_id, current[job_id]) for job_id in changed])

    def write(self, plan: CommitPlan) -> None:
        """Write ``plan`` in one write transaction and commit it (from any thread, one at a time;
        in ``sync`` mode the commit's fsync releases the GIL). Trims the plan's retention queues
        in the same transaction and runs :attr:`before_commit` inside it. Raises
        :class:`MapFull` where the map must grow first (the plan can then be written again)."""
        counts = dict(plan.counts)
        try:
            with self.env.begin(write=True) as txn:
                dbs = self.dbs
                if plan.log:
                    first = plan.first_seq
                    keys = map(_Q.pack, range(first, first + len(plan.log)))
                    txn.cursor(db=dbs["log"]).putmulti(zip(keys, plan.log), append=True)
                if plan.job_keys:
                    txn.cursor(db=dbs["jobs"]).putmulti(zip(plan.job_keys, plan.job_values))
                # each database's operations in order, through a cursor (cheaper than txn.put
                # with db=); the order between databases does not matter
                for db, run in plan.ops.runs.items():
                    if run:
                        cur = txn.cursor(db=db)
                        put, find, delete = cur.put, cur.set_key, cur.delete
                        for key, value in run:
                            if value is None:
                                if find(key):
                                    delete()
                            else:
                                put(key, value)
                for queue, policy in plan.retention.items():
                    self._trim(txn, queue, policy, plan.now, counts)  # type: ignore[arg-type]
                if self.before_commit is not None:
                    self.before_commit()
        except lmdb.MapFullError:
            raise MapFull() from None
        plan.written_counts = counts

    def finish(self, plan: CommitPlan) -> list[JobRecord | None]:
        """After :meth:`write` committed ``plan``: the in-memory state follows; its results."""
        assert plan.written_counts is not None, "finish() of a plan that was not written"
        cache = self._cache
        self._next_seq = plan.next_seq
        self._count_values.update(plan.written_counts)
        for job_id, entry in plan.changed:
            held = cache.pop(job_id, None)
            if held is not None:
                self._cache_bytes -= len(held[1])  # type: ignore[arg-type]
            if entry[0].state not in _TERMINAL:  # type: ignore[index]
                size = len(entry[1])  # type: ignore[arg-type,index]
                if (len(cache) < self.cache_max
                        and self._cache_bytes + size <= self.cache_max_bytes):
                    cache[job_id] = entry  # type: ignore[assignment]
                    self._cache_bytes += size
        return plan.results

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

    def _queue_keys(self, queue: str) -> _QueueKeys:
        """``queue``'s key prefixes, remembered (for the write path)."""
        keys = self._qkeys.get(queue)
        if keys is None:
            if len(self._qkeys) >= 4096:
                self._qkeys.clear()
            keys = self._qkeys[queue] = _QueueKeys(_qkey(queue))
        return keys

    def _reindex(self, ops: _Ops, old: JobRecord | None, new: JobRecord,
                 deltas: dict[bytes, int]) -> None:
        """Record in ``ops`` the index changes of a job going from ``old`` (None: new) to
        ``new``, and in ``deltas`` its counts' changes."""
        state = new.state
        queue = new.queue
        keys = self._qkeys.get(queue) or self._queue_keys(queue)
        qkey = keys.qkey
        live = state not in _TERMINAL
        entry = self._enc.live(new) if live else None  # a live job always gets a states entry
        if old is not None:
            old_state = old.state
            # a job's queue never changes; compared anyway, it costs nothing
            old_keys = keys if old.queue == queue else self._queue_keys(old.queue)
            if old_state is _PENDING:
                old_rank = rank_key(old_keys.qkey, old.priority, old.ready_at, old.seq,
                                    old.interrupted)
                if state is not _PENDING or rank_key(
                        qkey, new.priority, new.ready_at, new.seq, new.interrupted) != old_rank:
                    ops.ready.append((old_rank, None))
            elif old_state is _DELAYED:
                old_due = due_key(old_keys.qkey, old.ready_at, old.seq)
                if state is not _DELAYED or due_key(qkey, new.ready_at, new.seq) != old_due:
                    ops.sched.append((old_due, None))
        if state is _PENDING:
            ops.ready.append(
                (rank_key(qkey, new.priority, new.ready_at, new.seq, new.interrupted), entry))
        elif state is _DELAYED:  # a delayed job's ready_at: its due time
            ops.sched.append((due_key(qkey, new.ready_at, new.seq), entry))
        key = keys.states[state] + _Q.pack(new.seq)
        if old is not None:
            if old_state is state:
                if live:  # same key; its scheduling fields may have changed
                    ops.states.append((key, entry))
                return
            ops.states.append((old_keys.states[old_state] + _Q.pack(old.seq), None))
            count = old_keys.counts[old_state]
            deltas[count] = deltas.get(count, 0) - 1
        if live:
            ops.states.append((key, entry))
        else:
            ops.states.append((key, new.id.encode()))
            value = _D.pack(new.finished_at or 0.0) + self._enc.pack(
                (new.id, new.seq, STATE_INDEX[state], new.log))
            ops.done.append((qkey + _Q.pack(new.log[-1]), value))
        count = keys.counts[state]
        deltas[count] = deltas.get(count, 0) + 1

    def _count_value(self, txn: lmdb.Transaction, key: bytes, counts: dict[bytes, int]) -> int:
        """A counter as this transaction sees it (``counts``: what it wrote so far)."""
        value = counts.get(key)
        if value is None:
            value = self._count_values.get(key)
            if value is None:
                raw = txn.get(key, db=self.dbs["counts"])
                value = 0 if raw is None else _Q.unpack(raw)[0]
        return value

    def _write_counts(self, txn: lmdb.Transaction, deltas: dict[bytes, int],
                      counts: dict[bytes, int]) -> None:
        """Apply ``deltas`` (counts key -> change), each counter written once."""
        db = self.dbs["counts"]
        for key, delta in deltas.items():
            if delta:
                value = self._count_value(txn, key, counts) + delta
                txn.put(key, _Q.pack(value), db=db)
                counts[key] = value

    def _trim(self, txn: lmdb.Transaction, queue: str, policy: Retention, now: float,
              counts: dict[bytes, int]) -> int:
        """Remove ``queue``'s finished jobs beyond ``policy``; how many were removed.

        The oldest finished jobs leave first (the ``done`` index is in finish order), while
        more than ``max_count`` remain or they finished before ``now - max_age``. Each leaves
        with its record, its ``states`` entry, its ``log`` entries and its ``done`` entry (a
        ``done`` entry whose record is gone is removed alone). Each database's deletes go through
        one cursor (cheaper than ``txn.delete(key, db=)``), in key order where the keys come
        unordered: LMDB finds a key on the cursor's current page without a descent."""
        prefix = _qkey(queue)
        finished = sum(self._count_value(txn, prefix + CODES[s], counts) for s in TERMINAL_STATES)
        excess = max(finished - policy.max_count, 0)
        cutoff = now - policy.max_age
        # the done entries that leave: a run from the queue's first, deleted as it is read
        cur = txn.cursor(db=self._done_db)
        if not cur.set_range(prefix):
            return 0
        item, delete, unpack = cur.item, cur.delete, _D.unpack_from
        gone: list[bytes] = []
        while True:
            key, value = item()
            if not key.startswith(prefix) or (
                    len(gone) >= excess and unpack(value)[0] >= cutoff):
                break
            gone.append(value)
            if not delete():
                break
        if gone:
            self._remove(txn, prefix, gone, counts)
        return len(gone)

    def _remove(self, txn: lmdb.Transaction, qkey: bytes, done: list[bytes],
                counts: dict[bytes, int]) -> None:
        """Delete the finished jobs of ``qkey``'s queue whose ``done`` entries (already deleted)
        were ``done``, and update their counts."""
        # the records, in the order the jobs finished (their ids' order, mostly: sorting them
        # first gained nothing, measured with time-ordered ids and with random ones)
        jobs = txn.cursor(db=self.dbs["jobs"])
        find, delete = jobs.set_key, jobs.delete
        found = []
        for value in done:
            entry = decode_value(value[_D.size:])  # [id, seq, state, log]
            if find(entry[0].encode()):
                delete()
                found.append(entry)
        # their states and log entries (the log's interleave: sorted, they are found on the
        # cursor's page), and their counts
        by_state: dict[int, int] = {}  # state index -> its jobs removed
        states: list[bytes] = []
        seqs: list[int] = []
        codes = [CODES[state] + qkey for state in STATES]
        for _id, seq, state, log in found:
            states.append(codes[state] + _Q.pack(seq))
            by_state[state] = by_state.get(state, 0) + 1
            seqs += log
        for db, keys in ((self._states_db, sorted(states)),
                         (self.dbs["log"], map(_Q.pack, sorted(seqs)))):
            cur = txn.cursor(db=db)
            find, delete = cur.set_key, cur.delete
            for key in keys:
                if find(key):
                    delete()
        self._write_counts(txn, {qkey + CODES[STATES[state]]: -n for state, n in by_state.items()},
                           counts)

    # ---- reading (any thread; each call is one short read transaction)

    def _get(self, txn: lmdb.Transaction, job_id: str) -> JobRecord | None:
        # decode_record is looked up here, in this module, at each call (a test counts calls)
        raw = txn.get(job_id.encode(), db=self.dbs["jobs"])
        return None if raw is None else decode_record(raw)

    def get(self, job_id: str) -> JobRecord | None:
        with self.env.begin() as txn:
            return self._get(txn, job_id)

    def _state_ids(self, txn: lmdb.Transaction, state: JobState, queue: str | None
                   ) -> Iterator[tuple[bytes, str]]:
        prefix = CODES[state] + (b"" if queue is None else _qkey(queue))
        live = state not in _TERMINAL
        for key, value in _from(txn.cursor(db=self.dbs["states"]), prefix):
            yield key[-8:], (live_id(value) if live else value.decode())

    def live(self, queue: str) -> list[JobRecord]:
        """Every pending, delayed or running job of ``queue``, in enqueue order."""
        with self.env.begin() as txn:
            ids = heapq.merge(*(self._state_ids(txn, s, queue) for s in LIVE_STATES))
            return [r for _seq, job_id in ids if (r := self._get(txn, job_id))]

    def live_entries(self, queue: str, states: Iterable[JobState] = LIVE_STATES
                     ) -> list[LiveEntry]:
        """Every job of ``queue`` in ``states`` (by default: every pending, delayed or running
        one), in enqueue order, as the state index holds it: scheduling fields only (no
        payload, result or error), read in one short read transaction from the index alone,
        without reading or decoding any record."""
        qkey = _qkey(queue)
        runs: list[list[LiveEntry]] = []
        with self.env.begin(db=self._states_db) as txn:
            cur = txn.cursor()
            for state in states:
                prefix = CODES[state] + qkey
                if cur.set_range(prefix) and cur.key().startswith(prefix):
                    runs.append(list(_index_run(cur, prefix, state)))
        if len(runs) == 1:
            return runs[0]
        # each run is in seq order already: the sort only merges them
        return sorted((e for run in runs for e in run), key=_entry_seq)

    def ready_entries(self, queue: str, after: tuple[int, float, int] | None, limit: int
                      ) -> list[LiveEntry]:
        """The first ``limit`` pending jobs of ``queue`` in start order ranked after ``after``
        (a ``(priority, ready_at, seq)`` rank; None: from the first), interrupted ones
        excluded; fewer than ``limit`` where the index runs out."""
        qkey = _qkey(queue)
        prefix = qkey + _WAITING
        start = prefix if after is None else rank_key(qkey, *after)
        return self._page(self._ready_db, prefix, start, after is not None, limit,
                          JobState.PENDING)

    def delayed_entries(self, queue: str, after: tuple[float, int] | None, limit: int
                        ) -> list[LiveEntry]:
        """The first ``limit`` delayed jobs of ``queue`` by due time (then enqueue order) after
        ``after`` (a ``(due, seq)``; None: from the first); fewer where the index runs out."""
        qkey = _qkey(queue)
        start = qkey if after is None else due_key(qkey, *after)
        return self._page(self._sched_db, qkey, start, after is not None, limit,
                          JobState.DELAYED)

    def _page(self, db: Any, prefix: bytes, start: bytes, skip_start: bool, limit: int,
              state: JobState) -> list[LiveEntry]:
        """Up to ``limit`` live entries of an index, from key ``start`` (excluded where
        ``skip_start``) while keys begin with ``prefix``."""
        if limit <= 0:
            return []
        with self.env.begin(db=db) as txn:
            cur = txn.cursor()
            if not cur.set_range(start):
                return []
            if skip_start and cur.key() == start and not cur.next():
                return []
            return list(islice(_index_run(cur, prefix, state), limit))

    def interrupted_entries(self, queue: str) -> list[LiveEntry]:
        """The pending jobs of ``queue`` whose last attempt was interrupted (not decided yet)."""
        prefix = _qkey(queue) + _INTERRUPTED
        return self._page(self._ready_db, prefix, prefix, False, 1 << 62, JobState.PENDING)

    def running(self, *, before_epoch: int | None = None) -> list[JobRecord]:
        """Running jobs of every queue (started in an epoch before ``before_epoch``, if given)."""
        with self.env.begin() as txn:
            recs = [self._get(txn, job_id)
                    for _seq, job_id in self._state_ids(txn, JobState.RUNNING, None)]
        return [r for r in recs if r and (before_epoch is None or r.epoch < before_epoch)]

    def finished_since(self, queue: str, since: float) -> list[JobRecord]:
        """The jobs of ``queue`` that finished at or after wall time ``since``, newest first
        (read back from the end of the ``done`` table: costs what finished since then)."""
        prefix = _qkey(queue)
        out: list[JobRecord] = []
        with self.env.begin() as txn:
            cur = txn.cursor(db=self._done_db)
            # the queue's last finished job: just before the first key past its prefix
            found = cur.prev() if cur.set_range(prefix[:-1] + b"\x01") else cur.last()
            while found and cur.key().startswith(prefix):
                value = cur.value()
                if _D.unpack_from(value)[0] < since:
                    break
                rec = self._get(txn, decode_value(value[_D.size:])[0])
                if rec is not None:
                    out.append(rec)
                found = cur.prev()
        return out

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
                rec = self._get(txn, job_id)
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
