"""A binary heap of job ids with lazy deletion (pure; no trio, no I/O).

Removing an id only forgets its live token; the stale entry is skipped when it surfaces, and the
heap is rebuilt once stale entries outnumber live ones twice over (as trio's ``Deadlines`` does).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

#: A heap entry: the items of its key (a tuple), then its token, then its id. Flat, not
#: ``(key, token, id)``: comparing nested tuples costs ~1.7x as much per heap step.
Entry = tuple[Any, ...]


class KeyedHeap:
    """Ids ordered by a sort key (a tuple); at most one live entry per id."""

    __slots__ = ("_heap", "_live", "_counter")

    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._live: dict[str, int] = {}
        self._counter = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._live

    def ids(self) -> Iterable[str]:
        """The live ids, in no particular order."""
        return self._live.keys()

    def push(self, job_id: str, key: tuple[Any, ...]) -> None:
        """Add ``job_id`` under ``key``, replacing any live entry it had."""
        self._counter = counter = self._counter + 1
        self._live[job_id] = counter
        heap = self._heap
        heapq.heappush(heap, key + (counter, job_id))
        if len(heap) > 2 * len(self._live) + 64:  # (the test of _maybe_prune, inlined)
            self._maybe_prune()

    def remove(self, job_id: str) -> bool:
        """Forget ``job_id``; True where it was in the heap."""
        found = self._live.pop(job_id, None) is not None
        if found:
            self._maybe_prune()
        return found

    def peek(self) -> Entry | None:
        """The smallest live entry (``entry[0]``: its key's first item; ``entry[-1]``: its id),
        or None."""
        heap, live = self._heap, self._live
        while heap:
            entry = heap[0]
            if live.get(entry[-1]) == entry[-2]:
                return entry
            heapq.heappop(heap)
        return None

    def pop(self) -> Entry:
        """Remove and return the smallest live entry (as :meth:`peek`); IndexError when empty."""
        heap, live = self._heap, self._live
        while heap:  # (peek() inlined: this runs per job started)
            entry = heapq.heappop(heap)
            job_id = entry[-1]
            if live.get(job_id) == entry[-2]:
                del live[job_id]
                return entry
        raise IndexError("pop from an empty KeyedHeap")

    def sorted_entries(self) -> list[Entry]:
        """The live entries, smallest first (ties: in the order they were pushed)."""
        live = self._live
        return [entry for entry in sorted(self._heap) if live.get(entry[-1]) == entry[-2]]

    def replace(self, entries: list[Entry]) -> None:
        """Hold exactly ``entries`` (live ones, sorted, as :meth:`sorted_entries` gives them: a
        sorted list is a heap, so no heapify, and no stale entries are left)."""
        self._heap = entries
        self._live = {entry[-1]: entry[-2] for entry in entries}

    def _maybe_prune(self) -> None:
        if len(self._heap) > 2 * len(self._live) + 64:
            live = self._live
            self._heap = [e for e in self._heap if live.get(e[-1]) == e[-2]]
            heapq.heapify(self._heap)

    def check_valid(self) -> None:
        """Assert the heap property and that every live id has exactly one entry."""
        heap = self._heap
        for i in range(1, len(heap)):
            assert heap[(i - 1) // 2] <= heap[i], "heap property violated"
        tokens = {(entry[-1], entry[-2]) for entry in heap}
        for job_id, token in self._live.items():
            assert (job_id, token) in tokens, f"live id {job_id!r} has no heap entry"
