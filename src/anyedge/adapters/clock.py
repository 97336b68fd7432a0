"""The clock the Traffic Manager's loop runs on: simulated in the twin, real elsewhere.

One loop (:meth:`~.controller.Controller.run`) asks its clock two things: what time it
is (:meth:`Clock.now`) and to wait until the next decision is due
(:meth:`Clock.wait_until`).  As in SimPy, where the environment owns ``now`` and its
real-time variant only changes how a step waits, the two clocks differ only in waiting:

* :class:`SimClock` owns simulated time.  Waiting until ``t`` runs, in time order,
  whatever the world has scheduled up to ``t`` (the twin's ticks) and then *is* ``t``:
  no wall-clock time passes, and a day runs as fast as the world can be computed.
* :class:`WallClock` reads the system's clock and sleeps, on the monotonic clock so
  that a step of the system's clock (NTP) neither skips nor repeats a decision; a
  :meth:`WallClock.stop` from another thread ends the wait at once.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Protocol

# Of two things due at the same time, the lower priority runs first.  ``NORMAL`` runs
# before whoever waits until that time (the world moves, then the controller looks);
# ``LATE`` after it (what the world records of that instant includes the decision).
NORMAL, LATE = 0, 1


class Clock(Protocol):
    def now(self) -> float:
        """The time, seconds."""
        ...

    def wait_until(self, t: float) -> bool:
        """Return at time ``t`` (at once if it is past) with True; False if the clock
        was stopped before ``t``."""
        ...


class SimClock:
    """Simulated time that advances only by waiting, running what is due on the way.

    :meth:`at` and :meth:`every` schedule callbacks (called with their time);
    :meth:`wait_until` runs them in the order of (time, priority, scheduling), with
    :meth:`now` at each one's time, up to ``t`` (``LATE`` ones due exactly at ``t`` wait
    for the next call), and leaves the clock at ``t``.  With a ``resolution`` (the
    twin's tick) every time is rounded to a whole number of it, so that times reached
    by different sums (a decision every 60 s, a tick every 10 s) meet exactly.
    """

    def __init__(self, start: float = 0.0, resolution: float | None = None) -> None:
        if resolution is not None and not resolution > 0:
            raise ValueError(f"resolution must be above 0 s, got {resolution:g}")
        self.resolution = resolution
        self._now = self._snap(start)
        self._queue: list[tuple[float, int, int, Callable[[float], None]]] = []
        self._seq = 0

    def _snap(self, t: float) -> float:
        r = self.resolution
        return float(t) if r is None else round(t / r) * r

    def now(self) -> float:
        return self._now

    def at(self, t: float, fn: Callable[[float], None], priority: int = NORMAL) -> None:
        """Call ``fn(t)`` when the clock reaches ``t``."""
        t = self._snap(t)
        if t < self._now:
            raise ValueError(f"cannot schedule at {t:g}: the clock is already at {self._now:g}")
        heapq.heappush(self._queue, (float(t), priority, self._seq, fn))
        self._seq += 1

    def every(
        self,
        interval: float,
        fn: Callable[[float], None],
        start: float | None = None,
        until: float = float("inf"),
        priority: int = NORMAL,
    ) -> None:
        """Call ``fn`` at ``start`` (default: now), then every ``interval``, before ``until``."""
        if interval <= 0:
            raise ValueError(f"interval must be above 0 s, got {interval:g}")
        first = self._now if start is None else float(start)
        k = 0

        def fire(t: float) -> None:
            nonlocal k
            fn(t)
            k += 1
            nxt = first + k * interval  # not t + interval: no drift from adding up
            if nxt < until:
                self.at(nxt, fire, priority)

        if first < until:
            self.at(first, fire, priority)

    def wait_until(self, t: float) -> bool:
        t = self._snap(t)
        q = self._queue
        while q and (q[0][0] < t or (q[0][0] == t and q[0][1] < LATE)):
            due, _, _, fn = heapq.heappop(q)
            self._now = due
            fn(due)
        self._now = max(self._now, t)
        return True


class WallClock:
    """The system's clock: ``now`` in seconds since the epoch, advancing with the
    monotonic clock from the moment this object was made; waits can be stopped."""

    def __init__(self) -> None:
        self._epoch = time.time() - time.monotonic()
        self._stopped = threading.Event()

    def now(self) -> float:
        return self._epoch + time.monotonic()

    def wait_until(self, t: float) -> bool:
        while not self._stopped.is_set():
            left = t - self.now()
            if left <= 0:
                return True
            self._stopped.wait(left)
        return False

    def stop(self) -> None:
        """End the current wait and every later one (from any thread)."""
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()
