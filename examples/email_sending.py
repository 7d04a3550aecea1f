"""Sending email from a durable queue: concurrency, priorities, retries and logging hooks.

    python examples/email_sending.py [journal_path]     # default: a fresh temporary directory

The queue's payloads are ``Email`` attrs instances (``payload_type=Email``): they are journaled as
plain dicts and the handler gets ``Email`` objects back. The SMTP server is a fake that takes
0.1 s per message and refuses one recipient.
"""

from __future__ import annotations

import itertools
import logging
import sys
import tempfile

import attrs
import trio

import actorq

log = logging.getLogger("mailer")


@attrs.frozen
class Email:
    to: str
    subject: str
    body: str = ""


class RecipientRefused(Exception):
    pass


_message_ids = itertools.count(1001)


async def smtp_send(email: Email) -> str:
    """A stand-in for an async SMTP client: 0.1 s per message."""
    await trio.sleep(0.1)
    if email.to.endswith("@invalid.example"):
        raise RecipientRefused(f"550 no such user: {email.to}")
    return f"250 OK id={next(_message_ids)}"


async def send_email(job: actorq.Job) -> str:
    email: Email = job.payload  # an Email instance, thanks to payload_type=Email
    return await smtp_send(email)


# Hooks run after the transition they report is durable in the journal.
def log_sent(job: actorq.Job, result: str) -> None:
    log.info("sent     %-26s %-24r %s", job.payload.to, job.payload.subject, result)


def log_retry(job: actorq.Job, exc: BaseException) -> None:
    log.warning("attempt %d to %s failed: %s", job.attempt, job.payload.to, exc)


def log_gave_up(job: actorq.Job, exc: BaseException) -> None:
    log.error("gave up  %s after %d attempts: %s", job.payload.to, job.attempt, exc)


async def main(path: str) -> None:
    async with actorq.open_runtime(path):
        outbox = await actorq.spawn_queue(
            "email", send_email,
            concurrency=3,
            payload_type=Email,
            retry=actorq.Retry(max_attempts=2, backoff=actorq.fixed(0.1)),
            timeout=5.0,
            hooks=actorq.Hooks(on_success=log_sent, on_error=log_retry, on_failure=log_gave_up),
        )

        # The relay is in maintenance: hold the queue while mail piles up.
        await outbox.pause()
        newsletter = [Email(f"reader{n}@example.com", "Our March newsletter") for n in range(1, 7)]
        await outbox.enqueue_batch(newsletter, priority="low")
        welcome = await outbox.enqueue(Email("new.user@example.com", "Welcome aboard"),
                                       priority="high")
        bounce = await outbox.enqueue(Email("nobody@invalid.example", "Your invoice"))
        reset = await outbox.enqueue(Email("ada@example.com", "Reset your password"),
                                     priority="critical")
        log.info("queued: %s", await outbox.stats())

        # Back online: the password reset and the welcome mail go out first.
        await outbox.resume()
        await outbox.join()

        # Jobs started in the same scheduling round share started_at: priority broke the tie.
        sent = await outbox.list("completed")
        sent.sort(key=lambda info: (info.started_at, info.priority, info.created_at))
        log.info("delivered in this order: %s",
                 ", ".join(info.payload["to"].split("@")[0] for info in sent))
        log.info("reset result: %s", await outbox.wait(reset))
        log.info("welcome: %s", (await outbox.status(welcome)).state.value)
        try:
            await outbox.wait(bounce)
        except actorq.JobFailed as exc:
            log.info("bounce: JobFailed(%s)", exc.error)
        log.info("stats: %s", await outbox.stats())


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                        format="%(relativeCreated)5.0fms %(levelname)-7s %(message)s")
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:
        with tempfile.TemporaryDirectory(prefix="actorq-email-") as tmp:
            trio.run(main, tmp)
