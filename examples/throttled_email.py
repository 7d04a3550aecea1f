"""A newsletter sender throttled to 100 emails a minute.

    python examples/throttled_email.py [journal_path]   # default: a fresh temporary directory

The mail provider allows 100 messages a minute. ``Throttle(100, per=60)`` is a token bucket of
100 tokens, full at spawn and refilled at 100 a minute: the first 100 messages go out at once,
then one every 0.6 s, however many workers are free. A password reset enqueued behind the
newsletter with ``priority="critical"`` takes the very next token.
"""

from __future__ import annotations

import sys
import tempfile

import trio

import actorq


async def main(path: str) -> None:
    sent: list[tuple[float, str]] = []

    async def send(job: actorq.Job) -> str:
        sent.append((trio.current_time(), job.payload["to"]))
        await trio.sleep(0.01)  # the provider's API call
        return "250 OK"

    async with actorq.open_runtime(path):
        outbox = await actorq.spawn_queue(
            "newsletter", send, concurrency=20, throttle=actorq.Throttle(100, per=60.0))
        t0 = trio.current_time()
        await outbox.enqueue_batch(
            [{"to": f"reader{n}@example.com"} for n in range(1, 104)], priority="low")
        await trio.sleep(0.2)
        await outbox.enqueue({"to": "ada@example.com", "reset": True}, priority="critical")
        await outbox.join()

    offsets = [t - t0 for t, _to in sent]
    print(f"{len(sent)} emails sent")
    print(f"the first 100 within {offsets[99]:.2f}s (the bucket starts full)")
    for (_t, to), offset in zip(sent[100:], offsets[100:]):
        print(f"then {to:<24} at +{offset:.1f}s")
    gaps = [b - a for a, b in zip(offsets[100:], offsets[101:])]
    print(f"one every {sum(gaps) / len(gaps):.1f}s after the burst (100 a minute)")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:
        with tempfile.TemporaryDirectory(prefix="actorq-throttle-") as tmp:
            trio.run(main, tmp)
