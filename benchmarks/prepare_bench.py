"""Micro-benchmark of ``Journal.prepare`` (and prepare + write + finish) per job, on W1's and W2's
commit shapes, for the actorq on ``PYTHONPATH``; or an interleaved A/B of two source trees.

    python benchmarks/prepare_bench.py                      # this tree: one run, JSON
    python benchmarks/prepare_bench.py --ab TREE_A TREE_B --rounds 300
    python benchmarks/prepare_bench.py --compare TREE_A TREE_B --programs 200

Shapes (the journal in "os" mode, sync=False, in a temporary directory):

- ``w1``: commits of 100 Succeeded (of the jobs the previous commit started) and 100 fresh
  Enqueued, interleaved as a queue round receives them, then the 100 Started of the fresh ones;
  retention on, as when a round finished jobs. Per job: one enqueue + start + success.
- ``w2``: commits of one fused Enqueued + Started, then one of its Succeeded. Per job: both.
- ``batch``: W1's ``enqueue_batch`` variant: commits of 100 Enqueued (a batch: one time object
  for all), 100 Started of the previous commit's jobs (pending until then) and 100 Succeeded
  of the jobs started before; retention on. Per job: the three, none fused.
- ``trim``: retention at steady state. The journal first holds ``--keep`` finished jobs of the
  queue (written without retention, before timing); then commits of 100 Succeeded (of the jobs
  the previous commit started), each followed by one fresh job's fused Enqueued + Started, with
  the queue's ``Retention(max_count=keep)``: each commit trims the 100 oldest finished jobs
  (their record, ``states``, ``done`` and three ``log`` entries). Per job: one enqueue + start
  + success, and one trimmed job. ``--ab`` also reports ``_trim``'s own time (timed inside
  ``write``) per trimmed job, and its share of prepare + write + finish.

One tree: times ``--commits`` commits after a warm-up and prints the median µs per job.
``--ab``: both trees' journal modules in one process, commit by commit in turn (see
:func:`_ab`); the median µs per job of each, and the median of the paired ratios.

``--compare`` checks that two trees write the same journal: it runs the same random programs of
transitions (every event type, valid and refused ones, several transitions of one job in one
commit, several queues, retention, small caches and reopens; bursts of jobs that finish in
one commit, in an order unlike their ids', so that retention often removes many at once)
through each tree, in a fresh interpreter per tree, and compares every key and value of every
LMDB database after each commit, the records each commit returned, and how many jobs
retention removed (the count is printed: a run should show many).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _load(tree: Path, name: str) -> Any:
    """``tree``'s journal modules (``_journal`` and what it imports: ``_codec``, ``_model``,
    ``_errors``) as a package of their own, ``name``, so that two trees run in one process."""
    pkg = Path(tempfile.mkdtemp()) / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for module in ("_journal", "_codec", "_model", "_errors"):
        (pkg / f"{module}.py").symlink_to(tree / "actorq" / f"{module}.py")
    sys.path.insert(0, str(pkg.parent))
    return importlib.import_module(f"{name}._journal"), importlib.import_module(f"{name}._model")


class _Workload:
    """One tree's journal, fed commits of one shape (see the module's docstring)."""

    def __init__(self, journal_mod: Any, model: Any, shape: str, directory: str,
                 keep: int = 1000) -> None:
        self.m = model
        self.shape = shape
        self.j = journal_mod.Journal(directory, sync=False, map_size=1 << 30)
        self.retention = {"w1": model.Retention(max_age=3600, max_count=1000)}
        self.running: list[str] = []
        self.pending: list[str] = []
        self.n_id = 0x18000000_00000000
        self.i = 0
        self.trim_ns = 0  # time spent in Journal._trim (trim shape)
        self.trimmed = 0  # jobs it removed
        if shape == "trim":
            self.retention = {"w1": model.Retention(max_age=3600, max_count=keep)}
            self._fill(keep)
            trim = self.j._trim
            clock = time.perf_counter_ns

            def timed_trim(*args: Any) -> int:
                t0 = clock()
                removed = trim(*args)
                self.trim_ns += clock() - t0
                self.trimmed += removed
                return removed  # type: ignore[no-any-return]

            self.j._trim = timed_trim

    def _fill(self, n: int) -> None:
        """Commit ``n`` finished jobs (1,000 per commit, each enqueued, started, succeeded)."""
        m = self.m
        epoch = self.j.epoch
        for start in range(0, n, 1000):
            ids = [self._new_id() for _ in range(min(1000, n - start))]
            self.j.commit([m.Enqueued(self._record(job_id)) for job_id in ids])
            self.j.commit([m.Started(job_id, WALL, 1, epoch) for job_id in ids])
            self.j.commit([m.Succeeded(job_id, WALL, None) for job_id in ids])

    def _new_id(self) -> str:
        self.n_id += 1
        return f"{self.n_id:016x}{self.n_id * 2654435761 % (1 << 64):016x}"

    def _record(self, job_id: str, at: float | None = None) -> Any:
        """A job's record as ``Queue.enqueue`` builds it (at: its time object; None: its own,
        as each producer's enqueue has)."""
        m = self.m
        self.i += 1
        if at is None:
            at = WALL + self.i * 1e-6
        return m.JobRecord(job_id, "w1", m.JobState.PENDING, self.i, 2, 0, at, at)

    def batches(self) -> tuple[int, list[tuple[list[Any], Any]]]:
        """The next commits, and how many jobs they stand for."""
        m = self.m
        epoch = self.j.epoch
        if self.shape == "w2":
            job_id = self._new_id()
            return 1, [([m.Enqueued(self._record(job_id)), m.Started(job_id, WALL, 1, epoch)],
                        None),
                       ([m.Succeeded(job_id, WALL, None)], self.retention)]
        fresh = [self._new_id() for _ in range(100)]
        events: list[Any] = []
        if self.shape == "trim":
            for k, job_id in enumerate(fresh):
                if k < len(self.running):
                    events.append(m.Succeeded(self.running[k], WALL, None))
                events += [m.Enqueued(self._record(job_id)), m.Started(job_id, WALL, 1, epoch)]
            self.running = fresh
            return 100, [(events, self.retention)]
        if self.shape == "batch":
            at = WALL + self.i * 1e-6
            events = [m.Succeeded(job_id, WALL, None) for job_id in self.running]
            events += [m.Started(job_id, WALL, 1, epoch) for job_id in self.pending]
            events += [m.Enqueued(self._record(job_id, at)) for job_id in fresh]
            self.running, self.pending = self.pending, fresh
            return 100, [(events, self.retention)]
        for k, job_id in enumerate(fresh):
            if k < len(self.running):
                events.append(m.Succeeded(self.running[k], WALL, None))
            events.append(m.Enqueued(self._record(job_id)))
        events.extend(m.Started(job_id, WALL, 1, epoch) for job_id in fresh)
        self.running = fresh
        return 100, [(events, self.retention)]

    def step(self) -> tuple[float, float, float, int]:
        """One shape's commits: ns per job in prepare, and in prepare + write + finish; ns in
        ``_trim`` and the jobs it removed (trim shape; else 0)."""
        clock = time.perf_counter_ns
        jobs, batches = self.batches()
        t_prep = t_all = 0
        trim_ns, trimmed = self.trim_ns, self.trimmed
        for events, retention in batches:
            t0 = clock()
            plan = self.j.prepare(events, retention=retention, now=WALL)
            t1 = clock()
            self.j.write(plan)
            self.j.finish(plan)
            t2 = clock()
            t_prep += t1 - t0
            t_all += t2 - t0
        return t_prep / jobs, t_all / jobs, self.trim_ns - trim_ns, self.trimmed - trimmed


WALL = 1.7e9


def _ab(trees: list[Path], rounds: int, shapes: list[str], keep: int) -> None:
    """Both trees in this process, one commit shape at a time, alternating commit by commit
    (which tree goes first alternates too), so both see the same moments of a noisy CPU."""
    mods = [_load(tree, f"tree_{i}") for i, tree in enumerate(trees)]
    print(f"A = {trees[0]}\nB = {trees[1]}\n")
    print("| shape | measure | A µs/job | B µs/job | B / A (median of paired ratios) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for shape in shapes:
        steps = rounds * (100 if shape == "w2" else 1)
        warmup = steps // 10
        with tempfile.TemporaryDirectory() as tmp:
            loads = [_Workload(j, m, shape, f"{tmp}/{i}", keep)
                     for i, (j, m) in enumerate(mods)]
            times: list[list[tuple[float, float, float, int]]] = [[], []]
            for r in range(warmup + steps):
                order = (0, 1) if r % 2 == 0 else (1, 0)
                for i in order:
                    t = loads[i].step()
                    if r >= warmup:
                        times[i].append(t)
            for load in loads:
                load.j.close()
        for k, key in enumerate(("prepare", "prepare+write+finish")):
            a = [t[k] / 1000 for t in times[0]]
            b = [t[k] / 1000 for t in times[1]]
            ratios = sorted(y / x for x, y in zip(a, b))
            q = len(ratios) // 4
            print(f"| {shape} | {key} | {statistics.median(a):.2f} | {statistics.median(b):.2f} "
                  f"| {statistics.median(ratios):.3f} [IQR {ratios[q]:.3f}-{ratios[-q - 1]:.3f}] |")
        if shape == "trim":
            assert all(t[3] == 100 for ts in times for t in ts[1:]), "each commit trims 100"
            a = [t[2] / t[3] / 1000 for t in times[0] if t[3]]
            b = [t[2] / t[3] / 1000 for t in times[1] if t[3]]
            ratios = sorted(y / x for x, y in zip(a, b))
            q = len(ratios) // 4
            print(f"| {shape} | _trim per trimmed job | {statistics.median(a):.2f} "
                  f"| {statistics.median(b):.2f} | {statistics.median(ratios):.3f} "
                  f"[IQR {ratios[q]:.3f}-{ratios[-q - 1]:.3f}] |")
            # _trim's share of the commit: its ns over prepare + write + finish's (per 100 jobs)
            share = [[t[2] / (t[1] * 100) for t in ts if t[3]] for ts in times]
            print(f"| {shape} | _trim's share of prepare+write+finish "
                  f"| {statistics.median(share[0]):.1%} | {statistics.median(share[1]):.1%} | |")


def _program(seed: int) -> list[tuple]:
    """A random program, as data (each tree builds its own event objects from it): a list of
    ("commit", [event spec, ...], retention spec or None, now) and ("reopen", cache_max)."""
    import random

    rnd = random.Random(seed)
    queues = ["a", "b", "c"][: rnd.randint(1, 3)]
    ids: list[str] = []
    out: list[tuple] = []
    t = 1_000.0
    payloads = [None, 0, 7, -3, 2**40, "s", 1.5, True, [1, 2], {"k": [1, {"x": None}]}, []]
    results = [None, "r", 3, {"r": [1]}, [None]]
    for _ in range(rnd.randint(1, 40)):
        if rnd.random() < 0.05:
            out.append(("reopen", rnd.choice([None, 0, 1, 3])))
            continue
        events = []
        if rnd.random() < 0.15:  # a burst: jobs that finish in this commit, in shuffled order
            burst = [f"{rnd.getrandbits(32):08x}{len(ids) + k:04x}" for k in range(
                rnd.randint(5, 60))]
            ids += burst
            for job_id in burst:
                events.append(("enq", dict(
                    id=job_id, queue=rnd.choice(queues), delayed=False, due=t, payload=None,
                    priority=0, created_at=t, max_attempts=None, timeout=None, key=None,
                    first=None, leading=False)))
                events.append(("start", (job_id, t, 1, 1)))
            rnd.shuffle(burst)
            for job_id in burst:
                t += rnd.choice([0.0, 0.5, 2.0])
                kind = rnd.choice(["ok", "ok", "fail", "cancel"])
                events.append((kind, (job_id, t, "E: b" if kind == "fail" else None)))
        for _ in range(rnd.randint(1, 12)):
            t += rnd.choice([0.0, 0.5, 1.0, 7.0])
            kind = rnd.choice(["enq"] * 4 + ["start"] * 3 + ["ok"] * 2 + [
                "due", "retry", "fail", "cancel", "requeue", "intr"])
            if kind == "enq" or not ids:
                job_id = (rnd.choice(ids) if ids and rnd.random() < 0.05
                          else f"{len(ids):04x}{rnd.getrandbits(32):08x}")
                ids.append(job_id)
                delayed = rnd.random() < 0.2
                due = t + rnd.choice([1.0, 5.0, 30.0])
                events.append(("enq", dict(
                    id=job_id, queue=rnd.choice(queues), delayed=delayed, due=due,
                    payload=rnd.choice(payloads), priority=rnd.choice([0, 2, 2, -1, 2**40]),
                    created_at=t, max_attempts=rnd.choice([None, 1, 3]),
                    timeout=rnd.choice([None, 2.5]),
                    key=rnd.choice([None, None, "k"]), first=rnd.choice([None, t - 1]),
                    leading=rnd.random() < 0.1)))
                if rnd.random() < 0.6:  # fused, as W1 does
                    events.append(("start", (job_id, t, rnd.randint(1, 3), rnd.randint(0, 4))))
                continue
            job_id = rnd.choice(ids[-30:]) if rnd.random() < 0.97 else "nope"
            if kind == "start":
                args: tuple = (job_id, t, rnd.randint(1, 3), rnd.randint(0, 4))
            elif kind == "ok":
                args = (job_id, t, rnd.choice(results))
            elif kind == "retry":
                args = (job_id, t, "E: x", rnd.choice([None, t - 1, t + 5]))
            elif kind in ("fail", "intr"):
                args = (job_id, t, rnd.choice(["E: y", "JobInterrupted: z"]))
            elif kind == "cancel":
                args = (job_id, t, rnd.choice([None, "other"]))
            else:
                args = (job_id, t)
            events.append((kind, args))
        retention = None
        if rnd.random() < 0.3:
            retention = {q: (rnd.choice([1.0, 50.0, 1e6]), rnd.choice([0, 2, 5, 20, 100]))
                         for q in queues if rnd.random() < 0.7}
        out.append(("commit", events, retention, t))
    return out


def _replay(seeds: list[int]) -> list:
    """The journal's databases after each commit of each program, and what each commit returned
    (for :func:`_compare`; run with one tree on PYTHONPATH)."""
    from actorq._journal import _DBS, Journal
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
    )

    kinds = {"start": Started, "ok": Succeeded, "due": Due, "retry": AttemptFailed,
             "fail": Failed, "cancel": Cancelled, "requeue": Requeued, "intr": Interrupted}

    def event(kind: str, args):
        if kind != "enq":
            return kinds[kind](*args)
        a = args
        state = JobState.DELAYED if a["delayed"] else JobState.PENDING
        return Enqueued(JobRecord(
            a["id"], a["queue"], state, a["payload"], a["priority"], 0, a["created_at"],
            a["due"] if a["delayed"] else a["created_at"], a["due"] if a["delayed"] else None,
            max_attempts=a["max_attempts"], timeout=a["timeout"], debounce_key=a["key"],
            debounce_first_at=a["first"], leading=a["leading"]))

    def dump(j: Journal) -> list:
        with j.env.begin() as txn:
            return [[name.decode(), [[k.hex(), v.hex()] for k, v in txn.cursor(
                db=j.dbs[name.decode()])]] for name in _DBS]

    def counting(j: Journal) -> Journal:
        """``j``, its ``_trim`` counting into ``trims`` (trims that removed jobs, jobs removed)."""
        trim = j._trim

        def counted(*args: Any) -> int:
            removed = trim(*args)
            trims[0] += removed > 0
            trims[1] += removed
            return removed

        j._trim = counted  # type: ignore[method-assign]
        return j

    out: list = []
    trims = [0, 0]
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            j = counting(Journal(tmp, sync=False))
            for step in _program(seed):
                if step[0] == "reopen":
                    j.close()
                    j = counting(Journal(tmp, sync=False))
                    if step[1] is not None:
                        j.cache_max = step[1]
                    continue
                _, events, retention, now = step
                ret = None if retention is None else {
                    q: Retention(max_age=age, max_count=count)
                    for q, (age, count) in retention.items()}
                results = j.commit([event(k, a) for k, a in events], retention=ret, now=now)
                out.append([repr(results), dump(j)])
            j.close()
    return [trims, out]


def _compare(trees: list[Path], programs: int, first_seed: int) -> int:
    here = Path(__file__).resolve()
    seeds = list(range(first_seed, first_seed + programs))
    dumps = []
    for tree in trees:
        proc = subprocess.run(
            [sys.executable, str(here), "--replay", json.dumps(seeds)], capture_output=True,
            text=True, check=True, cwd=str(tree), env=dict(os.environ, PYTHONPATH=str(tree)))
        dumps.append(json.loads(proc.stdout))
    (trims, a), (trims_b, b) = dumps
    commits = len(a)
    items = sum(len(run) for _results, dbs in a for _name, run in dbs)
    if a != b:
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                print(f"DIFFERENT at commit {i}:\n{x}\n{y}")
                return 1
        print(f"DIFFERENT: {len(a)} vs {len(b)} commits")
        return 1
    if trims != trims_b:
        print(f"DIFFERENT: retention removed {trims[1]} jobs in {trims[0]} trims, "
              f"vs {trims_b[1]} in {trims_b[0]}")
        return 1
    print(f"same: {programs} programs, {commits} commits, {items} database items compared "
          f"(after every commit), and every commit's returned records; retention removed "
          f"{trims[1]} jobs in {trims[0]} trims")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=["w1", "w2", "batch", "trim"], default="w1")
    ap.add_argument("--keep", type=int, default=1000,
                    help="trim shape: the finished jobs the queue keeps (Retention.max_count)")
    ap.add_argument("--commits", type=int, default=0)
    ap.add_argument("--ab", nargs=2, type=Path, metavar="TREE")
    ap.add_argument("--rounds", type=int, default=300, help="W1 commits per tree (W2: x100)")
    ap.add_argument("--shapes", default="w1,w2,batch")
    ap.add_argument("--compare", nargs=2, type=Path, metavar="TREE")
    ap.add_argument("--programs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--replay", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.replay:
        print(json.dumps(_replay(json.loads(args.replay))))
        return 0
    if args.compare:
        return _compare([t.resolve() for t in args.compare], args.programs, args.seed)
    if args.ab:
        _ab([t.resolve() for t in args.ab], args.rounds, args.shapes.split(","), args.keep)
        return 0
    import actorq._journal
    import actorq._model

    steps = args.commits or (5000 if args.shape == "w2" else 300)
    with tempfile.TemporaryDirectory() as tmp:
        load = _Workload(actorq._journal, actorq._model, args.shape, tmp, args.keep)
        times = [load.step() for _ in range(steps // 10 + steps)][steps // 10:]
        load.j.close()
    print(json.dumps({"prepare_us": statistics.median(t[0] for t in times) / 1000,
                      "commit_us": statistics.median(t[1] for t in times) / 1000}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
