"""State machine of the pure TokenBucket against an exact (rational) model.

Time moves only forward, by ``advance`` rules (a drawn ``dt >= 0``, or up to the instant the
bucket itself names). The model runs the same token-bucket rule in ``fractions.Fraction`` on the
very same float instants, so the only room for disagreement is float rounding right at a token
boundary; everything else must match. Beside the model, the contract's promise is checked over
every window of the history of successful takes: ``count <= burst + rate * w / per``.
"""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from actorq._model import Throttle
from actorq._throttle import TokenBucket

# Model and float bucket may disagree by this much in tokens (float rounding only).
TOKENS_TOL = 1e-9
# Tolerance of the window bound (counts are integers, the bound is real).
WINDOW_TOL = 1e-6

rates = st.one_of(st.sampled_from([1, 2, 3, 7, 10, 0.5, 0.3, 100]), st.floats(0.01, 20),
                  st.floats(0.01, 1000))
pers = st.one_of(st.sampled_from([1.0, 0.1, 0.3, 60.0]), st.floats(0.01, 100))
bursts = st.one_of(st.none(), st.sampled_from([1, 1.5, 3, 10]), st.floats(1, 50))
starts = st.sampled_from([0.0, 0.1, 12345.678, 98765.4321])
dts = st.one_of(st.just(0.0), st.floats(0, 1e-3), st.floats(0, 10))


class ThrottleMachine(RuleBasedStateMachine):
    @initialize(rate=rates, per=pers, burst=bursts, start=starts)
    def init(self, rate, per, burst, start):
        self.config = Throttle(rate, per=per, burst=burst)
        self.now = start
        self.bucket = TokenBucket.from_config(self.config, start)
        self.capacity = Fraction(self.config.capacity)
        self.rate = Fraction(rate) / Fraction(per)  # exact tokens per second
        self.m_tokens = self.capacity
        self.m_at = Fraction(start)
        self.takes: list[float] = []
        self.worst = None  # max over earlier takes i of rate * t_i - i (exact)
        self.promised: float | None = None  # a next_token_at answer not yet used

    # ---- the model

    def model_level(self, t: float) -> Fraction:
        elapsed = Fraction(t) - self.m_at
        if elapsed <= 0:
            return self.m_tokens
        return min(self.m_tokens + elapsed * self.rate, self.capacity)

    def tol(self, t: float) -> float:
        """Tokens the float bucket may be off by at ``t``: rounding of the sum, plus one float
        step of time at the refill rate."""
        return TOKENS_TOL * max(1.0, float(self.capacity)) + 4 * math.ulp(t) * float(self.rate)

    def take(self) -> bool:
        now = self.now
        level = self.model_level(now)
        took = self.bucket.try_take(now)
        event("take succeeded" if took else "take refused")
        if took != (level >= 1):
            event("float rounding at a token boundary")
        if took != (level >= 1):
            assert abs(float(level) - 1.0) <= self.tol(now), (
                f"try_take({now!r}) = {took} but the model has {float(level)!r} tokens"
            )
        if took:
            self.promised = None
            self.m_tokens = max(level - 1, Fraction(0))
            self.m_at = max(self.m_at, Fraction(now))
            self.record_take(now)
        return took

    def record_take(self, t: float) -> None:
        """Check every window that ends with this take: for each earlier take i (0-based),
        n - i + 1 <= capacity + rate * (t_n - t_i), i.e. (n + 1 - rate t_n) + max_i(rate t_i - i)
        <= capacity."""
        n = len(self.takes)
        self.takes.append(t)
        term = self.rate * Fraction(t) - n
        self.worst = term if self.worst is None else max(self.worst, term)
        excess = (n + 1 - self.rate * Fraction(t)) + self.worst - self.capacity
        assert excess <= WINDOW_TOL, (
            f"{float(excess)!r} more takes than burst + rate*w/per in a window ending at {t!r}"
        )

    # ---- time

    @rule(dt=dts)
    def advance(self, dt):
        self.now += dt

    @rule(tokens=st.floats(0, 3))
    def advance_by_tokens(self, tokens):
        """Move by the time ``tokens`` tokens take to refill (lands near token boundaries)."""
        self.now += tokens * self.config.per / self.config.rate

    @rule()
    def advance_to_next_token(self):
        due = self.bucket.next_token_at(self.now)
        assert due >= self.now
        self.check_next_token_at(due)
        self.now = due

    # ---- takes

    @rule()
    def try_take(self):
        self.take()

    @rule(k=st.integers(1, 12))
    def take_many_at_once(self, k):
        for _ in range(k):
            if not self.take():
                break

    @rule()
    def no_starvation(self):
        """Waiting until next_token_at and taking then always succeeds."""
        due = self.bucket.next_token_at(self.now)
        self.check_next_token_at(due)
        self.now = due
        assert self.take(), f"no token at {due!r}, the time next_token_at named"

    @rule()
    def ask_next_token_at(self):
        """The actor asks when to wake up; it may poll (fail to take) before it wakes."""
        self.promised = self.bucket.next_token_at(self.now)
        self.check_next_token_at(self.promised)

    @precondition(lambda self: self.promised is not None)
    @rule()
    def wake_up_when_promised(self):
        """No starvation: a promise holds until the next successful take, whatever was polled
        in between."""
        promised, self.promised = self.promised, None
        self.now = max(self.now, promised)
        assert self.take(), f"no token at {self.now!r}, after next_token_at promised {promised!r}"

    @rule(rounds=st.lists(st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=6),
                          min_size=1, max_size=4))
    def poll_early_then_wake_up(self, rounds):
        """The bucket runs dry; the actor sleeps until next_token_at, is woken early (messages)
        and polls, then sleeps again until the same instant: the token must be there then."""
        for fractions in rounds:
            for _ in range(min(int(self.capacity) + 1, 120)):
                if not self.take():
                    break
            promised = self.bucket.next_token_at(self.now)
            for fraction in sorted(fractions):
                self.now = max(self.now, self.now + fraction * (promised - self.now))
                if self.now < promised:
                    self.take()
            self.now = max(self.now, promised)
            assert self.take(), (
                f"no token at {self.now!r}, after next_token_at promised {promised!r}"
            )

    @precondition(lambda self: self.bucket.peek(self.now) >= 1)
    @rule()
    def a_token_now_means_next_token_at_is_now(self):
        assert self.bucket.next_token_at(self.now) == self.now

    def check_next_token_at(self, due: float) -> None:
        now = self.now
        bucket = self.bucket
        if due == now:
            assert bucket.peek(now) >= 1.0
            return
        assert due > now
        assert bucket.peek(due) >= 1.0, f"next_token_at named {due!r} but no token then"
        before = math.nextafter(due, -math.inf)
        assert before < now or bucket.peek(before) < 1.0, (
            f"a token was available at {before!r}, before next_token_at's {due!r}"
        )
        assert abs(float(self.model_level(due)) - 1.0) <= self.tol(due)

    # ---- invariants

    @invariant()
    def valid(self):
        self.bucket.check_valid()
        assert 0.0 <= self.bucket.tokens <= self.bucket.capacity

    @invariant()
    def agrees_with_the_model(self):
        level = self.bucket.peek(self.now)
        assert 0.0 <= level <= self.bucket.capacity
        assert abs(level - float(self.model_level(self.now))) <= self.tol(self.now), (
            f"bucket has {level!r} tokens, the model {float(self.model_level(self.now))!r}"
        )

    def teardown(self):
        """Every window of the whole history, the plain O(n^2) way (floats, small tolerance)."""
        takes = getattr(self, "takes", [])
        if not takes:
            return
        capacity, rate = float(self.capacity), self.config.rate / self.config.per
        for i in range(len(takes)):
            for j in range(i, len(takes)):
                w = takes[j] - takes[i]
                assert j - i + 1 <= capacity + rate * w + WINDOW_TOL * (1 + rate * w), (
                    f"{j - i + 1} takes within {w!r} s"
                )


TestThrottle = ThrottleMachine.TestCase
