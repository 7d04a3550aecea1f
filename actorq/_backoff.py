"""Pure backoff: the delay before retry n, with jitter drawn from an injected ``random.Random``."""

from __future__ import annotations

import math
import random
from typing import Any

from ._model import Exponential, Fixed, Linear


def backoff_delay(backoff: Any, n: int, rng: random.Random) -> float:
    """Seconds to wait before retry ``n`` (1 for the first retry) under ``backoff``.

    ``rng`` is only drawn from where the policy has jitter, so a seeded ``random.Random`` makes
    every delay reproducible.
    """
    if n < 1:
        raise ValueError(f"retry number must be >= 1 (got {n!r})")
    if isinstance(backoff, Fixed):
        return backoff.delay
    if isinstance(backoff, Linear):
        return backoff.delay * n
    if isinstance(backoff, Exponential):
        try:
            delay = backoff.initial * backoff.factor ** (n - 1)
        except OverflowError:
            delay = math.inf
        if backoff.max is not None:
            delay = min(delay, backoff.max)
        if backoff.jitter:
            delay = rng.uniform(delay * (1 - backoff.jitter), delay * (1 + backoff.jitter))
        return delay
    if isinstance(backoff, (int, float)) and not isinstance(backoff, bool):
        return float(backoff)
    if isinstance(backoff, tuple):
        return float(backoff[min(n, len(backoff)) - 1])
    delay = backoff(n)
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not delay >= 0:
        raise ValueError(f"backoff({n}) must return a number >= 0 (got {delay!r})")
    return float(delay)
