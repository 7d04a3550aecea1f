"""The one place that converts between trio's clock and durable wall-clock time.

trio's clock has a random offset per run and is never persisted; the journal stores wall-clock
epoch seconds. Under ``trio.testing.MockClock`` the wall clock is trio's clock plus an offset fixed
for the whole run, so both move together and virtual time is also virtual wall time.
"""

from __future__ import annotations

import time

import trio
import trio.testing

_mock_offset: trio.lowlevel.RunVar[float] = trio.lowlevel.RunVar("actorq_mock_wall_offset")

# Bound once: these run per enqueue (trio.current_time() and friends add a wrapper call each).
_current_clock = trio.lowlevel.current_clock
_MockClock = trio.testing.MockClock


def _mock_wall(clock: trio.testing.MockClock) -> float:
    try:
        offset = _mock_offset.get()
    except LookupError:
        offset = time.time() - clock.current_time()
        _mock_offset.set(offset)
    return clock.current_time() + offset


def wall_now() -> float:
    """Wall-clock epoch seconds (virtual under MockClock)."""
    clock = _current_clock()
    if isinstance(clock, _MockClock):
        return _mock_wall(clock)
    return time.time()


def to_wall(t: float) -> float:
    """The wall-clock time of trio time ``t``."""
    clock = _current_clock()
    if isinstance(clock, _MockClock):
        return t + (_mock_wall(clock) - clock.current_time())
    return t + (time.time() - clock.current_time())


def now_and_wall() -> tuple[float, float]:
    """trio's current time and the wall-clock time of that instant: ``(now, to_wall(now))``
    with one read of each clock (per enqueue, where ``trio.current_time()`` and ``to_wall``
    read trio's clock twice, each through two wrapper calls)."""
    clock = _current_clock()
    now = clock.current_time()
    if isinstance(clock, _MockClock):
        return now, _mock_wall(clock)
    return now, time.time()


def from_wall(w: float) -> float:
    """The trio time of wall-clock time ``w``."""
    return w - wall_offset()


def wall_offset() -> float:
    """``wall - trio time`` now: add it to a trio time to get wall time (one clock read, for
    converting many times at once)."""
    clock = _current_clock()
    if isinstance(clock, _MockClock):
        return _mock_wall(clock) - clock.current_time()
    return time.time() - clock.current_time()
