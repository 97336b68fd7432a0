"""Allocations per user, counted across the worker processes of one relay.

Each worker has its own TURN core, and the kernel spreads a user's clients over the
workers by 5-tuple; a per-user quota counted per worker would let a user hold
``user_quota`` allocations at every worker.  :class:`SharedLedger` is a count-min
sketch in shared memory, made by the supervisor before it forks the workers: two
tables of 65,536 counters, a user counted in one counter of each (slots from a BLAKE2b
digest of the name).  A user's count is the smaller of its two counters: exact unless
another user collides with it in both, and then too high, never too low — a quota is
never exceeded.  One lock guards both tables; it is taken once per Allocate and once
per allocation's end, never per packet.  Bandwidth quotas stay per worker.
"""

from __future__ import annotations

import hashlib
import multiprocessing

SLOTS = 1 << 16


class SharedLedger:
    """A :class:`~anyedge.proto.turn.server.QuotaLedger` shared by forked workers."""

    def __init__(self, slots: int = SLOTS) -> None:
        self.slots = slots
        self._counts = multiprocessing.get_context("fork").Array("i", 2 * slots)

    def _cells(self, user: str) -> tuple[int, int]:
        digest = hashlib.blake2b(user.encode(), digest_size=8).digest()
        first = int.from_bytes(digest[:4], "big") % self.slots
        return first, self.slots + int.from_bytes(digest[4:], "big") % self.slots

    def count(self, user: str) -> int:
        """How many allocations ``user`` holds at all workers (or more, on a collision)."""
        a, b = self._cells(user)
        with self._counts.get_lock():
            return int(min(self._counts[a], self._counts[b]))

    def take(self, user: str, quota: int) -> bool:
        a, b = self._cells(user)
        counts = self._counts
        with counts.get_lock():
            if min(counts[a], counts[b]) >= quota:
                return False
            counts[a] += 1
            counts[b] += 1
        return True

    def give_back(self, user: str) -> None:
        a, b = self._cells(user)
        counts = self._counts
        with counts.get_lock():
            counts[a] = max(0, counts[a] - 1)
            counts[b] = max(0, counts[b] - 1)
