"""A binary heap of job ids with lazy deletion (pure; no trio, no I/O).

Removing an id only forgets its live token; the stale entry is skipped when it surfaces, and the
heap is rebuilt once stale entries outnumber live ones twice over (as trio's ``Deadlines`` does).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any


class KeyedHeap:
    """Ids ordered by a sort key (a tuple); at most one live entry per id."""

    __slots__ = ("_heap", "_live", "_counter")

    def __init__(self) -> None:
        self._heap: list[tuple[Any, int, str]] = []
        self._live: dict[str, int] = {}
        self._counter = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._live

    def ids(self) -> Iterable[str]:
        """The live ids, in no particular order."""
        return self._live.keys()

    def push(self, job_id: str, key: Any) -> None:
        """Add ``job_id`` under ``key``, replacing any live entry it had."""
        self._counter += 1
        self._live[job_id] = self._counter
        heapq.heappush(self._heap, (key, self._counter, job_id))
        self._maybe_prune()

    def remove(self, job_id: str) -> bool:
        """Forget ``job_id``; True where it was in the heap."""
        found = self._live.pop(job_id, None) is not None
        if found:
            self._maybe_prune()
        return found

    def peek(self) -> tuple[Any, str] | None:
        """The smallest live ``(key, id)``, or None."""
        heap = self._heap
        while heap:
            key, token, job_id = heap[0]
            if self._live.get(job_id) == token:
                return key, job_id
            heapq.heappop(heap)
        return None

    def pop(self) -> tuple[Any, str]:
        """Remove and return the smallest live ``(key, id)``; IndexError when empty."""
        heap, live = self._heap, self._live
        while heap:  # (peek() inlined: this runs per job started)
            key, token, job_id = heapq.heappop(heap)
            if live.get(job_id) == token:
                del live[job_id]
                return key, job_id
        raise IndexError("pop from an empty KeyedHeap")

    def sorted_items(self) -> list[tuple[Any, str]]:
        """The live ``(key, id)`` pairs, smallest first (ties: in the order they were pushed)."""
        live = self._live
        return [(key, job_id) for key, token, job_id in sorted(self._heap)
                if live.get(job_id) == token]

    def replace(self, items: list[tuple[Any, str]]) -> None:
        """Hold exactly ``items``, ``(key, id)`` pairs sorted by key (a sorted list is a heap:
        no heapify, and no stale entries left)."""
        first = self._counter + 1
        self._heap = [(key, token, job_id)
                      for token, (key, job_id) in enumerate(items, first)]
        self._live = {job_id: token for token, (_key, job_id) in enumerate(items, first)}
        self._counter = first + len(items) - 1

    def _maybe_prune(self) -> None:
        if len(self._heap) > 2 * len(self._live) + 64:
            live = self._live
            self._heap = [e for e in self._heap if live.get(e[2]) == e[1]]
            heapq.heapify(self._heap)

    def check_valid(self) -> None:
        """Assert the heap property and that every live id has exactly one entry."""
        heap = self._heap
        for i in range(1, len(heap)):
            assert heap[(i - 1) // 2] <= heap[i], "heap property violated"
        tokens = {(job_id, token) for _key, token, job_id in heap}
        for job_id, token in self._live.items():
            assert (job_id, token) in tokens, f"live id {job_id!r} has no heap entry"
