"""Examples with exact numbers for the pure rate-shaping policies: TokenBucket and Debouncer.

No trio and no clock: ``now`` is passed in, so every time below is exact.
"""

from __future__ import annotations

import math

import pytest

from actorq._debounce import DebounceBurst, DebounceDecision, Debouncer, resolve_key
from actorq._model import Debounce, Throttle
from actorq._throttle import TokenBucket

# --------------------------------------------------------------------------------------------
# TokenBucket


def bucket(rate, per=1.0, burst=None, now=100.0):
    return TokenBucket.from_config(Throttle(rate, per=per, burst=burst), now)


def test_a_bucket_is_full_at_creation_and_drains_one_token_per_take():
    b = bucket(2, per=1, burst=3)
    assert b.capacity == 3.0
    assert b.peek(100.0) == 3.0
    assert [b.try_take(100.0) for _ in range(4)] == [True, True, True, False]
    assert b.peek(100.0) == 0.0
    b.check_valid()


def test_next_token_at_is_when_the_next_token_is_due_and_try_take_succeeds_then():
    b = bucket(2, per=1, burst=3)
    for _ in range(3):
        assert b.try_take(100.0)
    assert b.next_token_at(100.0) == 100.5
    assert b.next_token_at(100.2) == 100.5
    assert not b.try_take(100.25)
    assert b.peek(100.25) == 0.5
    assert b.try_take(100.5)
    assert b.next_token_at(100.5) == 101.0
    assert not b.try_take(100.75)
    assert b.try_take(101.0)
    # Two seconds idle refill four tokens, clipped at the capacity of three.
    assert b.peek(103.0) == 3.0
    assert [b.try_take(103.0) for _ in range(4)] == [True, True, True, False]
    b.check_valid()


def test_next_token_at_is_now_while_a_token_is_available():
    b = bucket(2, per=1, burst=3)
    assert b.next_token_at(100.0) == 100.0
    b.try_take(100.0)
    assert b.next_token_at(100.0) == 100.0
    assert b.peek(100.0) == 2.0  # peek and next_token_at take nothing


def test_a_failed_take_and_a_peek_change_nothing():
    b = bucket(1, per=1, burst=1)
    assert b.try_take(100.0)
    before = (b.tokens, b.updated_at)
    assert not b.try_take(100.3)
    b.peek(100.6)
    b.next_token_at(100.9)
    assert (b.tokens, b.updated_at) == before
    assert b.try_take(101.0)


def test_the_default_capacity_is_max_rate_1():
    assert bucket(5).capacity == 5.0
    assert bucket(0.5).capacity == 1.0
    assert bucket(0.5, burst=4).capacity == 4.0


def test_rate_per_minute():
    b = bucket(1, per=60.0, now=0.0)
    assert b.rate_per_second == 1 / 60
    assert b.try_take(0.0)
    assert not b.try_take(59.0)
    assert b.next_token_at(1.0) == 60.0
    assert b.try_take(60.0)
    assert b.next_token_at(60.0) == 120.0


@pytest.mark.parametrize(
    ("rate", "per", "burst", "start"),
    [(3, 1.0, 1, 12345.678), (10, 1.0, 1, 0.1), (7, 0.3, 2, 0.0), (1e6, 1.0, 1, 98765.4321),
     (0.001, 1.0, 1, 3.3), (1, 3.0, 1.5, 7.7)],
)
def test_a_token_is_taken_in_the_very_instant_next_token_at_names(rate, per, burst, start):
    """No epsilon: next_token_at is the smallest float at which try_take succeeds."""
    b = bucket(rate, per=per, burst=burst, now=start)
    now = start
    while b.try_take(now):
        pass
    for _ in range(300):
        due = b.next_token_at(now)
        assert due > now
        assert b.peek(math.nextafter(due, -math.inf)) < 1.0
        assert not b.try_take(math.nextafter(due, -math.inf))
        assert b.try_take(due)
        now = due
        b.check_valid()
    # 300 tokens (less what was left after draining) at rate/per a second: each token due at
    # most one float step late (a full bucket of capacity 1 drops the refill past its top).
    expected = (300 - b.capacity % 1) * per / rate
    assert now - start == pytest.approx(expected, rel=1e-9, abs=300 * math.ulp(now))


def test_a_bucket_refuses_tokens_outside_its_capacity():
    with pytest.raises(ValueError, match=r"^tokens must be between 0 and capacity 3\.0 \(got 4\)$"):
        TokenBucket(Throttle(2, burst=3), 4, 0.0)


def test_a_clock_that_steps_back_refills_nothing():
    b = bucket(1, per=1, burst=1, now=10.0)
    assert b.try_take(10.0)
    assert b.peek(5.0) == 0.0
    assert not b.try_take(5.0)
    assert b.next_token_at(5.0) == 11.0


# --------------------------------------------------------------------------------------------
# Debouncer: trailing mode


def trailing(wait=5.0, max_wait=None):
    return Debouncer(Debounce(wait, max_wait=max_wait))


def leading(wait=5.0, max_wait=None):
    return Debouncer(Debounce(wait, mode="leading", max_wait=max_wait))


def test_trailing_a_b_c_each_supersedes_the_one_before():
    d = trailing(wait=5)
    assert d.enqueue("k", "A", 0.0) == DebounceDecision(due_at=5.0, first_at=0.0)
    assert d.enqueue("k", "B", 1.0) == DebounceDecision(due_at=6.0, first_at=0.0, superseded="A")
    assert d.enqueue("k", "C", 2.0) == DebounceDecision(due_at=7.0, first_at=0.0, superseded="B")
    assert d.burst("k") == DebounceBurst("k", None, None, "C", 0.0, 2.0, 7.0)
    assert d.next_deadline() == 7.0
    d.check_valid()
    d.started("k", "C")
    assert d.burst("k") is None
    assert d.next_deadline() is None
    assert d.enqueue("k", "D", 7.5) == DebounceDecision(due_at=12.5, first_at=7.5)
    d.check_valid()


def test_trailing_max_wait_caps_the_due_time_from_the_first_enqueue():
    d = trailing(wait=5, max_wait=8)
    assert d.enqueue("k", "A", 0.0).due_at == 5.0
    assert d.enqueue("k", "B", 2.0).due_at == 7.0
    assert d.enqueue("k", "C", 4.0) == DebounceDecision(due_at=8.0, first_at=0.0, superseded="B")
    assert d.enqueue("k", "D", 7.5) == DebounceDecision(due_at=8.0, first_at=0.0, superseded="C")
    # At 8 D is due (tie): E begins the next burst, whose cap counts from 8.
    assert d.enqueue("k", "E", 8.0) == DebounceDecision(due_at=13.0, first_at=8.0)
    assert d.enqueue("k", "F", 12.0) == DebounceDecision(due_at=16.0, first_at=8.0, superseded="E")
    d.check_valid()


def test_trailing_tie_an_enqueue_at_the_deadline_begins_a_new_burst():
    d = trailing(wait=5)
    d.enqueue("k", "A", 0.0)
    assert d.enqueue("k", "B", math.nextafter(5.0, 0.0)).superseded == "A"
    assert d.burst("k").due_at == math.nextafter(5.0, 0.0) + 5.0
    d = trailing(wait=5)
    d.enqueue("k", "A", 0.0)
    assert d.enqueue("k", "B", 5.0) == DebounceDecision(due_at=10.0, first_at=5.0)
    assert d.burst("k").survivor == "B"


def test_trailing_a_due_survivor_that_has_not_started_yet_is_not_superseded():
    d = trailing(wait=5)
    d.enqueue("k", "A", 0.0)
    # A is due at 5 but waits (no free slot): B at 6 does not replace it.
    assert d.enqueue("k", "B", 6.0) == DebounceDecision(due_at=11.0, first_at=6.0)
    d.started("k", "A")  # A starts late: B's burst is unaffected
    assert d.burst("k") == DebounceBurst("k", None, None, "B", 6.0, 6.0, 11.0)


def test_trailing_keys_are_independent():
    d = trailing(wait=5)
    d.enqueue("a", "A1", 0.0)
    d.enqueue("b", "B1", 1.0)
    assert d.enqueue("a", "A2", 2.0).superseded == "A1"
    assert d.enqueue("b", "B2", 3.0).superseded == "B1"
    assert {b.key: b.survivor for b in d.bursts()} == {"a": "A2", "b": "B2"}
    assert d.next_deadline() == 7.0
    assert len(d) == 2


def test_trailing_a_cancelled_survivor_ends_its_burst():
    d = trailing(wait=5, max_wait=6)
    d.enqueue("k", "A", 0.0)
    d.cancelled("k", "A")
    assert d.burst("k") is None
    assert d.enqueue("k", "B", 3.0) == DebounceDecision(due_at=8.0, first_at=3.0)
    d.cancelled("k", "nope")  # unknown ids are ignored
    d.started("other", "B")
    assert d.burst("k").survivor == "B"


def test_trailing_wait_zero_every_job_is_due_at_once():
    d = trailing(wait=0)
    assert d.enqueue("k", "A", 1.0) == DebounceDecision(due_at=1.0, first_at=1.0)
    assert d.enqueue("k", "B", 1.0) == DebounceDecision(due_at=1.0, first_at=1.0)
    d.check_valid()


def test_enqueueing_a_tracked_id_again_is_an_error():
    d = trailing()
    d.enqueue("k", "A", 0.0)
    with pytest.raises(ValueError, match=r"^job 'A' is already tracked for debounce key 'k'$"):
        d.enqueue("k", "A", 1.0)


def test_expire_drops_closed_bursts_and_next_deadline_follows():
    d = trailing(wait=5)
    d.enqueue("a", "A", 0.0)
    d.enqueue("b", "B", 2.0)
    assert d.next_deadline() == 5.0
    assert d.expire(4.0) == []
    assert d.expire(5.0) == ["A"]
    assert d.next_deadline() == 7.0
    assert d.burst("a") is None
    assert d.expire(100.0) == ["B"]
    assert d.next_deadline() is None
    assert len(d) == 0
    d.check_valid()


# --------------------------------------------------------------------------------------------
# Debouncer: leading mode


def test_leading_timeline():
    d = leading(wait=5)
    # A leads: due at once. B and C trail it; A is never superseded.
    assert d.enqueue("k", "A", 0.0) == DebounceDecision(due_at=0.0, first_at=0.0, leading=True)
    assert d.enqueue("k", "B", 1.0) == DebounceDecision(due_at=6.0, first_at=1.0)
    assert d.enqueue("k", "C", 3.0) == DebounceDecision(due_at=8.0, first_at=1.0, superseded="B")
    assert d.burst("k") == DebounceBurst("k", "A", 0.0, "C", 1.0, 3.0, 8.0)
    # The window closed at 5, but the trailing burst is open until 8: D joins it.
    assert d.enqueue("k", "D", 6.0) == DebounceDecision(due_at=11.0, first_at=1.0, superseded="C")
    # At 11 D is due (tie): E leads a new burst, due at once; F trails E.
    assert d.enqueue("k", "E", 11.0) == DebounceDecision(due_at=11.0, first_at=11.0,
                                                         leading=True)
    assert d.enqueue("k", "F", 15.9) == DebounceDecision(due_at=20.9, first_at=15.9)
    d.check_valid()


def test_leading_tie_an_enqueue_at_the_window_end_leads_again():
    d = leading(wait=5)
    assert d.enqueue("k", "A", 0.0).leading
    assert d.enqueue("k", "B", 5.0) == DebounceDecision(due_at=5.0, first_at=5.0, leading=True)
    assert not d.enqueue("k", "C", 9.99).leading


def test_leading_max_wait_counts_from_the_first_trailing_enqueue():
    d = leading(wait=5, max_wait=6)
    d.enqueue("k", "A", 0.0)
    assert d.enqueue("k", "B", 1.0).due_at == 6.0
    assert d.enqueue("k", "C", 4.0).due_at == 7.0  # min(4 + 5, 1 + 6)
    assert d.enqueue("k", "D", 6.5) == DebounceDecision(due_at=7.0, first_at=1.0, superseded="C")


def test_leading_starting_or_cancelling_the_leading_job_keeps_its_window():
    d = leading(wait=5)
    d.enqueue("k", "A", 0.0)
    d.started("k", "A")
    assert d.enqueue("k", "B", 1.0) == DebounceDecision(due_at=6.0, first_at=1.0)
    d.cancelled("k", "B")
    assert d.burst("k") == DebounceBurst("k", "A", 0.0, None, None, None, None)
    assert d.enqueue("k", "C", 2.0) == DebounceDecision(due_at=7.0, first_at=2.0)
    d.cancelled("k", "A")
    assert d.enqueue("k", "D", 3.0).superseded == "C"


def test_leading_wait_zero_every_job_leads():
    d = leading(wait=0)
    assert d.enqueue("k", "A", 1.0).leading
    assert d.enqueue("k", "B", 1.0).leading


def test_leading_expire_closes_windows():
    d = leading(wait=5)
    d.enqueue("k", "A", 0.0)
    assert d.next_deadline() == 5.0
    assert d.expire(5.0) == []
    assert len(d) == 0
    assert d.enqueue("k", "B", 5.0).leading
    d.enqueue("k", "C", 6.0)
    assert d.next_deadline() == 10.0  # B's window closes first
    assert d.expire(10.0) == []
    assert d.burst("k") == DebounceBurst("k", None, None, "C", 6.0, 6.0, 11.0)
    assert d.expire(11.0) == ["C"]
    assert len(d) == 0
    d.check_valid()


# --------------------------------------------------------------------------------------------
# Debouncer: restoring from the journal


def test_restore_keeps_the_journaled_deadline_and_first_enqueue():
    d = trailing(wait=5, max_wait=6)
    d.restore("k", "C", first_at=0.0, last_at=2.0, due_at=6.0)
    assert d.next_deadline() == 6.0
    assert d.enqueue("k", "D", 3.0) == DebounceDecision(due_at=6.0, first_at=0.0, superseded="C")
    d.check_valid()


def test_a_restored_deadline_that_passed_while_down_is_due_at_once():
    d = trailing(wait=5)
    d.restore("k", "C", first_at=0.0, last_at=2.0, due_at=7.0)
    assert d.expire(9.0) == ["C"]
    d.restore("k", "C", first_at=0.0, last_at=2.0, due_at=7.0)
    assert d.enqueue("k", "D", 9.0) == DebounceDecision(due_at=14.0, first_at=9.0)


def test_restore_keeps_the_newest_burst_in_any_order():
    for order in ([("A", 0.0, 5.0), ("B", 6.0, 11.0)], [("B", 6.0, 11.0), ("A", 0.0, 5.0)]):
        d = trailing(wait=5)
        for job_id, at, due in order:
            d.restore("k", job_id, first_at=at, last_at=at, due_at=due)
        assert d.burst("k").survivor == "B"
        d.check_valid()


def test_restore_leading_window():
    d = leading(wait=5)
    d.restore_leading("k", "A", at=0.0)
    d.restore("k", "OLD", first_at=-9.0, last_at=-8.0, due_at=-3.0)  # before the window: dropped
    assert d.burst("k") == DebounceBurst("k", "A", 0.0, None, None, None, None)
    d.restore("k", "B", first_at=1.0, last_at=2.0, due_at=7.0)
    assert d.enqueue("k", "C", 3.0) == DebounceDecision(due_at=8.0, first_at=1.0, superseded="B")
    d.restore_leading("k", "Z", at=9.0)  # a newer window drops the older trailing burst
    assert d.burst("k") == DebounceBurst("k", "Z", 9.0, None, None, None, None)
    d.check_valid()
    t = trailing(wait=5)
    t.restore_leading("k", "A", at=0.0)  # another mode: ignored
    assert t.burst("k") is None


def test_restore_clamps_a_first_enqueue_after_the_last():
    d = trailing(wait=5)
    d.restore("k", "A", first_at=3.0, last_at=2.0, due_at=7.0)
    assert d.burst("k").first_at == 2.0
    d.check_valid()


# --------------------------------------------------------------------------------------------
# Keys


def test_resolve_key():
    by_user = Debounce(1.0, key=lambda p: p["user"])
    assert resolve_key(by_user, "q", {"user": "u1"}) == "u1"
    assert resolve_key(by_user, "q", {"user": "u1"}, "explicit") == "explicit"
    assert resolve_key(Debounce(1.0), "q", {"user": "u1"}) == "q"
    with pytest.raises(TypeError, match=r"^debounce_key must be a str \(got 3\)$"):
        resolve_key(by_user, "q", {}, 3)
    with pytest.raises(TypeError, match=r"^debounce key function must return a str \(got 1\)$"):
        resolve_key(by_user, "q", {"user": 1})


def test_keyed_heap_sorted_items_and_replace():
    from actorq._heap import KeyedHeap

    heap = KeyedHeap()
    for i, key in enumerate([5, 3, 9, 1, 7]):
        heap.push(f"j{i}", (key,))
    heap.push("j2", (0,))  # re-keyed: its old entry is stale
    heap.remove("j4")
    assert [(e[:-2], e[-1]) for e in heap.sorted_entries()] == [
        ((0,), "j2"), ((1,), "j3"), ((3,), "j1"), ((5,), "j0")]
    heap.replace(heap.sorted_entries()[:3])
    heap.check_valid()
    assert len(heap) == 3 and "j0" not in heap
    heap.push("j5", (2,))
    assert heap.peek()[0] == 0 and heap.peek()[-1] == "j2"  # (key items..., token, id)
    assert [(e[:-2], e[-1]) for e in (heap.pop() for _ in range(4))] == [
        ((0,), "j2"), ((1,), "j3"), ((2,), "j5"), ((3,), "j1")]
    assert heap.peek() is None


def test_shed_keeps_the_best_window_parks_blocked_jobs_and_spills_the_rest():
    from actorq._core import CoreJob, QueueCore

    core = QueueCore(concurrency=1, window=4)
    ranks = [(p, float(t), s) for s, (p, t) in enumerate(
        [(0, 5), (1, 0), (0, 1), (2, 0), (0, 1), (-1, 9), (0, 0), (1, 1), (0, 3), (3, 3)])]
    for seq, (prio, at, _s) in enumerate(ranks):
        core.add(CoreJob(f"j{seq}", prio, seq, at), now=0.0)
    core.block("j5")  # the best job: blocked, it is parked, not kept nor spilled
    assert core.shed() == 5
    core.check_valid()
    best = sorted((r, f"j{r[2]}") for r in ranks if r[2] != 5)[:4]
    assert set(core.jobs) == {job_id for _r, job_id in best} | {"j5"}
    assert core.horizon == best[-1][0]
    assert core.counts()["ready"] == 5  # four in the heap, one parked
    assert [job.id for job in core.take_startable(0.0)] == [best[0][1]]
