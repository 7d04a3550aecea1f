"""Rebuilding a search index entry once per burst of edits, debounced per document.

    python examples/search_index.py [journal_path]      # default: a fresh temporary directory

Editors save documents often; re-indexing on every save wastes work. With
``Debounce(0.5, key=doc, max_wait=2.0)`` each document's saves collapse into one rebuild, 0.5 s
after its last save -- and no later than 2 s after the first, so a document saved non-stop is
still re-indexed. Earlier saves end ``cancelled`` with ``superseded_by`` pointing at the next one,
and ``wait()`` on any of them returns what the surviving rebuild returned.
"""

from __future__ import annotations

import sys
import tempfile

import trio

import actorq


async def main(path: str) -> None:
    rebuilds: list[tuple[float, str, int]] = []
    t0 = trio.current_time()

    async def reindex(job: actorq.Job) -> str:
        doc, version = job.payload["doc"], job.payload["version"]
        rebuilds.append((trio.current_time() - t0, doc, version))
        await trio.sleep(0.02)  # tokenize and write the index entry
        return f"{doc}@v{version}"

    async with actorq.open_runtime(path):
        index = await actorq.spawn_queue(
            "search-index", reindex, concurrency=4,
            debounce=actorq.Debounce(0.5, key=lambda payload: payload["doc"], max_wait=2.0))

        async def editor(doc: str, saves: int, every: float) -> list[str]:
            ids = []
            for version in range(1, saves + 1):
                ids.append(await index.enqueue({"doc": doc, "version": version}))
                await trio.sleep(every)
            return ids

        results: dict[str, list[str]] = {}

        async def run_editor(doc: str, saves: int, every: float) -> None:
            results[doc] = await editor(doc, saves, every)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_editor, "guide.md", 5, 0.1)     # a quick burst
            nursery.start_soon(run_editor, "faq.md", 1, 0.0)       # a single save
            nursery.start_soon(run_editor, "changelog.md", 12, 0.3)  # saved non-stop
        await index.join()

        saves = sum(len(ids) for ids in results.values())
        print(f"{saves} saves -> {len(rebuilds)} rebuilds")
        for at, doc, version in sorted(rebuilds):
            print(f"  +{at:.1f}s rebuilt {doc:<13} at version {version}")
        first_guide = results["guide.md"][0]
        info = await index.status(first_guide)
        print(f"guide.md's first save: {info.state.value}, superseded_by set: "
              f"{info.superseded_by is not None}; wait() -> {await index.wait(first_guide)!r}")
        print(f"stats: {await index.stats()}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:
        with tempfile.TemporaryDirectory(prefix="actorq-debounce-") as tmp:
            trio.run(main, tmp)
