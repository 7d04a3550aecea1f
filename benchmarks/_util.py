"""Helpers shared by the benchmark cases: clocks, percentiles, RSS, temp dirs, results.

Every case runs in a fresh interpreter (see ``_case.py``), so memory numbers and event loops never
leak from one system into another.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

now = time.perf_counter

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


def work_dir(tag: str) -> Path:
    """A fresh temporary directory on the benchmark disk (``ACTORQ_BENCH_TMP`` or /tmp)."""
    base = os.environ.get("ACTORQ_BENCH_TMP") or None
    return Path(tempfile.mkdtemp(prefix=f"actorq-bench-{tag}-", dir=base))


def rmtree(path: str | os.PathLike[str]) -> None:
    shutil.rmtree(path, ignore_errors=True)


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, nearest-rank."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def latency_summary(samples_s: list[float]) -> dict[str, float]:
    """p50 / p99 / max / mean in milliseconds."""
    xs = sorted(samples_s)
    return {
        "n": len(xs),
        "p50_ms": percentile(xs, 50) * 1e3,
        "p99_ms": percentile(xs, 99) * 1e3,
        "max_ms": xs[-1] * 1e3 if xs else float("nan"),
        "mean_ms": statistics.fmean(xs) * 1e3 if xs else float("nan"),
        "samples_ms": [round(x * 1e3, 4) for x in samples_s],
    }


def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process, in bytes (Linux /proc)."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def file_size(path: str | os.PathLike[str]) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def dir_size(path: str | os.PathLike[str]) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            total += file_size(os.path.join(root, name))
    return total


def actorq_revision() -> str:
    """The git commit of the actorq under test, and whether actorq/ had local changes."""
    import subprocess

    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "actorq"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    if not head:
        return "unknown (no git)"
    return head + (" + uncommitted changes in actorq/" if dirty else "")


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def result(**fields: Any) -> dict[str, Any]:
    return fields
