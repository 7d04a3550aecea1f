"""Helpers shared by the tests."""

from __future__ import annotations

import trio
import trio.testing


def run(fn, *args):
    """Run ``fn(*args)`` under trio with a MockClock that jumps whenever all tasks sleep."""
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))
