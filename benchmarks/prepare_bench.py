"""Micro-benchmark of ``Journal.prepare`` (and prepare + write + finish) per job, on W1's and W2's
commit shapes, for the actorq on ``PYTHONPATH``; or an interleaved A/B of two source trees.

    python benchmarks/prepare_bench.py                      # this tree: one run, JSON
    python benchmarks/prepare_bench.py --ab TREE_A TREE_B --rounds 10
    python benchmarks/prepare_bench.py --compare TREE_A TREE_B --programs 200

Shapes (the journal in "os" mode, sync=False, in a temporary directory):

- ``w1``: commits of 100 Succeeded (of the jobs the previous commit started) and 100 fresh
  Enqueued, interleaved as a queue round receives them, then the 100 Started of the fresh ones;
  retention on, as when a round finished jobs. Per job: one enqueue + start + success.
- ``w2``: commits of one fused Enqueued + Started, then one of its Succeeded. Per job: both.

Each run times ``commits`` commits after a warm-up and prints the median µs per job.

``--compare`` checks that two trees write the same journal: it runs the same random programs of
transitions (every event type, valid and refused ones, several transitions of one job in one
commit, several queues, retention, small caches and reopens) through each tree, in a fresh
interpreter per tree, and compares every key and value of every LMDB database after each
commit, and the records each commit returned.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(shape: str, commits: int, warmup: int) -> dict[str, float]:
    from actorq._journal import Journal
    from actorq._model import Enqueued, JobState, Retention, Started, Succeeded, _record

    clock = time.perf_counter_ns
    n_id = [0x18000000_00000000]

    def new_id() -> str:
        n_id[0] += 1
        return f"{n_id[0]:016x}{n_id[0] * 2654435761 % (1 << 64):016x}"

    wall = 1.7e9

    def record(job_id: str, i: int):
        return _record(job_id, "w1", JobState.PENDING, i, 2, 0, wall, wall, None, 0, None,
                       None, None, None, None, None, None, 0, False, None, None, False, ())

    prep: list[int] = []
    total: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        j = Journal(tmp, sync=False, map_size=1 << 30)
        epoch = j.epoch
        retention = {"w1": Retention(max_age=3600, max_count=1000)}
        running: list[str] = []
        i = 0
        for c in range(warmup + commits):
            if shape == "w1":
                fresh = [new_id() for _ in range(100)]
                events: list = []
                for k in range(100):
                    if k < len(running):
                        events.append(Succeeded(running[k], wall, None))
                    events.append(Enqueued(record(fresh[k], i)))
                    i += 1
                events.extend(Started(job_id, wall, 1, epoch) for job_id in fresh)
                running, per = fresh, 100
                ret = retention
                batches = [(events, ret)]
            else:
                job_id = new_id()
                batches = [([Enqueued(record(job_id, i)), Started(job_id, wall, 1, epoch)], None),
                           ([Succeeded(job_id, wall, None)], retention)]
                i += 1
                per = 1
            t_prep = t_all = 0
            for events, ret in batches:
                t0 = clock()
                plan = j.prepare(events, retention=ret, now=wall)
                t1 = clock()
                j.write(plan)
                j.finish(plan)
                t2 = clock()
                t_prep += t1 - t0
                t_all += t2 - t0
            if c >= warmup:
                prep.append(t_prep / per)
                total.append(t_all / per)
        j.close()
    return {"prepare_us": statistics.median(prep) / 1000,
            "commit_us": statistics.median(total) / 1000}


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
            retention = {q: (rnd.choice([1.0, 50.0, 1e6]), rnd.choice([0, 2, 5, 100]))
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

    out = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            j = Journal(tmp, sync=False)
            for step in _program(seed):
                if step[0] == "reopen":
                    j.close()
                    j = Journal(tmp, sync=False)
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
    return out


def _compare(trees: list[Path], programs: int, first_seed: int) -> int:
    here = Path(__file__).resolve()
    seeds = list(range(first_seed, first_seed + programs))
    dumps = []
    for tree in trees:
        proc = subprocess.run(
            [sys.executable, str(here), "--replay", json.dumps(seeds)], capture_output=True,
            text=True, check=True, cwd=str(tree), env=dict(os.environ, PYTHONPATH=str(tree)))
        dumps.append(json.loads(proc.stdout))
    a, b = dumps
    commits = len(a)
    items = sum(len(run) for _results, dbs in a for _name, run in dbs)
    if a != b:
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                print(f"DIFFERENT at commit {i}:\n{x}\n{y}")
                return 1
        print(f"DIFFERENT: {len(a)} vs {len(b)} commits")
        return 1
    print(f"same: {programs} programs, {commits} commits, {items} database items compared "
          f"(after every commit), and every commit's returned records")
    return 0


def _ab(trees: list[Path], rounds: int, shapes: list[str]) -> None:
    here = Path(__file__).resolve()
    res: dict[tuple[str, Path, str], list[float]] = {}
    for r in range(rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:
            for shape in shapes:
                out = subprocess.run(
                    [sys.executable, str(here), "--shape", shape],
                    capture_output=True, text=True, check=True, cwd=str(tree),
                    env=dict(os.environ, PYTHONPATH=str(tree)))
                for key, value in json.loads(out.stdout.splitlines()[-1]).items():
                    res.setdefault((shape, tree, key), []).append(value)
        print(f"round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    print(f"A = {trees[0]}\nB = {trees[1]}\n{rounds} interleaved rounds; µs per job, "
          f"median [min-max] of the runs' medians\n")
    print("| shape | measure | A | B | B / A |")
    print("| --- | --- | ---: | ---: | ---: |")
    for shape in shapes:
        for key in ("prepare_us", "commit_us"):
            a, b = res[(shape, trees[0], key)], res[(shape, trees[1], key)]
            ma, mb = statistics.median(a), statistics.median(b)
            print(f"| {shape} | {key} | {ma:.2f} [{min(a):.2f}-{max(a):.2f}] | "
                  f"{mb:.2f} [{min(b):.2f}-{max(b):.2f}] | {mb / ma:.3f} |")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=["w1", "w2"], default="w1")
    ap.add_argument("--commits", type=int, default=0)
    ap.add_argument("--ab", nargs=2, type=Path, metavar="TREE")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--shapes", default="w1,w2")
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
        _ab([t.resolve() for t in args.ab], args.rounds, args.shapes.split(","))
        return 0
    commits = args.commits or (150 if args.shape == "w1" else 3000)
    warmup = 20 if args.shape == "w1" else 300
    print(json.dumps(_run(args.shape, commits, warmup)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
