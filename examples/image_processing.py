"""Thumbnailing images with a plain (sync) handler run in worker threads.

    python examples/image_processing.py [journal_path]   # default: a fresh temporary directory

``resize`` is an ordinary function doing CPU work in pure Python, so actorq runs it in a worker
thread and the event loop stays responsive. ``concurrency=4`` runs four at once; a per-job
``timeout`` stops a panorama that takes too long (a thread cannot be cancelled: the attempt ends at
once and the thread's late result is ignored).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import zlib

import trio

import actorq


def render(width: int, height: int, seed: int) -> bytes:
    """A synthetic grayscale photo (stands in for decoding a JPEG)."""
    return bytes(((x * seed) ^ (y * 7) ^ (x * y)) & 0xFF
                 for y in range(height) for x in range(width))


def downscale(pixels: bytes, width: int, height: int, factor: int) -> tuple[bytes, int, int]:
    """Box-filter resize by ``factor``: each output pixel is the mean of a factor x factor block."""
    tw, th = width // factor, height // factor
    out = bytearray(tw * th)
    area = factor * factor
    for ty in range(th):
        rows = [pixels[(ty * factor + dy) * width:(ty * factor + dy + 1) * width]
                for dy in range(factor)]
        for tx in range(tw):
            x0 = tx * factor
            out[ty * tw + tx] = sum(sum(row[x0:x0 + factor]) for row in rows) // area
    return bytes(out), tw, th


_lock = threading.Lock()
_active = 0
max_active = 0
threads_used: set[str] = set()


def resize(job: actorq.Job) -> dict:
    """The handler: a plain function, so it runs in a worker thread."""
    global _active, max_active
    p = job.payload
    counted = p["name"].startswith("IMG_")
    with _lock:
        threads_used.add(threading.current_thread().name)
        if counted:
            _active += 1
            max_active = max(max_active, _active)
    try:
        pixels = render(p["width"], p["height"], p["seed"])
        thumb, tw, th = downscale(pixels, p["width"], p["height"], p["factor"])
        return {"name": p["name"], "thumbnail": [tw, th], "crc32": zlib.crc32(thumb)}
    finally:
        if counted:
            with _lock:
                _active -= 1


async def main(path: str) -> None:
    async with actorq.open_runtime(path):
        images = await actorq.spawn_queue("thumbnails", resize, concurrency=4, timeout=10.0)

        # A huge panorama, with a per-job timeout much shorter than the queue's 10 s.
        pano = await images.enqueue(
            {"name": "PANORAMA.jpg", "width": 6000, "height": 2000, "seed": 99, "factor": 8},
            timeout=0.25,
        )
        photos = [{"name": f"IMG_{n:04d}.jpg", "width": 640, "height": 480, "seed": n,
                   "factor": 4} for n in range(1, 25)]
        ids = await images.enqueue_batch(photos)  # one journal transaction for all 24
        print(f"enqueued {len(ids)} photos in one batch, and a panorama with timeout=0.25")

        # The event loop is free while the threads work: count heartbeats during the batch.
        beats = 0
        async with trio.open_nursery() as nursery:
            async def heartbeat() -> None:
                nonlocal beats
                while True:
                    await trio.sleep(0.05)
                    beats += 1

            nursery.start_soon(heartbeat)
            started = trio.current_time()
            await images.join()
            elapsed = trio.current_time() - started
            nursery.cancel_scope.cancel()

        for job_id in ids[:3]:
            result = await images.wait(job_id)
            print(f"{result['name']}: thumbnail {result['thumbnail'][0]}x{result['thumbnail'][1]}"
                  f" crc32={result['crc32']:08x}")
        print("...")
        info = await images.status(pano)
        print(f"PANORAMA.jpg: {info.state.value}: {info.error}")
        print(f"joined after {elapsed:.1f}s; the event loop ticked {beats} times meanwhile")
        print(f"at most {max_active} photos were resized at once (concurrency=4)")
        print(f"stats: {await images.stats()}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:
        with tempfile.TemporaryDirectory(prefix="actorq-images-") as tmp:
            trio.run(main, tmp)
