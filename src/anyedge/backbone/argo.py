"""Argo: pick the lowest-latency path to an origin from measurements, with hysteresis.

For one (landing site, origin) the candidates are direct transit and the backbone to
each useful egress.  Every measured round trip of a candidate goes into its estimate, an
exponentially weighted moving average (``alpha`` the weight of the newest sample).  The
chosen path changes only when another candidate's estimate beats the current one's by
more than the *margin* — ``max(min_gain_ms, min_gain * current)`` — and the current has
been held for at least ``hold_s``: noise around two nearly equal paths does not make
requests flap between them.  An estimate older than ``stale_s`` does not count, and if
the chosen path's estimate goes stale any fresh candidate replaces it.

Sans-IO: :meth:`Argo.measure` takes a sample and the time, :meth:`Argo.choose` the time;
nothing here sleeps, reads a clock or sends a probe, so the lab's prober and the twin's
clock drive the same code.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass, field


@dataclass
class Estimate:
    rtt_ms: float
    at: float  # time of the last sample, s


@dataclass
class Argo:
    candidates: Sequence[Hashable]
    alpha: float = 0.3
    min_gain_ms: float = 2.0
    min_gain: float = 0.05
    hold_s: float = 10.0
    stale_s: float = 60.0
    estimates: dict[Hashable, Estimate] = field(default_factory=dict)
    current: Hashable | None = None
    since: float = float("-inf")  # when the current path was chosen
    switches: int = 0

    def __post_init__(self) -> None:
        if not self.candidates:
            raise ValueError("Argo needs at least one candidate path")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")

    def measure(self, path: Hashable, rtt_ms: float, now: float) -> None:
        """One round-trip sample over ``path`` at time ``now`` (s)."""
        if path not in self.candidates:
            raise KeyError(path)
        e = self.estimates.get(path)
        if e is None or now - e.at > self.stale_s:
            self.estimates[path] = Estimate(rtt_ms, now)
        else:
            e.rtt_ms += self.alpha * (rtt_ms - e.rtt_ms)
            e.at = now

    def fresh(self, now: float) -> dict[Hashable, float]:
        """Each candidate's estimate not older than ``stale_s``."""
        return {p: e.rtt_ms for p, e in self.estimates.items() if now - e.at <= self.stale_s}

    def margin(self, current_ms: float) -> float:
        return max(self.min_gain_ms, self.min_gain * current_ms)

    def choose(self, now: float, exclude: Collection[Hashable] = ()) -> Hashable | None:
        """The path to use at ``now``: the current one unless another is clearly better.

        Paths in ``exclude`` (those :mod:`.orpheus` has taken down) count as unmeasured:
        if the current path is one of them, the best other path replaces it at once,
        whatever the hold."""
        live = {p: v for p, v in self.fresh(now).items() if p not in exclude}
        if not live:
            return self.current
        best = min(live, key=lambda p: (live[p], self.candidates.index(p)))
        cur = self.current
        if (
            cur is None
            or cur not in live
            or (
                best != cur
                and live[best] < live[cur] - self.margin(live[cur])
                and now - self.since >= self.hold_s
            )
        ):
            self._switch(best, now)
        return self.current

    def _switch(self, path: Hashable, now: float) -> None:
        if self.current is not None and path != self.current:
            self.switches += 1
        self.current, self.since = path, now
