"""actorq against the task queues a user would pick instead, same workloads, same run.

    python benchmarks/run.py [--quick] [--only SYSTEM,...] [--skip-workloads W3,W4] [--out FILE]

Prints a table per workload and writes benchmarks/RESULTS.md (``--out`` to change). Every case
runs in a fresh interpreter (``_case.py``); PostgreSQL and redis-server are started here, on
127.0.0.1 in temp dirs, and stopped at the end. A peer whose package or server is missing is
skipped with a message. ``ACTORQ_BENCH_TMP`` picks the directory the journals and databases
live in (default: /tmp, i.e. the machine's disk here).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import Postgres, Redis, ServerUnavailable  # noqa: E402
from _util import BENCH_DIR, actorq_revision, latency_summary, rmtree, work_dir  # noqa: E402

PY = sys.executable


# ---------------------------------------------------------------------------------------------
# Systems


@dataclass
class System:
    key: str  # row label
    module: str
    params: dict[str, Any]
    durability: str
    consumer: str
    ref: str  # the actorq row its ratios are taken against
    needs: tuple[str, ...] = ()  # importable packages
    server: str | None = None  # "pg" | "redis"
    fast: bool = False  # actorq and the ceiling: full-size runs
    w3: bool = True
    skip: str | None = None
    versions: dict[str, str] = field(default_factory=dict)


SYSTEMS = [
    System("actorq fsync", "bench_actorq", {"mode": "fsync"},
           'durability="fsync": LMDB sync+metasync, group commit in a writer thread',
           "in-process trio queue, concurrency=100", "actorq fsync", fast=True),
    System("actorq os", "bench_actorq", {"mode": "os"},
           'durability="os": LMDB commit without fsync (survives a process crash, not an OS crash)',
           "in-process trio queue, concurrency=100", "actorq os", fast=True, w3=False),
    System("ceiling fsync", "bench_ceiling", {"mode": "fsync"},
           "trio + LMDB sync+metasync, group commit, no queue logic",
           "in-process trio tasks, 100", "actorq fsync", fast=True, w3=False),
    System("ceiling os", "bench_ceiling", {"mode": "os"},
           "trio + LMDB without fsync, no queue logic",
           "in-process trio tasks, 100", "actorq os", fast=True, w3=False),
    System("huey", "bench_huey", {},
           "SqliteStorage(fsync=True): WAL, synchronous=FULL; results stored",
           "huey threaded consumer, 32 workers (W2: 1), in-process; poll 1 ms..50 ms",
           "actorq fsync", needs=("huey",)),
    System("persist-queue", "bench_persistqueue", {},
           "SQLiteAckQueue: WAL, synchronous=FULL (forced); put/get/ack each commit",
           "32 threads get()->ack() (W2: 1)", "actorq fsync", needs=("persistqueue",)),
    System("litequeue", "bench_litequeue", {},
           "WAL, synchronous=FULL (forced over its NORMAL); put/pop/done each commit",
           "32 threads pop()->done(), 1 ms poll when empty (W2: 1)", "actorq fsync",
           needs=("litequeue",)),
    System("procrastinate", "bench_procrastinate", {},
           "PostgreSQL 127.0.0.1, fsync=on, synchronous_commit=on (defaults)",
           "in-process async worker, concurrency=100 (W2: 1), LISTEN/NOTIFY, pool 10-20",
           "actorq fsync", needs=("procrastinate", "psycopg"), server="pg"),
    System("saq", "bench_saq", {},
           "redis-server 127.0.0.1, appendonly yes, appendfsync always",
           "in-process saq Worker, concurrency=100 (W2: 1)", "actorq fsync",
           needs=("saq", "redis"), server="redis"),
]

DISTS = ["actorq", "trio", "lmdb", "attrs", "cattrs", "msgpack", "huey", "persist-queue",
         "litequeue", "procrastinate", "psycopg", "psycopg-binary", "saq", "redis",
         "py-spy"]

SIZES = {
    "quick": {
        "w1_n_fast": 5000, "w1_n_peer": 300, "w1_seq_durable": 100, "w1_seq_os": 2000,
        "w2_n": {"fast": 200, "peer": 100}, "w2_warmup": 10, "w2_slices": 2,
        "w3_actorq": [10_000, 100_000], "w3_peer": [10_000],
        "w4_total": 100_000, "w4_every": 10_000,
        "reps": 1, "cheap_s": 0.0,
    },
    "full": {
        "w1_n_fast": 20_000, "w1_n_peer": 3000, "w1_seq_durable": 1000, "w1_seq_os": 20_000,
        "w2_n": {"fast": 10_000, "peer": 1000}, "w2_warmup": 20, "w2_slices": 5,
        "w3_actorq": [100_000, 1_000_000], "w3_peer": [100_000],
        "w4_total": 1_000_000, "w4_every": 100_000,
        "reps": 3, "cheap_s": 12.0,
    },
}

LOAD: dict[str, str] = {"start": "?"}
PROBES: dict[str, str] = {}
LMDB_COMMIT: dict[str, float] = {}  # a bare durable LMDB commit, measured right before W2

TARGETS = {
    "w1_fsync_e2e": 30_000,
    "w2_p50_ms": 0.35, "w2_p99_ms": 0.8, "w2_max_ms": 5.0,
    "w3_first_ms": 50.0, "w3_ready_100k_ms": 300.0,
    "w4_rss_per_job": 300.0,
}


# ---------------------------------------------------------------------------------------------
# Running cases


T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:5.0f}s] {msg}", flush=True)


def run_case(module: str, function: str, params: dict[str, Any], timeout: float = 1200
             ) -> tuple[dict[str, Any], float]:
    t0 = time.monotonic()
    os.sync()  # the previous case's dirty pages must not be flushed during this one
    if time.monotonic() - t0 > 2:
        log(f"  (sync before {module}.{function} took {time.monotonic() - t0:.1f}s)")
    t0 = time.monotonic()
    cmd = [PY, str(BENCH_DIR / "_case.py"), module, function, json.dumps(params)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              cwd=str(BENCH_DIR))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}, time.monotonic() - t0
    wall = time.monotonic() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"no result (exit {proc.returncode}): {' | '.join(tail)}"}, wall
    out = json.loads(lines[-1][len("RESULT "):])
    if "error" in out:
        tail = proc.stderr.strip().splitlines()[-1:] if proc.stderr else []
        out["error"] += (" | " + tail[0]) if tail and tail[0] not in out["error"] else ""
    return out, wall


def median_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per numeric key, the median over repetitions; other keys from the first."""
    if len(results) == 1:
        return dict(results[0], reps=1)
    out: dict[str, Any] = dict(results[0])
    for key, value in results[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [r[key] for r in results if isinstance(r.get(key), (int, float))]
            out[key] = statistics.median(values)
    out["reps"] = len(results)
    return out


def summarise(r: dict[str, Any]) -> str:
    parts = []
    for key in ("e2e_rate", "enqueue_rate", "p50_ms", "p99_ms", "max_ms", "ready_s",
                "first_start_s"):
        if key in r:
            v = r[key]
            parts.append(f"{key}={v:,.0f}" if "rate" in key else f"{key}={v:.4g}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# Workloads


def probe(name: str) -> None:
    PROBES[name] = fsync_probe().replace("fdatasync after a 4 KiB write: ", "")
    log(f"  disk before {name}: {PROBES[name]}")
    if name == "W2":
        LMDB_COMMIT.update(lmdb_commit_probe())
        log(f"  a bare durable LMDB commit before W2: p50 {LMDB_COMMIT['p50_ms']:.3f} ms, "
            f"p99 {LMDB_COMMIT['p99_ms']:.3f} ms")


def workload_w1(systems: list[System], sizes: dict[str, Any]) -> dict[str, Any]:
    """Pass 1 runs every (system, variant) once; passes 2..reps re-run the cheap ones, so the
    repetitions of one system are spread over the whole workload (the disk's speed moves)."""
    log("W1 durable throughput")
    probe("W1")
    cases = []
    for sys_ in systems:
        if sys_.skip:
            continue
        durable = sys_.params.get("mode", "fsync") == "fsync"
        n_par = sizes["w1_n_fast"] if sys_.fast else sizes["w1_n_peer"]
        n_seq = sizes["w1_seq_durable"] if durable else sizes["w1_seq_os"]
        for variant, n in (("concurrent", n_par), ("sequential", n_seq), ("batch", n_par)):
            params = dict(sys_.params, variant=variant, n=n, **sys_.versions.get("_url", {}))
            cases.append(((sys_.key, variant), sys_.module, params))
    runs: dict[Any, list[dict[str, Any]]] = {}
    cheap: set[Any] = set()
    for rep in range(sizes["reps"]):
        for key, module, params in cases:
            if rep and key not in cheap:
                continue
            r, wall = run_case(module, "w1", params)
            if "error" in r or "skipped" in r:
                if rep == 0:
                    runs[key] = [r]
                    log(f"  {key[0]} {key[1]}: {r.get('error') or r.get('skipped')}")
                cheap.discard(key)
                continue
            runs.setdefault(key, []).append(r)
            if rep == 0 and wall < sizes["cheap_s"]:
                cheap.add(key)
            log(f"  {key[0]} {key[1]} (pass {rep + 1}): {summarise(r)}  ({wall:.1f}s)")
    out = {}
    for key, results in runs.items():
        bad = [r for r in results if "error" in r or "skipped" in r]
        out[key] = bad[0] if bad else median_of(results)
    return out


def workload_w2(systems: list[System], sizes: dict[str, Any]) -> dict[str, Any]:
    """Every system's samples are taken in ``w2_slices`` slices, round-robin over the systems,
    so each system sees the same spread of disk states; percentiles over all its samples."""
    log("W2 latency (idle queue, enqueue -> handler start)")
    probe("W2")
    slices = sizes["w2_slices"]
    samples: dict[str, list[float]] = {}
    failed: dict[str, dict[str, Any]] = {}
    for k in range(slices):
        for sys_ in systems:
            if sys_.skip or sys_.key in failed:
                continue
            fast = sys_.module == "bench_actorq" or sys_.key == "ceiling os"
            n = sizes["w2_n"]["fast" if fast else "peer"] // slices
            params = dict(sys_.params, n=n, warmup=sizes["w2_warmup"],
                          **sys_.versions.get("_url", {}))
            r, wall = run_case(sys_.module, "w2", params)
            if "error" in r:
                failed[sys_.key] = r
                log(f"  {sys_.key}: {r['error']}")
                continue
            samples.setdefault(sys_.key, []).extend(r["samples_ms"])
            log(f"  {sys_.key} (slice {k + 1}/{slices}): {summarise(r)}  ({wall:.1f}s)")
    out: dict[str, Any] = dict(failed)
    for key, xs in samples.items():
        r = latency_summary([x / 1e3 for x in xs])
        r.pop("samples_ms")
        r["slices"] = slices
        out[key] = r
    return out


def workload_w3_w4(systems: list[System], sizes: dict[str, Any], servers: dict[str, Any]
                   ) -> dict[str, Any]:
    log("W3 recovery / W4 memory and journal size")
    probe("W3/W4")
    out: dict[str, Any] = {"actorq": {}, "peers": {}}
    # actorq: an empty journal first (the RSS baseline), then each backlog.
    for n in [0, *sizes["w3_actorq"]]:
        path = work_dir("w3-actorq")
        try:
            build, _ = run_case("bench_actorq", "w3_build", {"path": str(path), "n": n})
            os.sync()  # the opens time recovery, not the flush of what the build left dirty
            if "error" in build:
                log(f"  actorq build {n}: {build['error']}")
                out["actorq"][n] = build
                continue
            opens = []
            for _ in range(sizes["reps"]):
                r, _w = run_case("bench_actorq", "w3_open", {"path": str(path)})
                if "error" in r:
                    log(f"  actorq open {n}: {r['error']}")
                    break
                opens.append(r)
            if not opens:
                out["actorq"][n] = {"error": "open failed"}
                continue
            med = median_of([{k: v for k, v in o.items() if not isinstance(v, dict)}
                             for o in opens])
            med["rss_after"] = opens[0]["rss_after"]
            med["rss_hwm_max"] = max(o["rss_after"]["VmHWM"] for o in opens)
            med["rss_anon_max"] = max(o["rss_after"]["RssAnon"] for o in opens)
            med.update(build)
            out["actorq"][n] = med
            log(f"  actorq n={n:,}: build {build.get('build_s', 0):.1f}s, "
                f"{build.get('bytes_per_job', 0):.0f} B/job; open->ready "
                f"{med['ready_s'] * 1e3:.1f} ms, open->first start "
                f"{med['first_start_s'] * 1e3:.1f} ms, VmHWM {med['rss_hwm_max'] / 2**20:.0f} MiB"
                f" ({len(opens)} open(s))")
        finally:
            rmtree(path)
    # peers at their backlog size
    for sys_ in systems:
        if sys_.skip or not sys_.w3 or sys_.module == "bench_actorq":
            continue
        for n in sizes["w3_peer"]:
            path = work_dir("w3-peer")
            url = sys_.versions.get("_url", {})
            extra: dict[str, Any] = dict(url)
            if sys_.server == "pg":
                extra["db"] = f"w3_{n}"
            elif sys_.server is None:
                extra["path"] = str(path)
            try:
                build, _ = run_case(sys_.module, "w3_build", dict(extra, n=n))
                os.sync()
                if "error" in build:
                    log(f"  {sys_.key} build {n}: {build['error']}")
                    out["peers"][(sys_.key, n)] = build
                    continue
                opens = []
                for _ in range(sizes["reps"]):
                    r, _w = run_case(sys_.module, "w3_open", extra)
                    if "error" in r:
                        log(f"  {sys_.key} open {n}: {r['error']}")
                        break
                    opens.append(r)
                if not opens:
                    out["peers"][(sys_.key, n)] = {"error": "open failed"}
                    continue
                med = median_of([{k: v for k, v in o.items() if not isinstance(v, dict)}
                                 for o in opens])
                med["rss_delta"] = max(o["rss_after"]["VmHWM"] - o["rss_before_open"]["VmHWM"]
                                       for o in opens)
                med.update(build)
                out["peers"][(sys_.key, n)] = med
                log(f"  {sys_.key} n={n:,}: open->ready {med['ready_s'] * 1e3:.1f} ms, "
                    f"open->first start {med['first_start_s'] * 1e3:.1f} ms")
            finally:
                if sys_.server == "pg":
                    run_case(sys_.module, "drop", dict(extra))
                rmtree(path)
    # W4: retention under steady load
    total, every = sizes["w4_total"], sizes["w4_every"]
    r, wall = run_case("bench_actorq", "w4_retention",
                       {"n_total": total, "sample_every": every}, timeout=3600)
    out["retention"] = r
    if "error" in r:
        log(f"  retention: {r['error']}")
    else:
        sizes_mib = ", ".join(f"{s['data_mdb_bytes'] / 2**20:.0f}" for s in r["samples"])
        log(f"  retention ({total:,} jobs, {wall:.0f}s): data.mdb MiB every {every:,}: "
            f"{sizes_mib}")
    return out


# ---------------------------------------------------------------------------------------------
# Report


def fmt_rate(v: Any) -> str:
    return "-" if not isinstance(v, (int, float)) else f"{v:,.0f}"


def fmt_ms(v: Any) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:,.0f}"


def ratio(v: Any, ref: Any) -> str:
    if not isinstance(v, (int, float)) or not isinstance(ref, (int, float)) or ref == 0:
        return "-"
    return f"{v / ref:.2f}x"


def machine_info() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": str(os.cpu_count()), "ram": mem, "kernel": platform.release(),
        "python": platform.python_version(), "os": platform.platform(),
        "fsync": fsync_probe(),
    }


def fsync_probe() -> str:
    """fdatasync of a 4 KiB overwrite, 100 times, on the benchmark disk."""
    d = work_dir("fsync")
    try:
        fd = os.open(d / "probe", os.O_RDWR | os.O_CREAT)
        os.pwrite(fd, b"\0" * 65536, 0)
        os.fsync(fd)
        ts = []
        for i in range(100):
            os.pwrite(fd, b"x" * 4096, (i % 16) * 4096)
            t = time.perf_counter()
            os.fdatasync(fd)
            ts.append(time.perf_counter() - t)
        os.close(fd)
        ts.sort()
        return (f"fdatasync after a 4 KiB write: p50 {ts[50] * 1e3:.2f} ms, "
                f"p99 {ts[98] * 1e3:.2f} ms")
    finally:
        rmtree(d)


def lmdb_commit_probe(n: int = 500) -> dict[str, float]:
    """The floor under a durable commit on this disk: one small put per write transaction,
    LMDB opened as actorq's "fsync" mode opens it (sync and metasync: two fdatasync calls per
    commit, the data pages' and then the meta page's), nothing else; no event loop, no thread.
    Interleaved with the same commit without the meta page's flush (metasync off, which may
    lose the last commit in a power cut, so actorq does not use it), to show what each of the
    two flushes costs."""
    import lmdb  # a dependency of actorq

    d = work_dir("lmdb-probe")
    try:
        envs = [lmdb.open(str(d / name), map_size=1 << 26, sync=True, metasync=meta,
                          readahead=False, subdir=True)
                for name, meta in (("durable", True), ("data-only", False))]
        times: list[list[float]] = [[], []]
        for i in range(n):
            for k in (0, 1) if i % 2 else (1, 0):
                t = time.perf_counter()
                with envs[k].begin(write=True) as txn:
                    txn.put(b"%016x" % i, b"x" * 100)
                times[k].append(time.perf_counter() - t)
        for env in envs:
            env.close()
        durable, data_only = (sorted(ts) for ts in times)
        return {"p50_ms": statistics.median(durable) * 1e3,
                "p99_ms": durable[int(n * 0.99) - 1] * 1e3,
                "one_flush_p50_ms": statistics.median(data_only) * 1e3}
    finally:
        rmtree(d)


def versions() -> dict[str, str]:
    out = {}
    for dist in DISTS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def hit(ok: bool | None) -> str:
    return "n/a" if ok is None else "HIT" if ok else "MISS"


def build_report(mode: str, sizes: dict[str, Any], systems: list[System], w1: dict[str, Any],
                 w2: dict[str, Any], w34: dict[str, Any] | None, servers: dict[str, str],
                 started: float) -> tuple[str, str]:
    """(markdown for RESULTS.md, plain text for the terminal)."""
    m = machine_info()
    vers = versions()
    md: list[str] = []
    txt: list[str] = []
    add = md.append

    add(f"# actorq benchmarks ({mode} mode)")
    add("")
    add(f"Generated by `python benchmarks/run.py{' --quick' if mode == 'quick' else ''}` on "
        f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')} in {time.monotonic() - started:.0f} s. "
        f"Every number below was measured in this one run, side by side.")
    add("")
    add("## Machine")
    add("")
    add(f"- CPU: {m['cpu']}, {m['cores']} cores; RAM {m['ram']}")
    add(f"- Kernel {m['kernel']} ({m['os']}); Python {m['python']}")
    add(f"- Disk at the end of the run: {m['fsync']}; before each workload: "
        + "; ".join(f"{k}: {v}" for k, v in PROBES.items())
        + ". This is the floor under every durable number here, and it moves (shared VM disk).")
    if LMDB_COMMIT:
        add(f"- A bare durable LMDB commit (one small put, sync and metasync, no event loop), "
            f"right before W2: p50 {LMDB_COMMIT['p50_ms']:.3f} ms, "
            f"p99 {LMDB_COMMIT['p99_ms']:.3f} ms: the floor under actorq's W2 fsync latency. "
            f"It is two flushes: the same commit without the meta page's flush took "
            f"p50 {LMDB_COMMIT['one_flush_p50_ms']:.3f} ms, measured interleaved with it.")
    add(f"- Load average (1 min) at start / end of the run: {LOAD['start']} / "
        f"{os.getloadavg()[0]:.2f}. This machine is shared: other work running at the same "
        f"time shows up as noise, more in the slow peers' long runs than in the short ones.")
    for name, version in servers.items():
        add(f"- {name}: {version}")
    add("")
    add("## Package versions")
    add("")
    add(", ".join(f"{k} {v}" for k, v in vers.items()))
    add("")
    add(f"actorq under test: git {actorq_revision()}.")
    add("")
    add("## Systems and their durability")
    add("")
    add("| system | durability (most durable realistic mode) | consumer |")
    add("| --- | --- | --- |")
    for s in systems:
        add(f"| {s.key} | {s.durability} | {s.skip and ('SKIPPED: ' + s.skip) or s.consumer} |")
    add("")
    add("## Method")
    add("")
    reps_text = (
        "quick mode runs every case once, W2 in two slices (round-robin over the systems)."
        if sizes["reps"] == 1 else
        f"W1: every case runs once in a first pass over all systems; a case whose run took "
        f"under {sizes['cheap_s']:.0f} s runs again in passes 2..{sizes['reps']}, and every "
        f"number is the median of its runs (the passes spread each system's runs over the "
        f"whole workload, since the disk's speed moves). W2: each system's samples are taken "
        f"in {sizes['w2_slices']} slices, round-robin over the systems, and the percentiles "
        f"are over all its samples. W3: median of {sizes['reps']} opens.")
    add(METHOD.format(**{k: (f"{v:,}" if isinstance(v, int) else v) for k, v in sizes.items()
                         if not isinstance(v, (dict, list))}, reps_text=reps_text,
                      w2_fast=f"{sizes['w2_n']['fast']:,}", w2_peer=f"{sizes['w2_n']['peer']:,}",
                      w3_actorq=", ".join(f"{n:,}" for n in sizes["w3_actorq"]),
                      w3_peer=", ".join(f"{n:,}" for n in sizes["w3_peer"])))
    add("")

    # ---- W1
    add("## W1: durable throughput (jobs/s)")
    add("")
    add("Ratio = system / actorq in the same durability class (peers and `ceiling fsync` vs "
        "`actorq fsync`; `ceiling os` vs `actorq os`); > 1 means faster than actorq.")
    add("")
    head = ("| system | variant | jobs | end-to-end | ratio | enqueue-only | ratio | "
            "enqueue while consuming |")
    add(head)
    add("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    txt.append("W1 durable throughput (jobs/s; ratio = system / actorq, same durability class)")
    txt.append(f"{'system':<15} {'variant':<11} {'jobs':>6} {'e2e':>9} {'ratio':>7} "
               f"{'enq-only':>9} {'ratio':>7}")
    for s in systems:
        for variant in ("concurrent", "sequential", "batch"):
            r = w1.get((s.key, variant))
            if r is None:
                continue
            ref = w1.get((s.ref, variant), {})
            if "error" in r or "skipped" in r:
                note = r.get("skipped") or ("ERROR: " + r["error"])
                add(f"| {s.key} | {variant} | | {note} | | | | |")
                txt.append(f"{s.key:<15} {variant:<11} {note[:70]}")
                continue
            add(f"| {s.key} | {variant} | {r['n']:,} | {fmt_rate(r.get('e2e_rate'))} | "
                f"{ratio(r.get('e2e_rate'), ref.get('e2e_rate'))} | "
                f"{fmt_rate(r.get('enqueue_rate'))} | "
                f"{ratio(r.get('enqueue_rate'), ref.get('enqueue_rate'))} | "
                f"{fmt_rate(r.get('enqueue_under_load_rate'))} |")
            txt.append(f"{s.key:<15} {variant:<11} {r['n']:>6} {fmt_rate(r.get('e2e_rate')):>9} "
                       f"{ratio(r.get('e2e_rate'), ref.get('e2e_rate')):>7} "
                       f"{fmt_rate(r.get('enqueue_rate')):>9} "
                       f"{ratio(r.get('enqueue_rate'), ref.get('enqueue_rate')):>7}")
    add("")

    # ---- W2
    add("## W2: latency, idle queue, enqueue -> handler start (ms)")
    add("")
    add("Ratio = system / actorq (same durability class); < 1 means lower latency than actorq.")
    add("")
    add("| system | samples | p50 | ratio | p99 | ratio | max | ratio | mean |")
    add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    txt.append("")
    txt.append("W2 latency, idle queue, enqueue -> handler start (ms; ratio = system / actorq)")
    txt.append(f"{'system':<15} {'n':>6} {'p50':>8} {'ratio':>7} {'p99':>8} {'ratio':>7} "
               f"{'max':>8} {'ratio':>7}")
    for s in systems:
        r = w2.get(s.key)
        if r is None:
            continue
        ref = w2.get(s.ref, {})
        if "error" in r:
            add(f"| {s.key} | | ERROR: {r['error']} | | | | | | |")
            txt.append(f"{s.key:<15} ERROR: {r['error'][:70]}")
            continue
        cells = []
        for key in ("p50_ms", "p99_ms", "max_ms"):
            cells += [fmt_ms(r[key]), ratio(r[key], ref.get(key))]
        add(f"| {s.key} | {r['n']:,} | " + " | ".join(cells) + f" | {fmt_ms(r['mean_ms'])} |")
        txt.append(f"{s.key:<15} {r['n']:>6} " + " ".join(
            f"{c:>8}" if i % 2 == 0 else f"{c:>7}" for i, c in enumerate(cells)))
    add("")

    # ---- W3 / W4
    if w34 is not None:
        aq = w34["actorq"]
        base = aq.get(0, {})
        add("## W3: recovery (fresh process, journal of N pending jobs)")
        add("")
        add("`ready` = open -> the queue serves its whole backlog (actorq: `spawn_queue` "
            "returned: the whole backlog counted, the head of its ready index read into the "
            "in-memory window, the rest read in as it drains; the peers load nothing up front, "
            "so it is their open/connect time); `first start` = open -> the first handler "
            "started. Ratio = peer / actorq at the same N.")
        add("")
        add("| system | N | build (s) | ready (ms) | ratio | first start (ms) | ratio |")
        add("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        txt.append("")
        txt.append("W3 recovery (fresh process; ms from open; ratio = peer / actorq at same N)")
        txt.append(f"{'system':<15} {'N':>9} {'ready':>9} {'ratio':>7} {'first':>9} {'ratio':>7}")
        rows = [("actorq fsync", n, aq[n]) for n in sizes["w3_actorq"] if n in aq]
        rows += [(key, n, r) for (key, n), r in w34["peers"].items()]
        for key, n, r in rows:
            ref = aq.get(n, {}) if key != "actorq fsync" else {}
            if "error" in r:
                add(f"| {key} | {n:,} | ERROR: {r['error']} | | | | |")
                txt.append(f"{key:<15} {n:>9,} ERROR: {r['error'][:60]}")
                continue
            ready, first = r["ready_s"] * 1e3, r["first_start_s"] * 1e3
            rr = ratio(ready, ref.get("ready_s", 0) * 1e3) if ref else "1.00x"
            rf = ratio(first, ref.get("first_start_s", 0) * 1e3) if ref else "1.00x"
            add(f"| {key} | {n:,} | {r.get('build_s', float('nan')):.1f} | {fmt_ms(ready)} | {rr} "
                f"| {fmt_ms(first)} | {rf} |")
            txt.append(f"{key:<15} {n:>9,} {fmt_ms(ready):>9} {rr:>7} {fmt_ms(first):>9} {rf:>7}")
        add("")
        add("## W4: memory per pending job and journal size")
        add("")
        add("actorq: RSS of a fresh process after open + spawn_queue with N pending, minus the "
            "same on an empty journal (VmHWM = peak RSS, file-backed LMDB pages included; "
            "RssAnon = Python heap only). Peers hold pending jobs on disk / in their server, "
            "so their client RSS delta is an upper bound on the per-job client cost.")
        add("")
        add("| system | N | peak RSS delta / job (B) | anon RSS delta / job (B) | "
            "storage bytes / job | storage |")
        add("| --- | ---: | ---: | ---: | ---: | --- |")
        txt.append("")
        txt.append("W4 memory and size (bytes per pending job)")
        txt.append(f"{'system':<15} {'N':>9} {'peakRSS/job':>12} {'anonRSS/job':>12} "
                   f"{'storage/job':>12}")
        for n in sizes["w3_actorq"]:
            r = aq.get(n)
            if not r or "error" in r or not base or "error" in base:
                continue
            hwm = (r["rss_hwm_max"] - base["rss_hwm_max"]) / n
            anon = (r["rss_anon_max"] - base["rss_anon_max"]) / n
            add(f"| actorq fsync | {n:,} | {hwm:,.0f} | {anon:,.0f} | "
                f"{r['bytes_per_job']:,.0f} | data.mdb {r['data_mdb_bytes'] / 2**20:,.0f} MiB |")
            txt.append(f"{'actorq fsync':<15} {n:>9,} {hwm:>12,.0f} {anon:>12,.0f} "
                       f"{r['bytes_per_job']:>12,.0f}")
        for (key, n), r in w34["peers"].items():
            if "error" in r:
                continue
            per = r["rss_delta"] / n
            if "server_ram_per_job" in r:
                storage, what = r["server_ram_per_job"], "redis used_memory (RAM, server side)"
            else:
                storage, what = r["bytes_per_job"], "database file(s) / relation size"
            add(f"| {key} | {n:,} | <= {per:,.0f} | | {storage:,.0f} | {what} |")
            txt.append(f"{key:<15} {n:>9,} {'<=' + format(per, ',.0f'):>12} {'':>12} "
                       f"{storage:>12,.0f}")
        add("")
        ret = w34.get("retention", {})
        add(f"### Journal size under steady load, default `Retention()` (max_count=100,000, "
            f"max_age=7 days), {sizes['w4_total']:,} no-op jobs completed (\"os\" mode)")
        add("")
        txt.append("")
        if "error" in ret:
            add(f"ERROR: {ret['error']}")
            txt.append(f"W4 retention: ERROR {ret['error']}")
            bounded = None
        else:
            add("| jobs completed | data.mdb (MiB) | finished jobs held | elapsed (s) |")
            add("| ---: | ---: | ---: | ---: |")
            for smp in ret["samples"]:
                add(f"| {smp['completed_total']:,} | {smp['data_mdb_bytes'] / 2**20:,.1f} | "
                    f"{smp['held_finished']:,} | {smp['elapsed_s']:.1f} |")
            szs = [smp["data_mdb_bytes"] for smp in ret["samples"]]
            txt.append("W4 journal size (MiB) every " + f"{sizes['w4_every']:,} completions: "
                       + ", ".join(f"{x / 2**20:.0f}" for x in szs))
            past = [smp for smp in ret["samples"] if smp["completed_total"] > 100_000]
            if len(past) >= 2:
                growth = (past[-1]["data_mdb_bytes"] - past[0]["data_mdb_bytes"]) / \
                    max(past[0]["data_mdb_bytes"], 1)
                bounded = growth <= 0.10
                add("")
                add(f"Growth after retention engaged (> 100,000 completed): {growth * 100:+.1f}% "
                    f"from {past[0]['completed_total']:,} to {past[-1]['completed_total']:,}.")
            else:
                bounded = None
                add("")
                add("Retention keeps the newest 100,000 finished jobs: with this many completions "
                    "it has not engaged yet, so boundedness is not evaluable in this mode "
                    "(the full run completes 1,000,000).")
        add("")
    else:
        bounded = None

    # ---- Targets
    add("## Targets (actorq, measured in this run)")
    add("")
    add("| target | measured | result |")
    add("| --- | --- | --- |")
    txt.append("")
    txt.append("Targets")
    targets: list[tuple[str, str, bool | None]] = []
    r = w1.get(("actorq fsync", "concurrent"), {})
    v = r.get("e2e_rate")
    c = w1.get(("ceiling fsync", "concurrent"), {}).get("e2e_rate")
    targets.append(("W1 fsync end-to-end >= 30,000 jobs/s (100 producers)",
                    f"{fmt_rate(v)} jobs/s (ceiling on this disk: {fmt_rate(c)})",
                    None if v is None else v >= TARGETS["w1_fsync_e2e"]))
    # The issue set 30,000 as half of the ceiling it measured then (~58,000); the ceiling moves
    # with the machine, so the same yardstick is also given against this run's ceiling.
    targets.append(("W1 fsync end-to-end >= half of this run's ceiling (the basis of the "
                    "30,000 target)",
                    "n/a" if v is None or not c else
                    f"{fmt_rate(v)} jobs/s = {100 * v / c:.0f}% of {fmt_rate(c)}",
                    None if v is None or not c else v >= c / 2))
    r2 = w2.get("actorq fsync", {})
    for key, name in (("p50_ms", "p50 <= 0.35 ms"), ("p99_ms", "p99 <= 0.8 ms"),
                      ("max_ms", "max <= 5 ms")):
        v = r2.get(key)
        cv = w2.get("ceiling fsync", {}).get(key)
        floor = LMDB_COMMIT.get(key) if key != "max_ms" else None
        targets.append((f"W2 fsync {name}", f"{fmt_ms(v)} ms (ceiling: {fmt_ms(cv)} ms"
                        + (f"; a bare durable LMDB commit: {fmt_ms(floor)} ms)" if floor else ")"),
                        None if v is None else v <= TARGETS[f"w2_{key}"]))
    r2o = w2.get("actorq os", {})
    for key, name in (("p50_ms", "p50 <= 0.35 ms"), ("p99_ms", "p99 <= 0.8 ms"),
                      ("max_ms", "max <= 5 ms")):
        v = r2o.get(key)
        targets.append((f"W2 os {name} (for reference)", f"{fmt_ms(v)} ms",
                        None if v is None else v <= TARGETS[f"w2_{key}"]))
    if w34 is not None:
        aq = w34["actorq"]
        for n in sizes["w3_actorq"]:
            r3 = aq.get(n, {})
            if "first_start_s" in r3:
                v = r3["first_start_s"] * 1e3
                targets.append((f"W3 first job started <= 50 ms after open ({n:,} pending)",
                                f"{fmt_ms(v)} ms", v <= TARGETS["w3_first_ms"]))
        r3 = aq.get(100_000, {})
        if "ready_s" in r3:
            v = r3["ready_s"] * 1e3
            targets.append(("W3 100,000 jobs ready <= 300 ms", f"{fmt_ms(v)} ms",
                            v <= TARGETS["w3_ready_100k_ms"]))
        base = aq.get(0, {})
        big = max((n for n in sizes["w3_actorq"] if "rss_hwm_max" in aq.get(n, {})),
                  default=None)
        if big and "rss_hwm_max" in base:
            per = (aq[big]["rss_hwm_max"] - base["rss_hwm_max"]) / big
            targets.append((f"W4 <= 300 B peak RSS per pending job ({big:,} pending)",
                            f"{per:,.0f} B", per <= TARGETS["w4_rss_per_job"]))
        targets.append(("W4 journal size bounded under steady load",
                        "see W4 table", bounded))
    for name, measured, ok in targets:
        add(f"| {name} | {measured} | {hit(ok)} |")
        txt.append(f"  {hit(ok):<4} {name}: {measured}")
    add("")
    return "\n".join(md) + "\n", "\n".join(txt)


METHOD = """\
- Each case runs in a fresh Python process (`benchmarks/_case.py`), so no event loop, cache or
  heap is shared between systems. Journals and databases live in fresh temp directories on the
  machine's disk. Wall-clock times come from `time.perf_counter()`.
- Repetitions: {reps_text}
- **W1** (no-op jobs): *concurrent* = 100 producer tasks (threads for the thread-based peers)
  each enqueueing its share one job at a time; *sequential* = one producer, one job at a time;
  *batch* = the peer's batch call in chunks of 1,000 (actorq `enqueue_batch`; procrastinate
  `batch_defer_async`; litequeue: 1,000 `put` in one explicit transaction; huey, persist-queue
  and saq have no batch call). *End-to-end* = first enqueue -> every job recorded complete
  (actorq: `queue.join()` returns, then `stats()` is checked; huey: SIGNAL_COMPLETE after the
  result is stored; persist-queue: `ack()` returned; litequeue: `done()` returned;
  procrastinate: a poll every 5 ms of `count(*) where status='succeeded'`; saq: its
  `after_process` hook, which runs after status "complete" is written). Consumers run from the
  start, concurrently with the producers. *Enqueue-only* = a separate run, same process, no
  consumer running (actorq: queue paused), time until every enqueue call has returned.
  *Enqueue while consuming* = the enqueue phase of the end-to-end run. Jobs per run: actorq and
  the ceiling {w1_n_fast} (sequential: {w1_seq_durable} durable / {w1_seq_os} in "os" mode); peers
  {w1_n_peer} (sequential {w1_seq_durable}) because they are 10-100x slower per job and the full run
  must fit in 25 minutes. Throughput is per second, so the sizes stay comparable.
- **W2**: one consumer slot (concurrency 1). For each job: stamp, enqueue, wait until the handler
  has stamped its start, then wait until the job is recorded complete, so every enqueue meets an
  idle queue. Latency = handler start - stamp before the enqueue call (it includes the durable
  enqueue). {w2_fast} samples for actorq and the ceiling in "os" mode, {w2_peer} for the ceiling
  in fsync mode and the peers, each slice after {w2_warmup} warm-up jobs.
- **W3**: a journal of N pending jobs is built in one process (actorq: `enqueue_batch` in chunks
  of 10,000, queue paused, "os" mode; peers: their own enqueue path or its SQL, without fsync,
  since only recovery is timed), then a fresh process takes t0 right before `open_runtime`
  (imports done) and opens it in "fsync" mode: *ready* = `spawn_queue` returned (the backlog
  counted and its first 1,000 jobs in start order read into the queue's window; the rest stay in
  the journal's ready index until the queue reaches them), *first start* = the first handler
  started. actorq at N =
  {w3_actorq}; peers at N = {w3_peer}.
- **W4**: RSS from `/proc/self/status` in the W3 process once the first job started (VmHWM =
  peak), minus the same process shape on an empty journal; journal bytes per job = size of
  `data.mdb` / N right after the build. Retention: {w4_total} no-op jobs enqueued with
  `enqueue_batch` (10,000 per call) and completed by a concurrency-100 queue in "os" mode
  under the default `Retention()`, `data.mdb` size sampled every {w4_every} completions.
- **Ceiling**: `bench_ceiling.py`, trio + py-lmdb, the same three transitions per job
  (enqueue, start, complete; one small msgpack put each), the same group commit (one writer,
  a thread for the fsync commit), the enqueue and the start fused into one commit when a slot
  is free, as actorq does; no validation, codec, indexes, log, retention or actors. It shows what
  this disk, trio and py-lmdb allow.
- LMDB commits with fsync cost two `fdatasync` calls (data pages, then the meta page); SQLite in
  WAL mode and Redis' AOF one. See the disk line under Machine.
"""


# ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one run each (< 2 min)")
    ap.add_argument("--only", default="", help="comma-separated system keys to run "
                    "(actorq fsync/os always included), e.g. 'huey,saq'")
    ap.add_argument("--skip-workloads", default="", help="comma-separated: W1,W2,W3")
    ap.add_argument("--out", default=str(BENCH_DIR / "RESULTS.md"))
    args = ap.parse_args()
    mode = "quick" if args.quick else "full"
    sizes = SIZES[mode]
    skip_w = {w.strip().upper() for w in args.skip_workloads.split(",") if w.strip()}
    started = time.monotonic()
    LOAD["start"] = f"{os.getloadavg()[0]:.2f}"

    systems = SYSTEMS
    if args.only:
        wanted = {w.strip() for w in args.only.split(",")} | {"actorq fsync", "actorq os"}
        systems = [s for s in systems if s.key in wanted]
    for s in systems:
        missing = [p for p in s.needs if importlib.util.find_spec(p) is None]
        if missing:
            s.skip = f"not installed ({', '.join(missing)}): pip install -e '.[bench]'"
    log(f"actorq benchmarks, {mode} mode; systems: {', '.join(s.key for s in systems)}")

    servers: dict[str, Any] = {}
    server_versions: dict[str, str] = {}
    try:
        if any(s.server == "pg" and not s.skip for s in systems):
            try:
                servers["pg"] = Postgres().start()
                server_versions["PostgreSQL server"] = servers["pg"].version + \
                    " (127.0.0.1, temp data dir, fsync=on, synchronous_commit=on)"
            except (ServerUnavailable, OSError, subprocess.SubprocessError) as exc:
                for s in systems:
                    if s.server == "pg":
                        s.skip = f"PostgreSQL could not be started: {exc}"
        if any(s.server == "redis" and not s.skip for s in systems):
            try:
                servers["redis"] = Redis().start()
                server_versions["Redis server"] = servers["redis"].version.split(" sha")[0] + \
                    " (127.0.0.1, temp dir, appendonly yes, appendfsync always, no RDB)"
            except (ServerUnavailable, OSError, subprocess.SubprocessError) as exc:
                for s in systems:
                    if s.server == "redis":
                        s.skip = f"redis-server could not be started: {exc}"
        for s in systems:
            if s.skip:
                log(f"SKIP {s.key}: {s.skip}")
            elif s.server:
                s.versions["_url"] = {"url": servers[s.server].url}

        w1 = {} if "W1" in skip_w else workload_w1(systems, sizes)
        w2 = {} if "W2" in skip_w else workload_w2(systems, sizes)
        w34 = None if ("W3" in skip_w or "W4" in skip_w) else \
            workload_w3_w4(systems, sizes, servers)
    finally:
        for srv in servers.values():
            srv.stop()

    md, txt = build_report(mode, sizes, systems, w1, w2, w34, server_versions, started)
    analysis = BENCH_DIR / "ANALYSIS.md"  # hand-written: why each missed target is missed
    if analysis.exists():
        md = md.rstrip("\n") + "\n\n" + analysis.read_text()
    Path(args.out).write_text(md)
    print()
    print(txt)
    print()
    print(f"wrote {args.out} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
