"""OTP-style supervision: restart intensity over a sliding window, and escalation.

Supervisors in actorq are visible loops (see ``_actor.py``): they catch ``Exception`` (never
``BaseException``, so ``trio.Cancelled`` always passes through), record the crash here, and either
restart the child or escalate with :class:`SupervisorError`.
"""

from __future__ import annotations

import logging

import attrs

from ._errors import QueueStopped, SupervisorError
from ._model import CrashInfo, Restart, to_datetime

log = logging.getLogger("actorq")


@attrs.define(eq=False)
class CrashLog:
    """Crashes of one supervisor's children; escalates on the (max_restarts+1)-th within
    ``within`` seconds."""

    name: str
    policy: Restart
    _times: list[float] = attrs.field(factory=list)
    restarts: dict[str, int] = attrs.field(factory=dict)
    last_crash: CrashInfo | None = None

    def record(self, actor: str, exc: BaseException, now: float, wall: float) -> None:
        """Count a crash of ``actor`` at ``now`` (trio time; ``wall`` for reports); raise
        SupervisorError where it is one too many within the window."""
        self._times = [t for t in self._times if t > now - self.policy.within] + [now]
        self.last_crash = CrashInfo(actor, to_datetime(wall), f"{type(exc).__name__}: {exc}")
        if len(self._times) > self.policy.max_restarts:
            log.error("%s: %s crashed %d times within %ss; escalating",
                      self.name, actor, len(self._times), self.policy.within, exc_info=exc)
            raise SupervisorError(
                f"{self.name}: {len(self._times)} crashes within {self.policy.within}s "
                f"(max_restarts={self.policy.max_restarts}); last: {actor} crashed with "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self.restarts[actor] = self.restarts.get(actor, 0) + 1
        log.warning("%s: %s crashed (%s: %s); restarting", self.name, actor,
                    type(exc).__name__, exc, exc_info=exc)


def find_supervisor_error(exc: BaseException) -> SupervisorError | None:
    """The escalation inside ``exc`` (a bare error or an exception group), if any: a
    SupervisorError, but not a :class:`QueueStopped` (a request to another queue that had
    escalated is the requester's crash)."""
    if isinstance(exc, SupervisorError) and not isinstance(exc, QueueStopped):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_supervisor_error(inner)
            if found is not None:
                return found
    return None
