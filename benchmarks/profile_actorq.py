"""Where actorq spends its time on W1 (fsync and os) and W3: py-spy samples, summarised.

    python benchmarks/profile_actorq.py [--n 20000] [--pending 100000] [--out benchmarks/PROFILE.md]

Needs ``py-spy`` (``pip install py-spy``; it must be allowed to ptrace its child, as root in a
container usually is). Each case runs under ``py-spy record --format raw`` (on-CPU samples of
every thread), and the report lists, per case, the functions with the most *self* time (the
frame on top of the stack) and the actorq functions with the most *inclusive* time, each with
the hottest line. Percentages are of all on-CPU samples of the process.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import BENCH_DIR, ROOT, actorq_revision, rmtree, work_dir  # noqa: E402

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


def record(name: str, module: str, function: str, params: dict, rate: int = 500) -> Path:
    out = work_dir("prof") / f"{name}.raw"
    cmd = [py_spy(), "record", "--format", "raw", "--rate", str(rate), "--nonblocking",
           "--threads", "-o", str(out), "--",
           sys.executable, str(BENCH_DIR / "_case.py"), module, function, json.dumps(params)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(BENCH_DIR))
    result = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    shown = result[-1][:160] if result else proc.stderr[-300:]
    print(f"  {name}: {time.monotonic() - t0:.1f}s {shown}", flush=True)
    return out


def short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3.", str(ROOT) + "/"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker.startswith("lib/python3.") else tail
    return path


def parse(raw: Path) -> tuple[int, dict, dict, dict, dict]:
    """(total samples, self counts, inclusive counts, hottest lines, samples per thread);
    functions are keyed (func, file)."""
    total = 0
    self_c: collections.Counter = collections.Counter()
    incl_c: collections.Counter = collections.Counter()
    lines: dict = collections.defaultdict(collections.Counter)
    threads: collections.Counter = collections.Counter()
    for row in raw.read_text().splitlines():
        stack, _, count_s = row.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        frames = stack.split(";")
        thread = frames[0] if frames[0].startswith("thread ") or frames[0].startswith("process ") \
            else "?"
        frames = [f for f in frames if not (f.startswith("thread ") or f.startswith("process "))]
        if not frames:
            continue
        total += count
        threads[thread] += count
        seen = set()
        for depth, frame in enumerate(frames):
            m = FRAME.match(frame)
            key = (m["func"], short(m["file"])) if m else (frame, "?")
            line = m["line"] if m and m["line"] else "?"
            if key not in seen:
                incl_c[key] += count
                seen.add(key)
            if depth == len(frames) - 1:
                self_c[key] += count
                lines[key][line] += count
    return total, self_c, incl_c, lines, threads


def table(title: str, counter: collections.Counter, other: collections.Counter, lines: dict,
          total: int, keep, top: int, first: str, second: str) -> list[str]:
    out = [f"**{title}**", "", f"| function | file:line (hottest) | {first} | {second} |",
           "| --- | --- | ---: | ---: |"]
    rows = [(k, v) for k, v in counter.most_common() if keep(k)][:top]
    for (func, file), v in rows:
        hot = lines.get((func, file))
        line = hot.most_common(1)[0][0] if hot else "?"
        out.append(f"| `{func}` | `{file}:{line}` | {100 * v / total:.1f}% | "
                   f"{100 * other.get((func, file), 0) / total:.1f}% |")
    out.append("")
    return out


def summarise(name: str, what: str, raw: Path, top: int = 15) -> list[str]:
    total, self_c, incl_c, lines, threads = parse(raw)
    by_tid: collections.Counter = collections.Counter()
    names: dict[str, str] = {}
    for label, count in threads.items():
        m = re.match(r"thread \((\w+)\)(?::\s*(.*))?", label)
        tid = m[1] if m else label
        by_tid[tid] += count
        if m and m[2]:
            names[tid] = m[2].split(" from ")[0]
    md = [f"### {name}", "", what, "",
          f"{total:,} on-CPU samples; per thread: " +
          ", ".join(f"{names.get(t, 'thread ' + t)} {100 * c / max(total, 1):.0f}%"
                    for t, c in by_tid.most_common(4)), ""]
    # hottest line of an inclusive frame: take the line the frame was at
    incl_lines: dict = collections.defaultdict(collections.Counter)
    for row in raw.read_text().splitlines():
        stack, _, count_s = row.rpartition(" ")
        for frame in stack.split(";"):
            m = FRAME.match(frame)
            if m:
                incl_lines[(m["func"], short(m["file"]))][m["line"] or "?"] += int(count_s)
    md += table("Top self time (all code)", self_c, incl_c, lines, total, lambda k: True, top,
                "self", "inclusive")
    md += table("Top inclusive time (actorq code)", incl_c, self_c, incl_lines, total,
                lambda k: k[1].startswith("actorq/"), top, "inclusive", "self")
    return md


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000, help="W1 jobs")
    ap.add_argument("--pending", type=int, default=100_000, help="W3 backlog")
    ap.add_argument("--out", default=str(BENCH_DIR / "PROFILE.md"))
    args = ap.parse_args()
    if py_spy() is None:
        print("py-spy is not installed: pip install py-spy")
        return 1
    md = ["# actorq profile (py-spy, on-CPU samples of every thread)", "",
          "Generated by `python benchmarks/profile_actorq.py`. *self* = samples with the "
          "function on top of the stack; *inclusive* = samples with it anywhere on the stack; "
          "both as % of all on-CPU samples of the process (the event loop thread and LMDB's "
          f"commit thread together). actorq under test: git {actorq_revision()}.", ""]
    cases = []
    print("profiling W1 fsync", flush=True)
    raw = record("w1_fsync", "bench_actorq", "w1_run",
                 {"mode": "fsync", "variant": "concurrent", "n": args.n, "consume": True})
    cases.append(("W1 fsync, 100 producers, concurrency 100",
                  f"{args.n:,} no-op jobs, enqueue + process until all complete.", raw))
    print("profiling W1 os", flush=True)
    raw = record("w1_os", "bench_actorq", "w1_run",
                 {"mode": "os", "variant": "concurrent", "n": args.n, "consume": True})
    cases.append(("W1 os, 100 producers, concurrency 100",
                  "Same, without fsync: pure CPU cost per job.", raw))
    path = work_dir("prof-w3")
    try:
        print(f"building W3 journal ({args.pending:,} pending)", flush=True)
        subprocess.run([sys.executable, str(BENCH_DIR / "_case.py"), "bench_actorq", "w3_build",
                        json.dumps({"path": str(path), "n": args.pending})], check=True,
                       capture_output=True, cwd=str(BENCH_DIR))
        print("profiling W3 open", flush=True)
        raw = record("w3_open", "bench_actorq", "w3_open", {"path": str(path)})
        cases.append((f"W3 open + spawn_queue, {args.pending:,} pending",
                      "Fresh process: imports, open_runtime, spawn_queue (loads every pending "
                      "job), first job started.", raw))
    finally:
        rmtree(path)
    for name, what, raw in cases:
        md += summarise(name, what, raw)
        rmtree(raw.parent)
    Path(args.out).write_text("\n".join(md) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
