"""Every script in examples/ runs, in real time, as a user would run it, and does what it says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 120


def run_example(name: str, journal: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), str(journal)],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=journal.parent,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_every_example_is_tested():
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    assert scripts == {"tour.py", "email_sending.py", "payments.py", "image_processing.py",
                       "throttled_email.py", "search_index.py"}


def test_tour_runs_twice_and_recovers_what_the_first_run_left(tmp_path):
    journal = tmp_path / "tour-journal"
    first = run_example("tour.py", journal)

    assert "nothing to recover (first run)" in first
    assert "started in this order: recall, express, standard #1, standard #2, bulk #1, backfill" \
        in first
    assert "at most 2 ran at once (concurrency=2)" in first
    # retried with backoff: the flaky call succeeds on its third attempt, the other is
    # dead-lettered after four
    assert "wait() -> 'synced'" in first
    assert "push-prices: attempt 4 at +" in first
    assert "wait() raised JobFailed: ConnectionError: partner API unavailable" in first
    dlq = first.split("the dead-letter queue 'partner.dead' received:")[1]
    assert re.search(r"job_id: '[0-9a-f]{32}'", dlq)
    assert "queue: 'partner'" in dlq
    assert "payload: {'call': 'push-prices'}" in dlq
    assert "error: 'ConnectionError: partner API unavailable'" in dlq
    assert "attempts: 4" in dlq
    # backoff 0.1, 0.2, 0.4 s: attempt n starts at least that long after the first
    starts = [float(t) for t in re.findall(r"push-prices: attempt \d at \+([\d.]+)s", first)]
    assert len(starts) == 4
    assert starts[1] >= 0.09 and starts[2] >= 0.29 and starts[3] >= 0.69, starts
    # delays: run_at=now+0.3 s runs before delay=0.6
    assert first.index("reminder 'drink water' ran") < first.index("reminder 'stand up' ran")
    assert "enqueue(delay=0.6) -> state delayed" in first
    # status / wait / list / stats / cancel
    assert "list('running') -> ['yearly']" in first
    assert "cancel(yearly) -> True" in first
    assert "cancel(daily) -> False" in first
    assert "wait(yearly) raised JobCancelled" in first
    # rate shaping: a burst of 2 tokens, then one every 0.2 s; one rebuild per document
    match = re.search(r"Throttle\(5, per=1.0, burst=2\): 6 jobs started at (.*)", first)
    offsets = [float(x) for x in re.findall(r"\+([\d.]+)s", match.group(1))]
    assert offsets[:2] == [0.0, 0.0]
    assert [round(b - a, 1) for a, b in zip(offsets[1:], offsets[2:])] == [0.2] * 4
    assert "-> rebuilt ['faq v1', 'readme v3']" in first
    assert "wait(first edit) -> 'indexed readme v3'" in first
    assert "status(daily) -> state=completed attempts=1" in first
    assert ("stats() -> {'pending': 0, 'delayed': 0, 'running': 0, 'completed': 1, "
            "'failed': 0, 'cancelled': 2}") in first
    assert "leaving the runtime now" in first
    assert (journal / "data.mdb").exists()
    left = re.search(r"1 delayed job enqueued: stats\(\) -> \{'pending': (\d+), 'delayed': (\d+), "
                     r"'running': (\d+)\}", first)
    assert left, first
    pending, delayed, running = map(int, left.groups())
    assert (pending, delayed, running) == (3, 1, 1)

    second = run_example("tour.py", journal)
    assert "nothing to recover" not in second
    assert "recovered 5 jobs from the previous run" in second
    # the job cut short by the first run's shutdown runs again, and its first attempt did not count
    for task in ("nightly export", "invoice #1", "invoice #2", "invoice #3", "follow-up email"):
        assert f"done: {task:<16} (attempt 1)" in second
    # the same tour again, with the same outcomes
    assert "started in this order: recall, express, standard #1, standard #2, bulk #1, backfill" \
        in second
    assert ("stats() -> {'pending': 0, 'delayed': 0, 'running': 0, 'completed': 1, "
            "'failed': 0, 'cancelled': 2}") in second


def test_email_sending(tmp_path):
    out = run_example("email_sending.py", tmp_path / "journal")
    assert ("delivered in this order: ada, new.user, reader1, reader2, reader3, reader4, "
            "reader5, reader6") in out
    assert "reset result: 250 OK" in out
    assert "welcome: completed" in out
    assert "attempt 1 to nobody@invalid.example failed: 550 no such user" in out
    assert "gave up  nobody@invalid.example after 2 attempts" in out
    assert "bounce: JobFailed(RecipientRefused: 550 no such user: nobody@invalid.example)" in out
    assert ("stats: {'pending': 0, 'delayed': 0, 'running': 0, 'completed': 8, 'failed': 1, "
            "'cancelled': 0}") in out


def test_payments(tmp_path):
    out = run_example("payments.py", tmp_path / "journal")
    assert "double submit of A-1001 returned the same job id: True" in out
    assert "order A-1001: charged ch_A-1001_1 (19.99 USD, attempts=1)" in out
    assert "order A-1002: FAILED after 1 attempt(s): Discard: card declined" in out
    assert re.search(r"order A-1003: charged ch_A-1003_\d \(12.50 USD, attempts=3\)", out)
    assert "order A-1004: FAILED after 4 attempt(s): GatewayTimeout" in out
    assert "[payments.failed] order A-1002: Discard: card declined" in out
    assert "[payments.failed] order A-1004: GatewayTimeout" in out
    assert "failed payments flagged: ['A-1002', 'A-1004']" in out
    assert "gateway charges: ['A-1001', 'A-1003']" in out
    assert "A-1001 charged 1 time(s)" in out
    assert ("payments stats: {'pending': 0, 'delayed': 0, 'running': 0, 'completed': 2, "
            "'failed': 2, 'cancelled': 0}") in out


def test_image_processing(tmp_path):
    out = run_example("image_processing.py", tmp_path / "journal")
    assert "enqueued 24 photos in one batch" in out
    assert re.search(r"IMG_0001\.jpg: thumbnail 160x120 crc32=[0-9a-f]{8}", out)
    assert "PANORAMA.jpg: failed: JobTimeout: attempt 1 timed out after 0.25s" in out
    most = int(re.search(r"at most (\d) photos were resized at once", out).group(1))
    assert 1 <= most <= 4
    ticks = int(re.search(r"the event loop ticked (\d+) times", out).group(1))
    assert ticks >= 1  # the loop kept running while threads resized
    assert ("stats: {'pending': 0, 'delayed': 0, 'running': 0, 'completed': 24, 'failed': 1, "
            "'cancelled': 0}") in out


@pytest.mark.parametrize("name", ["email_sending.py", "payments.py", "image_processing.py"])
def test_focused_examples_run_without_arguments(name, tmp_path):
    """With no argument, an example uses a fresh temporary directory and leaves nothing behind."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_throttled_email_sends_100_a_minute(tmp_path):
    out = run_example("throttled_email.py", tmp_path / "journal")
    assert "104 emails sent" in out
    # the critical reset takes the first token after the burst, ahead of the low newsletter
    after = re.findall(r"then (\S+)\s+at \+([\d.]+)s", out)
    assert [to for to, _ in after] == ["ada@example.com", "reader101@example.com",
                                        "reader102@example.com", "reader103@example.com"]
    assert [float(t) for _, t in after] == [0.6, 1.2, 1.8, 2.4]
    assert "one every 0.6s after the burst (100 a minute)" in out


def test_search_index_rebuilds_once_per_burst(tmp_path):
    out = run_example("search_index.py", tmp_path / "journal")
    assert "18 saves -> 4 rebuilds" in out
    # Real time (the example runs as a user runs it): no earlier than the rules allow, with
    # room for a loaded machine's commits. guide.md: its last save at +0.4s, then 0.5s quiet.
    guide = re.search(r"\+(\d+\.\d)s rebuilt guide\.md\s+at version 5", out)
    assert guide and 0.9 <= float(guide[1]) <= 1.4, out
    # changelog.md is saved every 0.3s, never quiet for 0.5s: max_wait (2.0s) runs version 7
    changelog = re.search(r"\+(\d+\.\d)s rebuilt changelog\.md\s+at version (\d+)", out)
    assert changelog and 2.0 <= float(changelog[1]) <= 2.4 and changelog[2] in ("7", "8"), out
    assert "wait() -> 'guide.md@v5'" in out
    assert "'completed': 4" in out and "'cancelled': 14" in out
