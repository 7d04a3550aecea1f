"""A pure token bucket for :class:`~actorq.Throttle` (no trio, no I/O, no clock).

``now`` is always passed in: seconds in the runtime's clock, non-decreasing within one run. The
bucket is not journaled: the contract says it is full at spawn, so a restart builds a new one.

How the queue actor uses it: before starting a ready job, ``try_take(now)``; where that fails, the
job stays ready and the actor sleeps until ``next_token_at(now)`` (together with the core's other
wake-ups). When the actor is woken at that instant, ``try_take`` succeeds at it (exactly, not
"within an epsilon"), so under ``MockClock`` a throttled job starts in the same instant its token
becomes due.
"""

from __future__ import annotations

import math

import attrs

from ._model import Throttle


@attrs.define(eq=False)
class TokenBucket:
    """Token bucket of one queue: ``capacity`` tokens, refilled at ``rate / per`` tokens a second.

    State is an *anchor*: ``tokens`` held at time ``updated_at``. The level at a later time ``t``
    is ``min(tokens + (t - updated_at) * rate / per, capacity)``. Only a successful take moves the
    anchor; a failed ``try_take``, ``peek`` and ``next_token_at`` change nothing. The level is
    therefore, between two takes, one fixed function of ``t`` that never decreases as ``t`` grows
    (each float operation in it rounds monotonically), which is what makes ``next_token_at``
    exact: it returns the smallest float ``t >= now`` at which that function reaches 1, and
    ``try_take`` evaluates the same function.

    Invariant (the contract's promise): over any interval of length ``w``, at most
    ``capacity + rate * w / per`` takes succeed. Proof: the level never exceeds ``capacity``;
    over ``w`` seconds at most ``rate * w / per`` tokens flow in; each success removes one.
    ``check_valid`` asserts ``0 <= tokens <= capacity``; ``properties/test_throttle.py`` checks
    the window bound over the whole history of successful takes.

    A ``now`` earlier than ``updated_at`` (which a monotonic clock never gives) refills nothing.
    """

    config: Throttle
    tokens: float
    updated_at: float
    _rate: float = attrs.field(init=False, repr=False)  # tokens per second
    _seconds_per_token: float = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._rate = float(self.config.rate) / float(self.config.per)
        self._seconds_per_token = float(self.config.per) / float(self.config.rate)
        if not 0.0 <= self.tokens <= self.capacity:
            raise ValueError(
                f"tokens must be between 0 and capacity {self.capacity!r} (got {self.tokens!r})"
            )

    @classmethod
    def from_config(cls, config: Throttle, now: float) -> TokenBucket:
        """A full bucket (``tokens == capacity``) for ``config``, as a queue has at spawn."""
        return cls(config, config.capacity, float(now))

    # ---- views

    @property
    def capacity(self) -> float:
        """``burst``, or ``max(rate, 1)`` where no burst was given."""
        return self.config.capacity

    @property
    def rate_per_second(self) -> float:
        """Refill speed: ``rate / per`` tokens a second."""
        return self._rate

    def peek(self, now: float) -> float:
        """Tokens available at ``now`` (a float in ``[0, capacity]``), taking none."""
        return self._level(now)

    # ---- decisions

    def try_take(self, now: float) -> bool:
        """Take one token at ``now`` where one is available (level >= 1); False, and no change,
        where none is."""
        level = self._level(now)
        if level >= 1.0:
            self.tokens = level - 1.0
            if now > self.updated_at:
                self.updated_at = now
            return True
        return False

    def next_token_at(self, now: float) -> float:
        """The earliest time ``t >= now`` at which a token is available: ``now`` itself where one
        is, else the smallest float ``t > now`` such that ``try_take(t)`` succeeds (provided no
        take happens in between). Always finite: the rate is positive."""
        level = self._level
        if level(now) >= 1.0:
            return now
        # A close estimate, then an exact search over floats: level(lo) < 1 <= level(hi).
        hi = max(now, self.updated_at + (1.0 - self.tokens) * self._seconds_per_token)
        step = math.ulp(hi)
        while level(hi) < 1.0:
            hi = max(hi + step, math.nextafter(hi, math.inf))
            step *= 2.0
        lo = now
        step = math.ulp(hi)
        while (candidate := hi - step) > lo:
            if level(candidate) < 1.0:
                lo = candidate
                break
            hi = candidate
            step *= 2.0
        while True:
            mid = lo + (hi - lo) / 2.0
            if not lo < mid < hi:
                return hi
            if level(mid) >= 1.0:
                hi = mid
            else:
                lo = mid

    # ---- tests

    def check_valid(self) -> None:
        """Assert the bucket's invariants (for tests)."""
        assert math.isfinite(self.tokens), f"tokens is not finite: {self.tokens!r}"
        assert 0.0 <= self.tokens <= self.capacity, (
            f"tokens {self.tokens!r} outside [0, capacity {self.capacity!r}]"
        )
        assert math.isfinite(self.updated_at), f"updated_at is not finite: {self.updated_at!r}"

    # ---- internals

    def _level(self, now: float) -> float:
        """Tokens at ``now``: non-decreasing in ``now`` between two takes."""
        elapsed = now - self.updated_at
        if elapsed <= 0.0:
            return self.tokens
        return min(self.tokens + elapsed * self._rate, self.capacity)
