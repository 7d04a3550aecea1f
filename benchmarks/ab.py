"""Paired A/B runs of actorq's W1 and W2 cases, for two source trees on one noisy machine.

    python benchmarks/ab.py TREE_A TREE_B [--pairs 4]

TREE_A and TREE_B are checkouts of this repository (e.g. ``git worktree add /tmp/base main``).
Each pair runs every case once per tree, alternating which tree goes first, each case in a
fresh interpreter with ``PYTHONPATH`` set to its tree, so both see the same moments of a disk
and a CPU whose speed moves. Prints the median and best of each case per tree, and B / A of
the medians. The cases are those of ``make bench`` at smaller sizes: W1 end to end in "fsync"
mode (100 producers, and enqueue_batch), in "os" mode (100 producers), and W2's fsync p50.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CASES = [  # name, function, params, result key, whether higher is better
    ("W1 fsync, 100 producers (jobs/s)", "w1_run",
     {"mode": "fsync", "variant": "concurrent", "n": 20_000}, "e2e_rate", True),
    ("W1 fsync, batch (jobs/s)", "w1_run",
     {"mode": "fsync", "variant": "batch", "n": 20_000}, "e2e_rate", True),
    ("W1 os, 100 producers (jobs/s)", "w1_run",
     {"mode": "os", "variant": "concurrent", "n": 20_000}, "e2e_rate", True),
    ("W2 fsync p50 (ms)", "w2", {"mode": "fsync", "n": 1_000}, "p50_ms", False),
]


def run_case(tree: Path, function: str, params: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run(
        [sys.executable, str(tree / "benchmarks" / "_case.py"), "bench_actorq", function,
         json.dumps(params)], capture_output=True, text=True, env=env, cwd=str(tree))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT "):]) if lines else {}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("tree_a", type=Path)
    ap.add_argument("tree_b", type=Path)
    ap.add_argument("--pairs", type=int, default=4)
    args = ap.parse_args()
    trees = [args.tree_a.resolve(), args.tree_b.resolve()]
    results: dict[str, dict[Path, list[float]]] = {c[0]: {t: [] for t in trees} for c in CASES}
    for i in range(args.pairs):
        for tree in trees if i % 2 == 0 else trees[::-1]:
            for name, function, params, key, _ in CASES:
                value = run_case(tree, function, params).get(key)
                if isinstance(value, (int, float)):
                    results[name][tree].append(value)
        print(f"pair {i + 1}/{args.pairs} done", file=sys.stderr, flush=True)
    print(f"A = {trees[0]}\nB = {trees[1]}\n{args.pairs} interleaved pairs\n")
    print("| case | A median | A best | B median | B best | B / A |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, *_, higher in CASES:
        a, b = results[name][trees[0]], results[name][trees[1]]
        if not a or not b:
            print(f"| {name} | failed: A {len(a)} runs, B {len(b)} runs | | | | |")
            continue
        best = max if higher else min
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"| {name} | {ma:,.3f} | {best(a):,.3f} | {mb:,.3f} | {best(b):,.3f} | "
              f"{mb / ma:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
