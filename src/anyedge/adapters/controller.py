"""The Traffic Manager's loop: observe, decide, journal, enforce.

:class:`Controller` joins the pure core (:func:`~anyedge.control.core.decide` and
:func:`~anyedge.control.core.apply`) to a world through its two interfaces
(:class:`~anyedge.control.interfaces.Telemetry` in,
:class:`~anyedge.control.interfaces.Actuator` out) and to a :class:`~.journal.Journal`.
Each :meth:`Controller.step` observes the network at ``now``, decides, and then:

* if the plan changes anything, applies it to the state, **journals** the decision (one
  committed transaction) and only **then** has the actuator enforce the new state;
* if the plan only holds (stale telemetry, no room), journals it with its reasons when
  the hold begins — the state does not change and nothing is enforced; while the same
  sites are held for the same reasons, step after step (an outage of Prometheus), nothing
  more is written; the next journaled decision ends them — moves, other holds, or, when
  the plan has nothing else to say, one ``hold_ended`` decision naming the decision that
  began them (``waiting``, a site that changed a moment ago, is never journaled);
* if the plan is empty, there is nothing to say and nothing is written.

The guarantee, for a controller killed at any instant and started again on its journal:

1. **The network never runs a state that is not journaled.**  A state is enforced only
   after the decision that leads to it is committed (``synchronous=FULL``, WAL).
2. **A restart converges on the last journaled state.**  On construction the controller
   resumes from :meth:`Journal.latest` — the state and the time of the last decision —
   and enforces that state once.  Enforcing is absolute and idempotent (the actuator
   makes the network *match* a state, it does not add to it), so whether the crash came
   before the enforcement, during it or after it, the network ends in the same state.
3. **No action is carried out twice.**  Actions are never replayed: what is re-enforced
   is their result, the state.  A step re-run at the time of the last journaled decision
   with the same observation (the same digest) is recognised as already decided: it
   decides nothing and writes nothing.  A step re-run with a different observation (the
   network has since moved) decides afresh from the resumed state, in which every site
   that changed at ``t`` has ``last_change = t``; with ``Config.min_interval > 0`` such a
   site takes part in no new move before ``t + min_interval``.  After that, a decision
   is a new decision on new measurements, not a duplicate.  Sequence numbers continue
   from the journal without gaps.
4. **A failed enforcement is retried.**  If the actuator raises, the exception reaches
   the caller and the next step enforces the state in force even if its plan is empty.

A journal that cannot hold the decision (disk full, ...) raises before anything is
enforced: that decision did not happen, and the next step decides again.

:meth:`Controller.run` is the one loop, in the twin, the lab and production alike: a
step every ``interval`` of its :class:`~.clock.Clock`, which is simulated in the twin
(waiting runs the world's ticks) and real elsewhere (waiting sleeps).  A failed
enforcement does not end the loop: the step reports the actuator's error and the next
step enforces again.  Its :attr:`Controller.config` may be replaced between steps (the
twin does, with the maximum thresholds it learns).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..control.core import Config, Failover, Observation, Plan, State, apply, decide, hold
from ..control.interfaces import Actuator, Telemetry
from ..errors import InputError
from .clock import Clock
from .journal import Journal, observation_digest


def _shape(state: State) -> tuple[int, int, int, int]:
    return state.sites, state.plans, int(state.shift.shape[0]), int(state.withdrawn.shape[0])


def _holds(plan: Plan) -> frozenset[tuple[int, str]] | None:
    """What a plan that moves nothing holds, by site and reason, leaving out ``waiting``
    (a site that changed a moment ago) and the end of a hold; ``None`` if it moves."""
    if any(a.kind != "hold" for a in plan.actions):
        return None
    return frozenset(
        (a.site, a.reason.code)
        for a in plan.actions
        if a.reason.code not in ("waiting", "hold_ended")
    )


@dataclass(frozen=True)
class Cycle:
    """One step of :meth:`Controller.run`: when, what was decided, and the actuator's
    error if carrying it out failed (the decision stands, journaled; the next step
    enforces it again)."""

    time: float
    plan: Plan
    error: Exception | None = None


class Controller:
    """One Traffic Manager, on one network, writing one journal."""

    def __init__(
        self,
        telemetry: Telemetry,
        actuator: Actuator,
        config: Config,
        journal: Journal,
        failover: Failover | None = None,
    ) -> None:
        journal.claim()  # one controller writes a journal
        self.telemetry = telemetry
        self.actuator = actuator
        self.config = config
        self.journal = journal
        self.failover = failover
        self.state: State | None = None  # the moves in force (None: none yet, empty)
        self.seq = 0  # the last journaled decision
        self.last_time: float | None = None  # its time
        self.last_digest: str | None = None  # of the observation it was taken on
        self._unenforced = False  # the actuator failed: enforce again next step
        self.enforce_error: BaseException | None = None  # ... and what it raised
        self.plan = Plan(())  # the plan of the last step
        self.observation: Observation | None = None  # ... and what it observed
        self._journaled_at: float | None = None  # monotonic commit time, until enforced
        self._lag = math.nan  # seconds from commit to enforcement done, last decision
        self._holding: frozenset[tuple[int, str]] | None = None  # holds going on ...
        self._held_at = 0  # ... journaled by this decision
        latest = journal.latest()
        if latest is not None:
            self.seq, self.last_time, self.state = latest
            self.last_digest = journal.digest(self.seq)
            last = Plan(tuple(a for _, a in journal.actions(self.seq - 1)))
            self._holding = _holds(last) or None
            self._held_at = self.seq
            resumed = Plan((hold(-1, "resumed", seq=self.seq),))
            self._enforce(self.state, resumed, self.last_time)

    @property
    def resumed(self) -> bool:
        """Whether this controller started from a journal that held decisions."""
        return self.last_time is not None

    def _enforce(self, state: State, plan: Plan, now: float) -> None:
        self._unenforced = True
        try:
            self.actuator.enforce(state, plan, now)
        except BaseException as e:
            self.enforce_error = e
            raise
        self._unenforced = False
        self.enforce_error = None
        if self._journaled_at is not None:
            self._lag = time.monotonic() - self._journaled_at
            self._journaled_at = None

    def journal_lag(self) -> float:
        """Seconds from the commit of a decision that changed the state to the end of its
        enforcement (retries included; from the oldest one not yet enforced); while it is
        not enforced yet, the seconds since its commit, growing.  NaN before the first
        such decision."""
        at = self._journaled_at
        return self._lag if at is None else time.monotonic() - at

    def step(self, now: float) -> Plan:
        """Observe, decide, journal, enforce (see the module doc); the plan decided."""
        obs = self.observation = self.telemetry.observe(now)
        sections = int(obs.section_site.shape[0])
        announced = self.config.announced
        prefixes = int(announced.shape[0]) if announced is not None else 0
        if self.state is None:
            self.state = State.empty(obs.sites, obs.plans, sections, prefixes)
        state = self.state
        if _shape(state) != (obs.sites, obs.plans, sections, prefixes):
            s, p, x, q = _shape(state)
            raise InputError.one(
                self.journal.path,
                "",
                f"the moves in force are for {s} sites, {p} plans, {x} sections and "
                f"{q} prefixes; the network has {obs.sites}, {obs.plans}, {sections} and "
                f"{prefixes}: start a new journal",
            )
        digest = observation_digest(obs)
        if now == self.last_time and digest == self.last_digest:
            if self._unenforced:
                self._enforce(state, Plan(()), now)
            self.plan = Plan((hold(-1, "already_decided", seq=self.seq),))
            return self.plan
        plan = self.plan = decide(obs, state, self.config, now, self.failover)
        held = _holds(plan)
        if held is not None:  # nothing but holds, or nothing
            if held == self._holding or (not held and self._holding is None):
                # nothing new to say: the same holds go on (journaled when they began)
                if self._unenforced:
                    self._enforce(state, plan, now)
                return plan
            if not held:  # the holds journaled have ended: say so, once
                plan = self.plan = Plan((hold(-1, "hold_ended", seq=self._held_at),))
        new = state if plan.empty else apply(state, plan, now)
        self.seq = self.journal.record(now, digest, plan, new)
        self.last_time, self.last_digest, self.state = now, digest, new
        self._holding = held or None
        self._held_at = self.seq
        if not plan.empty and self._journaled_at is None:
            # the journal lag runs from here (or from an earlier decision not yet enforced)
            self._journaled_at = time.monotonic()
        if not plan.empty or self._unenforced:
            self._enforce(new, plan, now)
        return plan

    def cycle(self, now: float) -> Cycle:
        """One step as the loop takes it: an actuator's failure is reported, not raised.

        Anything else that fails (telemetry, the journal) raises, as from :meth:`step`.
        """
        try:
            plan = self.step(now)
        except Exception as e:
            if e is not self.enforce_error:
                raise
            return Cycle(now, self.plan, e)
        return Cycle(now, plan)

    def run(
        self,
        clock: Clock,
        interval: float,
        *,
        start: float | None = None,
        until: float | None = None,
        stop: Callable[[], bool] | None = None,
        on_cycle: Callable[[Cycle], None] | None = None,
    ) -> int:
        """The loop: observe, decide, journal, enforce — at ``start`` (default: the
        clock's now), then every ``interval`` before ``until`` (default: forever), until
        ``stop()`` says so or the clock is stopped.  Each step is a :meth:`cycle`, handed
        to ``on_cycle``; a step that comes due when the previous one has overrun the next
        is skipped, never run late in a burst.  Returns the number of steps taken."""
        if not interval > 0:
            raise ValueError(f"interval must be above 0 s, got {interval:g}")
        first = clock.now() if start is None else float(start)
        n = steps = 0
        while True:
            t = first + n * interval  # not a running sum: no drift
            if until is not None and t >= until:
                break
            if stop is not None and stop():
                break
            if not clock.wait_until(t):
                break
            cycle = self.cycle(clock.now())
            steps += 1
            if on_cycle is not None:
                on_cycle(cycle)
            n = max(n + 1, math.ceil((clock.now() - first) / interval))
        return steps
