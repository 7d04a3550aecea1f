"""Charging payments: retries with exponential backoff, Discard, a dead-letter queue, idempotency.

    python examples/payments.py [journal_path]     # default: a fresh temporary directory

- The payment gateway (a fake) times out now and then: Retry(max_attempts=4) with exponential
  backoff (0.05 s, 0.1 s, 0.2 s) rides that out.
- A declined card will never succeed: the handler raises ``actorq.Discard`` and the job fails at
  once, without burning retries.
- Every payment that failed for good lands on the dead-letter queue "payments.failed", whose
  handler records it for a human to look at.
- The job id is the order's idempotency key: a double-submitted payment is charged once.
"""

from __future__ import annotations

import sys
import tempfile

import attrs
import trio

import actorq


@attrs.frozen
class Payment:
    order: str
    card: str
    cents: int


class GatewayTimeout(Exception):
    pass


class CardDeclined(Exception):
    pass


class FakeGateway:
    """Cards ending in 0002 are declined; 0003 times out twice, then works; 0004 always
    times out. Everything else is charged at once."""

    def __init__(self) -> None:
        self.charges: list[tuple[str, int]] = []
        self._calls: dict[str, int] = {}

    async def charge(self, payment: Payment) -> str:
        await trio.sleep(0.02)  # a network round trip
        calls = self._calls[payment.order] = self._calls.get(payment.order, 0) + 1
        if payment.card.endswith("0002"):
            raise CardDeclined("card declined: insufficient funds")
        if payment.card.endswith("0004") or (payment.card.endswith("0003") and calls <= 2):
            raise GatewayTimeout(f"gateway timed out (call {calls})")
        self.charges.append((payment.order, payment.cents))
        return f"ch_{payment.order}_{len(self.charges)}"


gateway = FakeGateway()
failed_payments: list[dict] = []


async def charge(job: actorq.Job) -> dict:
    payment: Payment = job.payload
    try:
        charge_id = await gateway.charge(payment)
    except CardDeclined as exc:
        raise actorq.Discard(str(exc)) from exc  # retrying cannot help: fail now
    return {"charge": charge_id, "cents": payment.cents}


async def record_failed_payment(job: actorq.Job) -> None:
    letter = job.payload  # {"job_id", "queue", "payload", "error", "attempts"}
    failed_payments.append(letter)
    print(f"  [payments.failed] order {letter['payload']['order']}: {letter['error']} "
          f"(after {letter['attempts']} attempt(s)) -> flagged for review", flush=True)


def on_error(job: actorq.Job, exc: BaseException) -> None:
    print(f"  order {job.payload.order}: attempt {job.attempt} failed: {exc}", flush=True)


async def main(path: str) -> None:
    async with actorq.open_runtime(path):
        dead = await actorq.spawn_queue("payments.failed", record_failed_payment)
        payments = await actorq.spawn_queue(
            "payments", charge,
            concurrency=4,
            payload_type=Payment,
            retry=actorq.Retry(max_attempts=4, backoff=actorq.exponential(0.05, max=1.0)),
            timeout=10.0,
            dead_letter="payments.failed",
            hooks=actorq.Hooks(on_error=on_error),
        )

        orders = [
            Payment("A-1001", "4242-4242-4242-0001", 1999),
            Payment("A-1002", "4242-4242-4242-0002", 4500),   # declined
            Payment("A-1003", "4242-4242-4242-0003", 1250),   # flaky gateway, then fine
            Payment("A-1004", "4242-4242-4242-0004", 9900),   # gateway down for good
        ]
        ids = {}
        for p in orders:
            ids[p.order] = await payments.enqueue(p, job_id=f"charge-{p.order}")
        # The customer double-clicked "Pay": same idempotency key, nothing new is recorded.
        again = await payments.enqueue(orders[0], job_id="charge-A-1001")
        print(f"double submit of A-1001 returned the same job id: {again == ids['A-1001']}")

        for order, job_id in ids.items():
            try:
                result = await payments.wait(job_id)
                info = await payments.status(job_id)
                print(f"order {order}: charged {result['charge']} "
                      f"({result['cents'] / 100:.2f} USD, attempts={info.attempts})")
            except actorq.JobFailed as exc:
                info = await payments.status(job_id)
                print(f"order {order}: FAILED after {info.attempts} attempt(s): {exc.error}")

        # A client retrying after success is safe too: the finished job is still in the journal.
        await payments.enqueue(orders[0], job_id="charge-A-1001")
        await payments.join()
        await dead.join()
        print(f"failed payments flagged: {[d['payload']['order'] for d in failed_payments]}")
        charged = [order for order, _cents in gateway.charges]
        print(f"gateway charges: {charged}")
        print(f"A-1001 charged {charged.count('A-1001')} time(s)")
        print(f"payments stats: {await payments.stats()}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:
        with tempfile.TemporaryDirectory(prefix="actorq-payments-") as tmp:
            trio.run(main, tmp)
