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


def wall_now() -> float:
    """Wall-clock epoch seconds (virtual under MockClock)."""
    if isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
        try:
            offset = _mock_offset.get()
        except LookupError:
            offset = time.time() - trio.current_time()
            _mock_offset.set(offset)
        return trio.current_time() + offset
    return time.time()


def to_wall(t: float) -> float:
    """The wall-clock time of trio time ``t``."""
    return t + (wall_now() - trio.current_time())


def from_wall(w: float) -> float:
    """The trio time of wall-clock time ``w``."""
    return w - (wall_now() - trio.current_time())


def wall_offset() -> float:
    """``wall - trio time`` now: add it to a trio time to get wall time (one clock read, for
    converting many times at once)."""
    return wall_now() - trio.current_time()
