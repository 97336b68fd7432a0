"""Orpheus: move every customer's requests off a failing path at once, back when it heals.

Each path (direct transit from a site, or the backbone to an egress) keeps a sliding
window of request outcomes over ``window_s``.  When at least ``min_samples`` outcomes are
in the window and the share of errors and timeouts reaches ``error_share``, the path is
*down*: one state per path, shared by every customer, so one decision moves all of their
requests to their next candidate together — no customer keeps failing while another has
already moved.  A down path gets no customer traffic, only probes (:meth:`Orpheus.record`
with ``probe=True``, sent by whoever drives this); after ``heal_successes`` successful
probes in a row, and not before ``hold_s`` has passed since it went down, it is *up*
again and the customers move back.

Sans-IO like :mod:`.argo`: outcomes and the time are passed in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field


@dataclass
class PathHealth:
    outcomes: deque[tuple[float, bool]] = field(default_factory=deque)  # (time, ok)
    down_since: float | None = None
    probes_ok: int = 0


@dataclass
class Orpheus:
    window_s: float = 10.0
    min_samples: int = 5
    error_share: float = 0.5
    heal_successes: int = 3
    hold_s: float = 5.0
    paths: dict[Hashable, PathHealth] = field(default_factory=dict)
    failovers: int = 0
    heals: int = 0

    def record(self, path: Hashable, ok: bool, now: float, probe: bool = False) -> None:
        """One request (or probe) over ``path`` at ``now`` succeeded or failed."""
        h = self.paths.setdefault(path, PathHealth())
        if h.down_since is not None:
            if not probe:
                return  # a request that was in flight when the path went down
            h.probes_ok = h.probes_ok + 1 if ok else 0
            if h.probes_ok >= self.heal_successes and now - h.down_since >= self.hold_s:
                h.down_since, h.probes_ok = None, 0
                h.outcomes.clear()
                self.heals += 1
            return
        h.outcomes.append((now, ok))
        while h.outcomes and h.outcomes[0][0] < now - self.window_s:
            h.outcomes.popleft()
        errors = sum(1 for _, good in h.outcomes if not good)
        if len(h.outcomes) >= self.min_samples and errors >= self.error_share * len(h.outcomes):
            h.down_since, h.probes_ok = now, 0
            self.failovers += 1

    def is_up(self, path: Hashable) -> bool:
        h = self.paths.get(path)
        return h is None or h.down_since is None

    def down(self) -> list[Hashable]:
        return [p for p, h in self.paths.items() if h.down_since is not None]

    def route(self, preference: Sequence[Hashable]) -> Hashable | None:
        """A customer's first path that is up, from its order of preference; None if none."""
        for p in preference:
            if self.is_up(p):
                return p
        return None
