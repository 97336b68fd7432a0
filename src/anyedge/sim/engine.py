"""The digital twin: the whole network, tick by tick, under one controller.

Each tick (10 s by default) of a :class:`Twin` run:

1. **Events** start or end: servers, sections or whole sites fail, BGP sessions and
   cables go down, demand surges (:mod:`.scenario`).
2. **Routing**: each prefix's catchment comes from the routing engine for the current
   announcements — the world's, minus dark sites, minus the controller's withdrawals,
   over the Internet as the events left it — recomputed incrementally when they change.
   Demand spreads evenly over the prefixes.
3. **Demand**: every (AS, metro) sends its peak requests/s times its local hour's factor
   (:mod:`.demand`), times any surge; each plan's CPU cost turns requests into CPU time.
4. **Moves**: Plurimog forwards shares of plans to other sites, Duomog shifts shares of
   sections to their sisters, as the controller's state says.
5. **Servers**: a section serves up to its healthy capacity; the rest fails (5xx), and
   so does what the load balancer's table still sends to failed servers
   (:mod:`.servers`: sections that server events touch spread their load over their
   servers through the balancer's bucket table).  The p95 processing latency of each
   site rises steeply as its utilisation nears 1, with a shape and noise of its own, so
   the learned threshold has something to learn.
6. **Metrics**: failed requests, minutes of SLO breach (p95 above 20 ms), latency added
   to users (a longer route, or forwarding), traffic moved, stranded capacity, routing
   changes; and the cache misses each site serves, which become origin fetches.

Steps 3-6 before the noise are :func:`.tick.steady`.  Its inputs change far less
often than the ticks come: the demand once a simulated minute, the routing and the
controller's state when an event or a decision changes them, the health of sections,
sites and servers when an event starts or ends.  So a tick reuses the last tick's
:class:`.tick.Steady` (read-only arrays) while the demand, the routing (``_Run.A``) and
the controller's :class:`~anyedge.control.core.State` are the same objects — each is
replaced, never changed in place, when it changes — and the health counters
(``_Run.health``, ``Servers.version``) and the tick's length are the same.  What is
left for every tick is what the noise decides (the p95's lognormal factor, the SLO
breaches, the telemetry's jitter, each drawn from the run's generator in the same
order and amounts as without reuse) and the adding up, one tick at a time, so that
every float comes out as the tick-by-tick sum would (``Twin(..., cache=False)`` works
every tick out afresh; ``tests/test_sim_tick.py`` checks the two agree bit for bit).

Origin fetches (:mod:`.fetch`) do not depend on the controller: the paths Argo and
Orpheus choose are played once per scenario, a step per sample interval, and each run
weighs them by its own misses per site (``Totals.origin_fetch``).

The controller decides every ``decision_interval`` on telemetry ``telemetry_delay`` old
with ``telemetry_noise``: ``none`` never acts, ``withdraw`` may only withdraw prefixes
(the sledgehammer, checked against the predictor's atlas), ``manager`` is the full
Traffic Manager.  Every run of a scenario starts from the same seed, so the three differ
only by their controller.

The controller is the lab's and production's: :class:`~anyedge.adapters.Controller`,
its loop :meth:`~anyedge.adapters.Controller.run` and a journal (in memory unless the
caller gives one), through the Telemetry/Actuator interfaces.  Only its clock differs:
a :class:`~anyedge.adapters.clock.SimClock` on which the ticks above are scheduled, so
that the loop's wait for its next decision is what plays the world up to it.  Every
simulated hour the Traffic Manager (``manager``) learns each site's maximum threshold
from the samples so far and decides with the learned maximum where it is trusted and
lower than the static one (:meth:`_Run._relearn`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse

from ..adapters.clock import LATE, SimClock
from ..adapters.controller import Controller, Cycle
from ..adapters.journal import Journal
from ..control.core import Config, Failover, Observation, Plan, State
from ..control.interfaces import Actuator, Telemetry
from ..control.learn import fit_curve, learn_maximum, learned_config, relearn
from ..control.reasons import Names, render
from ..model.world import World
from ..predict import Predictor
from ..predict import Scenario as PredScenario
from ..routing import Announcement, Catchment, Faults, Router
from .demand import diurnal, local_hours
from .fetch import FETCH_KINDS, Fetches, miss_shares, tally
from .fetch import simulate as simulate_fetches
from .result import (
    FLOW_BIN_S,
    MODES,
    TAIL_S,
    Comparison,
    RunResult,
    Series,
    Totals,
    attribute,
)
from .scenario import SERVER_KINDS, Event, Scenario
from .servers import Fleet, Servers
from .tick import Fixed, Steady, steady

FloatArray = npt.NDArray[np.floating]
BoolArray = npt.NDArray[np.bool_]
SLO_MS = 20.0
SAMPLE_S = 60.0
LEARN_S = 3600.0  # the Traffic Manager learns each site's maximum this often
LEARN_FROM = 0.50  # ... of sites whose utilisation has reached this (the lowest maximum)
LAT_BIN_MS, LAT_MAX_MS = 0.05, 1000.0  # added-latency histogram: bins, and the last one
MAX_FETCH_CELLS = 50_000_000  # origin fetches kept per (site, origin, step): 250 MB


@dataclass
class _TickOut:
    k: Steady  # the tick's noiseless outcome
    jitter: FloatArray  # its telemetry's noise, a factor per site
    u: FloatArray  # utilisation per site
    p95: FloatArray  # processing latency per site
    fail: FloatArray  # failed requests/s per site
    load: FloatArray  # CPU ms/s per site
    out: FloatArray  # forwarded requests/s out of each site
    inn: FloatArray  # ... into each site
    fwd_ms: FloatArray  # mean extra round trip of a site's users for forwarding
    sec_load: FloatArray  # CPU ms/s sent to each section (its dead servers' share too)


# The failover shares of each world a twin was made on, while the world lives: one
# withdrawal per site, most of a twin's set-up on the default world (~6 CPU-s of a
# 30-minute day's ~10), the same for every scenario on that world, so a second twin on
# it (another scenario, as the test suite runs the default day and docs/simulate.md's
# faults day in one process) reuses them.  A world is not changed once built.
# (Worlds compare by their contents, so they are kept by id, each with a weak reference
# that drops its entry when the world goes.)
_FAILOVER: dict[int, tuple[weakref.ref[World], FloatArray]] = {}


class Twin:
    """One world and one scenario; :meth:`run` plays it under a controller."""

    def __init__(self, world: World, scenario: Scenario, cache: bool = True) -> None:
        self.world = world
        self.sc = scenario
        self.cache = cache  # ticks reuse their noiseless arithmetic (False: for tests)
        net, inet = world.network, world.internet
        e = inet.eyeballs
        self.S, self.P, self.E = len(net.sites), len(net.plans), len(e)
        self.Q = max(len(net.prefixes), 1)
        self.cost = net.plans.cpu_ms.astype(np.float64)
        self.peak = e.rps.astype(np.float64)
        self.mix = e.mix.astype(np.float64)
        self.mixcost = self.mix * self.cost[None, :]
        self.mix_both = np.hstack([self.mix, self.mixcost])  # one product through routing
        self.metro = e.metro  # each (AS, metro)'s metro, whose local time it keeps
        self.metro_offset = inet.metros.lon / 15.0
        self.lat_ss = world.latency.rtt_matrix(
            net.sites.lat, net.sites.lon, net.sites.lat, net.sites.lon
        )
        sec = net.sections
        self.sec_site = sec.site.astype(np.int64)
        self.sec_cap0 = sec.capacity.astype(np.float64)
        cap_site = np.bincount(self.sec_site, weights=self.sec_cap0, minlength=self.S)
        n_sec = np.bincount(self.sec_site, minlength=self.S)
        # a site's load splits over its sections by capacity; a site with no servers
        # splits it evenly over its empty sections, where all of it fails
        self.sec_share = np.where(
            cap_site[self.sec_site] > 0,
            self.sec_cap0 / np.maximum(cap_site[self.sec_site], 1e-9),
            1.0 / np.maximum(n_sec[self.sec_site], 1),
        )
        self.no_sections = n_sec == 0  # (a world built in code may have such sites)
        # the servers of each section, and their first tables
        self.fleet = Fleet(sec, sites=tuple(net.sites.code))
        self.multi = n_sec[self.sec_site] >= 2
        rng = np.random.default_rng(scenario.seed)
        self.base_ms = rng.uniform(3.0, 7.0, self.S)
        self.scale_ms = rng.uniform(1.2, 3.0, self.S)
        self.thresholds = net.sites.thresholds
        self.names = Names(  # what the journal calls things
            tuple(net.sites.code),
            tuple(net.plans.names),
            tuple(sec.name),
            tuple(net.prefixes.cidr) if len(net.prefixes) else ("anycast",),
        )
        self.announced0 = (
            net.prefixes.announced.copy()
            if len(net.prefixes)
            else np.ones((1, self.S), dtype=np.bool_)
        )
        self._routers: dict[object, Router] = {((), ()): Router(world)}
        base = self._router(Faults())
        self.c0 = base.catchment(
            Announcement(
                self.announced0[0].copy(), np.zeros(self.S, np.int64), np.zeros(self.S, np.int8)
            )
        )
        self.rtt0 = self.c0.eyeball_rtt_ms
        self.failover = self._failover()
        self.event_hit, self.event_gain = self._event_sites()
        # an event's window: from its start to its end plus a tail, for the metrics
        self.windows = np.array(
            [(e.start, e.end + TAIL_S) for e in scenario.events], dtype=np.float64
        ).reshape(-1, 2)
        self.miss = miss_shares(net.plans.names, dict(scenario.cache_miss))
        self.fixed = Fixed(
            self.S,
            self.sec_site,
            self.sec_cap0,
            self.sec_share,
            self.no_sections,
            self.base_ms,
            self.scale_ms,
            self.thresholds,
            self.miss,
            self.lat_ss,
            self.failover,
        )
        self._fetches: dict[tuple[Event, ...], Fetches] = {}  # shared with without_events()

    def fetches(self) -> Fetches | str:
        """The origin-fetch paths of this scenario, step by step (computed once); or why
        there are none (no origins, or too many cells to keep)."""
        sc = self.sc
        key = tuple(e for e in sc.events if e.kind in FETCH_KINDS)
        if key not in self._fetches:
            per_sample = max(1, round(SAMPLE_S / sc.tick))
            steps = (round(sc.duration / sc.tick) + per_sample - 1) // per_sample
            n_o = len(self.world.backbone.origins)
            cells = self.S * n_o * steps
            if not n_o:
                return "the world has no origins"
            if cells > MAX_FETCH_CELLS:
                return (
                    f"{self.S:,} sites × {n_o:,} origins × {steps:,} steps is "
                    f"{cells:,} (site, origin, step) cells, more than {MAX_FETCH_CELLS:,}"
                )
            self._fetches[key] = simulate_fetches(
                self.world, key, sc.seed, per_sample * sc.tick, steps
            )
        return self._fetches[key]

    # ------------------------------------------------------------------ set-up helpers

    def _router(self, faults: Faults) -> Router:
        """The routing engine under ``faults`` (the world's own graph, masked)."""
        key = (faults.links, faults.sessions)
        if key not in self._routers:
            self._routers[key] = self._routers[((), ())].with_faults(faults)
        return self._routers[key]

    def _failover(self) -> FloatArray:
        """Share of each site's users that land on each other site if it withdraws
        (read-only: computed once per world, see ``_FAILOVER``)."""
        ref, known = _FAILOVER.get(id(self.world), (None, None))
        if known is not None and ref is not None and ref() is self.world:
            return known
        p = Predictor(self.world)
        share = np.zeros((self.S, self.S))
        for s in range(self.S):
            for r, v in p.outcome(PredScenario("single", (s,))).shares().items():
                share[s, r] = v
        share.setflags(write=False)
        key = id(self.world)
        _FAILOVER[key] = (weakref.ref(self.world, lambda _: _FAILOVER.pop(key, None)), share)
        return share

    def _event_sites(self) -> tuple[BoolArray, BoolArray]:
        """Per event, the sites it hits and the sites BGP moves their users to (each
        event alone against the world's own routing, over every prefix)."""
        n = len(self.sc.events)
        hit = np.zeros((n, self.S), dtype=np.bool_)
        gain = np.zeros((n, self.S), dtype=np.bool_)
        rows = np.unique(self.announced0, axis=0)
        base = self._router(Faults())
        before = [base.catchment(self._announcement(r)) for r in rows]
        for i, e in enumerate(self.sc.events):
            if e.kind == "section_down":
                hit[i, self.sec_site[e.section]] = True
                continue
            if e.kind == "surge":
                where = self._surging(e, before[0].eyeball_site)
                for c in before:
                    s = c.eyeball_site[where]
                    hit[i, s[s >= 0]] = True
                continue
            if e.site >= 0:
                hit[i, e.site] = True
            if e.kind in ("servers_down", *SERVER_KINDS) or e.kind in FETCH_KINDS:
                continue
            for r, c in zip(rows, before, strict=True):
                if e.kind in ("site_dark", "maintenance"):
                    if not r[e.site]:
                        continue
                    ann = r.copy()
                    ann[e.site] = False
                    after = base.change(c, self._announcement(ann))
                else:
                    after = self._router(e.faults).catchment(self._announcement(r))
                a, b = c.eyeball_site, after.eyeball_site
                moved = a != b
                hit[i, a[moved & (a >= 0)]] = True
                gain[i, b[moved & (b >= 0)]] = True
            gain[i] &= ~hit[i]
        return hit, gain

    def _announcement(self, announced: BoolArray) -> Announcement:
        return Announcement(announced.copy(), np.zeros(self.S, np.int64), np.zeros(self.S, np.int8))

    def _surging(self, e: Event, site_e: npt.NDArray[np.int64]) -> BoolArray:
        """The users a surge event multiplies."""
        inet = self.world.internet
        ey = inet.eyeballs
        if e.country:
            return np.asarray(np.array(inet.metros.country)[ey.metro] == e.country)
        if e.metro >= 0:
            return np.asarray(ey.metro == e.metro)
        return np.asarray(site_e == e.site)

    # ------------------------------------------------------------------------- a run

    def run(
        self,
        mode: str,
        progress: Callable[[float], None] | None = None,
        journal: Journal | None = None,
    ) -> RunResult:
        """Play the scenario under the controller ``mode``; its decisions are journaled in
        ``journal`` (default: a journal in memory, dropped with the run)."""
        if mode not in MODES:
            raise ValueError(f"unknown controller {mode!r}")
        return _Run(self, mode, progress).play(journal)

    def compare(
        self, progress: Callable[[str, float], None] | None = None, reference: bool = True
    ) -> Comparison:
        """The scenario under each controller; with events and ``reference``, also the
        same day without them under each, and what each event cost (the reference runs
        report their progress as ``"<mode> reference"``)."""
        t0 = time.perf_counter()

        def play(twin: Twin, m: str, label: str) -> RunResult:
            report: Callable[[float], None] | None = None
            if progress is not None:
                report = functools.partial(progress, label)
            return twin.run(m, report)

        runs = {m: play(self, m, m) for m in MODES}
        refs: dict[str, RunResult] = {}
        if reference and self.sc.events:
            quiet = self.without_events()
            refs = {m: play(quiet, m, f"{m} reference") for m in MODES}
        net = self.world.network
        codes = list(net.sites.code)
        events = [
            {
                "at_s": e.start,
                "until_s": e.end,
                "kind": e.kind,
                "what": e.text,
                "sites": [codes[s] for s in np.flatnonzero(self.event_hit[i])],
                "receivers": [codes[s] for s in np.flatnonzero(self.event_gain[i])],
            }
            for i, e in enumerate(self.sc.events)
        ]
        return Comparison(
            scenario=self.sc.name,
            duration_s=self.sc.duration,
            tick_s=self.sc.tick,
            sites=codes,
            cities=list(net.sites.city),
            lat=[float(x) for x in net.sites.lat],
            lon=[float(x) for x in net.sites.lon],
            runs=runs,
            events=events,
            learned=runs["manager"].learned,
            wall_seconds=time.perf_counter() - t0,
            reference=refs,
            attribution={
                m: attribute(runs[m], refs[m], events, codes, self.sc.duration) for m in refs
            },
            start_utc_hour=self.sc.start_utc_hour,
        )

    def without_events(self) -> Twin:
        """The same twin (routing, failover shares, seed) on the same day without events."""
        quiet = copy.copy(self)
        quiet.sc = dataclasses.replace(self.sc, events=())
        quiet.event_hit = quiet.event_gain = np.zeros((0, self.S), dtype=np.bool_)
        quiet.windows = np.zeros((0, 2))
        return quiet


class _Run:
    """The mutable state of one run (see the module doc for a tick's steps)."""

    def __init__(self, twin: Twin, mode: str, progress: Callable[[float], None] | None) -> None:
        self.t = twin
        self.mode = mode
        self.progress = progress
        S, P, Q = twin.S, twin.P, twin.Q
        self.rng = np.random.default_rng(twin.sc.seed)
        self.sec_up = np.ones(twin.sec_site.size)  # healthy share of each section
        self.dark = np.zeros(S, dtype=np.bool_)
        self.faults = Faults()  # what the active events hold down in routing
        self.surge = np.ones(twin.E)
        self.state = State.empty(S, P, twin.sec_site.size, Q)
        self.catch: list[Catchment] = [twin.c0] * Q  # c0: the first prefix, as announced
        self.announced = np.repeat(twin.announced0[:1], Q, axis=0)
        self.active: list[Event] = []
        self.routing_changes = 0
        self.totals = Totals()
        self.history: deque[_TickOut] = deque()  # the ticks the telemetry may report
        self.samples_u: list[FloatArray] = []  # a sample a minute: utilisation, p95
        self.samples_p: list[FloatArray] = []
        self.flows = np.zeros((S, S))
        # metrics per sample interval (every tick added up), for what each event cost
        sc = twin.sc
        self.per_sample = max(1, round(SAMPLE_S / sc.tick))
        n_samples = (round(sc.duration / sc.tick) + self.per_sample - 1) // self.per_sample
        self.failed_s = np.zeros((n_samples, S))
        self.slo_s = np.zeros((n_samples, S))
        self.unrouted_s = np.zeros(n_samples)
        self.miss_s = np.zeros((n_samples, S))  # cache misses each site fetched
        self.withdrawn_s = np.zeros(n_samples)  # (prefix, site) pairs withdrawn, sampled
        self.flow_marks: list[FloatArray] = []  # self.flows at each FLOW_BIN_S
        self.seq_time: dict[int, float] = {}  # journaled decision -> its time
        self.moved_to = np.zeros((len(sc.events), S), dtype=np.bool_)
        self.now = 0.0
        self.ser: dict[str, npt.NDArray[np.float32]] = {}  # the series (play() sizes them)
        self.hist = np.zeros(0)
        self.worst = np.zeros(S)
        self.delay = 0  # telemetry's age, in ticks (play() sets it)
        self.demand: FloatArray = np.zeros(twin.E)  # requests/s of each (AS, metro), this minute
        self.m: _TickOut | None = None  # the last tick
        self._arr_key: object = None
        self._arr: tuple[FloatArray, FloatArray, float] = (np.zeros(0), np.zeros(0), 0.0)
        self._arr_in = np.empty_like(twin.mix_both)
        self._wd_key: object = None
        self._steady_key: object = None
        self._steady: Steady | None = None
        self._steady_of_objects: tuple[object, ...] = ()
        self.health = 0  # counted up when sections' or sites' health changes
        self.events_quiet_until = -np.inf  # the next time an event starts or ends
        self.ticks = 0
        self.breach_min = np.zeros(S)  # minutes of SLO breach by site
        self.breach_first = np.full(S, -1, dtype=np.int64)  # the tick of the first, or -1
        self._lat_key: object = None  # the added latency's bins of the users reached
        self._lat_bins: tuple[npt.NDArray[np.int64], BoolArray] = (
            np.zeros(0, np.int64),
            np.zeros(0, np.bool_),
        )
        self._lat_of_objects: tuple[object, ...] = ()
        self._wd_cache: list[npt.NDArray[np.bool_]] = []
        self._wd_sites: list[int] = []
        th = twin.thresholds
        self.cfg = Config(
            maximum=th[:, 0],
            target=th[:, 1],
            acceptable=th[:, 2],
            latency_ms=twin.lat_ss,
            announced=twin.announced0.copy(),
            can_forward=np.full(S, mode == "manager"),
            stale_after=max(120.0, 3 * twin.sc.telemetry_delay),
        )
        self._reroute()  # prefixes announced differently from the first get their own
        self.routing_changes = 0
        self.failover = Failover(twin.failover)
        self.telemetry: Telemetry = _TwinTelemetry(self)
        self.actuator: Actuator = _TwinActuator(self)
        self.controller: Controller | None = None  # made by play(), on its journal
        # the servers inside the sections (Unimog takes out failed ones under the manager)
        self.srv = Servers(twin.fleet, sc.events, unimog=mode == "manager")
        self.srv_u = np.zeros((n_samples, self.srv.watched_servers.size), dtype=np.float32)

    # --------------------------------------------------------------------- routing

    def _effective(self) -> npt.NDArray[np.bool_]:
        return self.t.announced0 & ~self.dark[None, :] & ~self.state.withdrawn

    def _reroute(self) -> None:
        want = self._effective()
        router = self.t._router(self.faults)
        new_router = router is not self.catch[0].router
        cache: dict[bytes, Catchment] = {}
        for q in range(self.t.Q):
            if not new_router and np.array_equal(want[q], self.announced[q]):
                continue
            key = want[q].tobytes()
            if key not in cache:
                ann = Announcement(
                    want[q].copy(), np.zeros(self.t.S, np.int64), np.zeros(self.t.S, np.int8)
                )
                prev = self.catch[q]
                cache[key] = (
                    router.change(prev, ann) if prev.router is router else router.catchment(ann)
                )
            self.routing_changes += int((want[q] != self.announced[q]).sum())
            self.catch[q] = cache[key]
        self.announced = want
        self._aggregate()

    def _aggregate(self) -> None:
        """The sparse map from users to sites: each prefix carries 1/Q of the demand."""
        rows, cols = [], []
        unreached = np.zeros(self.t.E)
        for c in self.catch:
            site = c.eyeball_site
            ok = site >= 0
            rows.append(site[ok])
            cols.append(np.flatnonzero(ok))
            unreached += ~ok
        data = np.full(sum(r.size for r in rows), 1.0 / self.t.Q)
        self.A = sparse.csr_matrix(
            (data, (np.concatenate(rows), np.concatenate(cols))), shape=(self.t.S, self.t.E)
        )
        self.unreached = unreached / self.t.Q
        self.unreached_any = bool(unreached.any())
        self.rtt = np.mean([c.eyeball_rtt_ms for c in self.catch], axis=0)
        self.site_e = self.catch[0].eyeball_site

    # ---------------------------------------------------------------------- events

    def _events(self, now: float) -> None:
        self.now = now
        if now < self.events_quiet_until:  # no event starts or ends before then
            return
        sc, changed = self.t.sc, False
        self.events_quiet_until = min(
            [e.start for e in sc.events if e.start > now]
            + [e.end for e in sc.events if e.end > now],
            default=np.inf,
        )
        for e in sc.events:
            if e.start <= now < e.end and e not in self.active:
                self.active.append(e)
                changed = True
                if e.kind in SERVER_KINDS:
                    self.srv.begin(e, now, self._seen_at(now))
            elif e in self.active and now >= e.end:
                self.active.remove(e)
                changed = True
                if e.kind in SERVER_KINDS:
                    self.srv.end(e, now)
        if not changed:
            return
        t = self.t
        self.sec_up[:] = 1.0
        self.dark[:] = False
        self.surge[:] = 1.0
        faults = Faults()
        for e in self.active:
            faults |= e.faults
            if e.kind == "servers_down":
                self.sec_up[t.sec_site == e.site] *= 1 - e.fraction
            elif e.kind == "section_down":
                self.sec_up[e.section] *= 1 - e.fraction
            elif e.kind in SERVER_KINDS:  # the servers failed or drained serve nothing
                self.sec_up[e.section] *= 1 - e.count / t.fleet.count[e.section]
            elif e.kind in ("site_dark", "maintenance"):
                self.dark[e.site] = True
            elif e.kind == "surge":
                self.surge[t._surging(e, self.site_e)] *= e.factor
        self.faults = faults
        self.health += 1
        self._reroute()

    def _seen_at(self, now: float) -> float:
        """When the controller first decides on telemetry from ``now``: its first
        decision at least ``telemetry_delay`` later."""
        sc = self.t.sc
        every = max(1, round(sc.decision_interval / sc.tick)) * sc.tick
        return float(np.ceil((now + sc.telemetry_delay) / every - 1e-9) * every)

    # ------------------------------------------------------------------------ play

    def play(self, journal: Journal | None = None) -> RunResult:
        """The run on a simulated clock: the world ticks, samples and learns as
        callbacks of the clock, and the controller's loop — the lab's, the same
        :meth:`Controller.run` — waits on it, which is what moves the world on."""
        t, sc = self.t, self.t.sc
        ticks = round(sc.duration / sc.tick)
        end = ticks * sc.tick
        per_sample = max(1, round(SAMPLE_S / sc.tick))
        per_decision = max(1, round(sc.decision_interval / sc.tick))
        delay = round(sc.telemetry_delay / sc.tick)
        n_samples = (ticks + per_sample - 1) // per_sample
        self.ser = {
            k: np.zeros((n_samples, t.S), dtype=np.float32)
            for k in ("u", "p95", "fail", "out", "in")
        }
        self.hist = np.zeros(int(LAT_MAX_MS / LAT_BIN_MS) + 1)  # added latency per user
        self.worst = np.zeros(t.S)
        self.per_sample, self.delay = per_sample, delay
        clock = SimClock(resolution=sc.tick)
        clock.every(sc.tick, self._advance, until=end)  # before a decision at that tick
        clock.every(per_sample * sc.tick, self._sample, until=end, priority=LATE)  # after
        actions: list[dict[str, object]] = []
        if self.mode == "none":
            clock.wait_until(end)
        else:
            own = journal is None
            journal = Journal.in_memory(self.t.names) if journal is None else journal
            try:
                self.controller = Controller(
                    self.telemetry, self.actuator, self.cfg, journal, self.failover
                )
                since = self.controller.seq  # a journal given may hold earlier decisions
                if self.mode == "manager":
                    clock.every(LEARN_S, self._relearn, start=LEARN_S, until=end, priority=LATE)
                first = -(-delay // per_decision) * per_decision  # the first tick with telemetry
                self.controller.run(
                    clock,
                    per_decision * sc.tick,
                    start=first * sc.tick,
                    until=end,
                    on_cycle=self._decided,
                )
                clock.wait_until(end)  # the ticks after the last decision
                actions = self._journaled(journal, since)
            finally:
                if own:
                    journal.close()
        self._finish(self.hist)
        codes = t.world.network.sites.code
        flows = {
            (codes[a], codes[b]): float(self.flows[a, b])
            for a, b in zip(*np.nonzero(self.flows > 0), strict=True)
        }
        ser = self.ser
        result = RunResult(
            self.mode,
            self.totals,
            Series(
                SAMPLE_S,
                ser["u"],
                ser["p95"],
                ser["fail"],
                ser["out"],
                ser["in"],
                self.failed_s,
                self.slo_s,
                self.unrouted_s,
                self.withdrawn_s,
            ),
            flows,
            {codes[i]: float(self.worst[i]) for i in range(t.S)},
            moved_to=[[codes[s] for s in np.flatnonzero(row)] for row in self.moved_to],
            actions=actions,
            flow_bins=self._flow_bins(),
            servers=self.srv.summary(self.srv_u, SAMPLE_S) if self.srv.watched else {},
        )
        result.learned = self._learn() if self.mode == "manager" else []
        return result

    def _advance(self, now: float) -> None:
        """One tick of the world (the module doc's steps 1-5), at ``now``."""
        sc = self.t.sc
        if now > 0 and now % FLOW_BIN_S == 0:  # the moves of the hour before
            self.flow_marks.append(self.flows.copy())
        self._events(now)
        if self.srv.pending:
            self.srv.due(now)
        if round(now / sc.tick) % self.per_sample == 0:
            self.demand = self._demand(now)
        self.m = self._tick(self.demand, sc.tick)
        self.history.append(self.m)
        while len(self.history) > self.delay + 1:
            self.history.popleft()

    def _sample(self, now: float) -> None:
        """Record the tick at ``now``, after the controller has decided at it."""
        sc, m = self.t.sc, self.m
        assert m is not None  # the tick at ``now`` came first
        i = round(now / sc.tick) // self.per_sample
        ser = self.ser
        ser["u"][i], ser["p95"][i] = m.u, m.p95
        ser["fail"][i], ser["out"][i], ser["in"][i] = m.fail, m.out, m.inn
        self.withdrawn_s[i] = float(self.state.withdrawn.sum())
        if self.srv_u.shape[1]:
            self.srv_u[i] = self.srv.utilisation(m.sec_load)
        self.worst = np.maximum(self.worst, np.where(np.isfinite(m.u), m.u, 10.0))
        self._latency_sample(self.demand, m, self.hist, self.per_sample * sc.tick)
        live = m.load > 0
        self.samples_u.append(np.where(live, m.u, np.nan))
        self.samples_p.append(np.where(live, m.p95, np.nan))
        if self.progress:
            self.progress(now / sc.duration)

    def _demand(self, now: float) -> FloatArray:
        # the day's factor of each metro (the same for all of its users: fewer to work out)
        hours = local_hours(0.0, self.t.sc.start_utc_hour + now / 3600.0) + self.t.metro_offset
        return np.asarray(self.t.peak * diurnal(hours)[self.t.metro] * self.surge)

    def _arriving(self, demand: FloatArray) -> tuple[FloatArray, FloatArray, float]:
        """(requests/s, CPU ms/s) per site and plan, and unrouted requests/s; cached
        until the demand or the routing changes."""
        key = (id(demand), id(self.A))
        if self._arr_key != key:
            # requests and CPU side by side through the sparse map: each column is summed
            # in the same order as alone
            # (into the same buffer each minute: 1.6 MB on the default world)
            x = np.multiply(demand[:, None], self.t.mix_both, out=self._arr_in)
            both = np.asarray(self.A @ x)
            P = self.t.P
            self._arr = (
                np.ascontiguousarray(both[:, :P]),
                np.ascontiguousarray(both[:, P:]),
                # (a dot product over every user wakes BLAS's threads: only if needed)
                float(demand @ self.unreached) if self.unreached_any else 0.0,
            )
            self._arr_key = key
        return self._arr

    def _tick(self, demand: FloatArray, dt: float) -> _TickOut:
        """The tick's noiseless outcome (reused, see ``_steady_of``), its noise drawn,
        and the metrics added up, tick by tick."""
        t, tot = self.t, self.totals
        k = self._steady_of(demand, dt)
        p95 = k.curve_ms * self.rng.lognormal(0.0, 0.08, t.S)
        # metrics
        tot.requests += k.requests_inc
        tot.served += k.served_inc
        tot.failed += k.failed_inc
        tot.unrouted += k.unrouted_inc
        breach = (p95 > SLO_MS) & k.live
        if breach.any():  # (the minutes by site, in the order sites first breach)
            self.breach_min[breach] += dt / 60.0
            first = breach & (self.breach_first < 0)
            self.breach_first[first] = self.ticks
        i = round(self.now / t.sc.tick) // self.per_sample
        self.failed_s[i] += k.fail_inc
        self.slo_s[i] += breach * (dt / 60.0)
        self.unrouted_s[i] += k.unrouted_inc
        self.miss_s[i] += k.miss_inc
        tot.forwarded += k.forwarded_inc
        tot.moved += k.moved_inc
        if k.wd_flow_inc is not None:
            self.flows += k.wd_flow_inc
        if k.fs.size:
            np.add.at(self.flows, (k.fs, k.fd), k.flow_inc)
        if k.moved_any:
            self._moved_in_windows(k.fs, k.fd, k.o_rps, k.wd_rps)
        tot.stranded_cpu_hours += k.stranded_inc
        noise = self.t.sc.telemetry_noise
        jitter = 1 + noise * self.rng.standard_normal(t.S)
        self.ticks += 1
        return _TickOut(
            k=k,
            jitter=jitter,
            u=k.u,
            p95=p95,
            fail=k.fail,
            load=k.load,
            out=k.out,
            inn=k.inn,
            fwd_ms=k.fwd_ms,
            sec_load=k.sec_load,
        )

    def _observed(self, m: _TickOut) -> Observation:
        """What the sites reported at tick ``m``: its outcome with the telemetry's noise
        (worked out only for the ticks the controller reads)."""
        k, jitter = m.k, m.jitter
        return Observation(
            utilisation=k.u_seen * jitter,
            cpu=k.served_plan * jitter[:, None],
            age=np.zeros(self.t.S),
            section_site=self.t.sec_site,
            section_utilisation=k.sec_u,
            section_cpu=k.sec_served,
            capacity=k.cap,
            arriving=k.cpu_plan * jitter[:, None],  # measured where requests enter
            section_capacity=k.sec_cap,
        )

    def _steady_of(self, demand: FloatArray, dt: float) -> Steady:
        """The tick's noiseless arithmetic (:mod:`.tick`), reused while its inputs stay:
        the same demand, routing (``self.A``) and controller state objects (each is
        replaced, never changed in place, when it changes), and the same health of
        sections and sites (``self.health``, counted up by every event that starts or
        ends) and of servers (``Servers.version``)."""
        key = (id(demand), id(self.A), id(self.state), self.health, self.srv.version, dt)
        if not self.t.cache or key != self._steady_key:
            self._steady = steady(
                self.t.fixed,
                self._arriving(demand),
                float(demand.sum()),
                self.state,
                self.sec_up,
                self.dark,
                self.srv,
                self._withdrawn_demand(demand),
                dt,
            )
            # (the objects themselves are held, so that no other takes their ids)
            self._steady_key, self._steady_of_objects = key, (demand, self.A, self.state)
        assert self._steady is not None
        return self._steady

    def _moved_in_windows(
        self,
        fs: npt.NDArray[np.int64],
        fd: npt.NDArray[np.int64],
        o_rps: FloatArray,
        wd_rps: FloatArray,
    ) -> None:
        """Note where the controller moves traffic from each event's sites (the sites it
        hits and their BGP receivers) while the event's window is open."""
        w = self.t.windows
        for e in np.flatnonzero((w[:, 0] <= self.now) & (self.now < w[:, 1])).tolist():
            src = self.t.event_hit[e] | self.t.event_gain[e]
            self.moved_to[e, fd[src[fs] & (o_rps > 0)]] = True
            gone = src & (wd_rps > 0)
            if gone.any():
                self.moved_to[e] |= (self.t.failover[gone] > 0).any(axis=0)

    def _withdrawn_demand(self, demand: FloatArray) -> FloatArray:
        """Requests/s per site that the controller's withdrawals send elsewhere."""
        wd = self.state.withdrawn
        out = np.zeros(self.t.S)
        if not wd.any():
            return out
        if self._wd_key is not wd:
            base = self.t.c0.eyeball_site
            self._wd_cache = [base == s for _, s in zip(*np.nonzero(wd), strict=True)]
            self._wd_sites = [int(s) for _, s in zip(*np.nonzero(wd), strict=True)]
            self._wd_key = wd
        for s, m in zip(self._wd_sites, self._wd_cache, strict=True):
            out[s] += float(demand[m].sum()) / self.t.Q
        return out

    def _latency_sample(
        self,
        demand: FloatArray,
        m: _TickOut,
        hist: FloatArray,
        weight_s: float,
    ) -> None:
        # each user's bin changes only with the routing (a new ``self.A``) and the
        # forwarding's extra round trip per site (a few hundred numbers, compared whole)
        key = (id(self.A), m.fwd_ms.tobytes())
        if not self.t.cache or key != self._lat_key:
            ok = (self.site_e >= 0) & np.isfinite(self.rtt)
            fwd = m.fwd_ms
            added = np.maximum(self.rtt - self.t.rtt0, 0.0) + np.where(
                self.site_e >= 0, fwd[np.maximum(self.site_e, 0)], 0.0
            )
            bins = np.minimum((added[ok] / LAT_BIN_MS).astype(np.int64), hist.size - 1)
            self._lat_bins = (bins, ok)
            self._lat_key, self._lat_of_objects = key, (self.A,)
        bins, ok = self._lat_bins
        hist += np.bincount(bins, weights=demand[ok] * weight_s, minlength=hist.size)

    def _decided(self, cycle: Cycle) -> None:
        """The controller's loop took a step: count it."""
        if cycle.error is not None:  # the twin's actuator cannot fail: a bug, say so
            raise cycle.error
        self.totals.decisions += 1
        self.totals.actions += sum(a.kind != "hold" for a in cycle.plan.actions)
        if self.controller is not None:  # when its last journaled decision was taken
            self.seq_time.setdefault(self.controller.seq, cycle.time)

    def _journaled(self, journal: Journal, since: int) -> list[dict[str, object]]:
        """The actions journaled in this run, with their times, for the report (a hold
        only where it starts: not while the same site holds for the same reason)."""
        names = self.t.names
        out: list[dict[str, object]] = []
        held: set[tuple[int, str]] = set()  # (site, code) held at the last decision
        holding: set[tuple[int, str]] = set()
        last = since
        for seq, a in journal.actions(since):
            if seq != last:
                held, holding, last = holding, set(), seq
            if a.reason.code == "hold_ended":  # the journal's bookkeeping, no site's action
                continue
            if a.kind == "hold":
                key = (a.site, a.reason.code)
                holding.add(key)
                if key in held:
                    continue

            def name(table: tuple[str, ...], i: int) -> str | None:
                return table[i] if 0 <= i < len(table) else None

            out.append(
                {
                    "time_s": self.seq_time.get(seq, float("nan")),
                    "kind": a.kind,
                    "site": name(names.sites, a.site),
                    "plan": name(names.plans, a.plan),
                    "to": name(names.sites, a.to),
                    "section": name(names.sections, a.section),
                    "prefix": name(names.prefixes, a.prefix),
                    "share": float(a.share),
                    "cpu": float(a.cpu),
                    "code": a.reason.code,
                    "reason": render(a.reason, names),
                }
            )
        return out

    def _flow_bins(self) -> dict[tuple[str, str], list[float]]:
        """Requests moved from each site to each other in each FLOW_BIN_S of the run."""
        marks = [np.zeros_like(self.flows), *self.flow_marks, self.flows]
        per_bin = np.diff(np.stack(marks), axis=0)
        codes = self.t.world.network.sites.code
        return {
            (codes[a], codes[b]): [float(v) for v in per_bin[:, a, b]]
            for a, b in zip(*np.nonzero(self.flows > 0), strict=True)
        }

    def _relearn(self, now: float) -> None:
        """Learn each site's maximum from the samples so far, as the reference's Traffic
        Manager does on a schedule, and give the controller those it can trust: from a
        fit, not the static fallback, of samples that reached the lowest maximum it may
        give (below, the knee of the curve is out of sight), and only where lower than
        the static maximum (above it, the fit is the only evidence, beyond the data)."""
        assert self.controller is not None
        if not self.samples_u:
            return
        u, p = np.array(self.samples_u), np.array(self.samples_p)
        maximum, _ = relearn(self.cfg, u, p, learn_from=LEARN_FROM)
        self.controller.config = learned_config(self.cfg, maximum)

    def _enforce(self, state: State) -> None:
        """The network now carries out ``state`` (the twin's actuator calls this)."""
        routing = not np.array_equal(state.withdrawn, self.state.withdrawn)
        self.state = state
        if routing:
            self._reroute()

    def _finish(self, hist: FloatArray) -> None:
        w = hist.sum()
        if w > 0:
            centres = (np.arange(hist.size) + 0.5) * LAT_BIN_MS
            self.totals.added_latency_mean_ms = float((hist * centres).sum() / w)
            cdf = np.cumsum(hist) / w
            self.totals.added_latency_p95_ms = float(centres[np.searchsorted(cdf, 0.95)])
        self.totals.routing_changes = self.routing_changes
        codes = self.t.world.network.sites.code
        first = np.flatnonzero(self.breach_first >= 0)
        first = first[np.argsort(self.breach_first[first], kind="stable")]
        self.totals.slo_breach_minutes = {codes[s]: float(self.breach_min[s]) for s in first}
        f = self.t.fetches()
        self.totals.origin_fetch = {"skipped": f} if isinstance(f, str) else tally(f, self.miss_s)

    def _learn(self) -> list[dict[str, object]]:
        u = np.array(self.samples_u)
        p = np.array(self.samples_p)
        codes = self.t.world.network.sites.code
        peak = np.nan_to_num(u, nan=-1.0).max(axis=0) if u.size else np.zeros(len(codes))
        busiest = np.argsort(-peak, kind="stable")[: min(12, int((peak > 0).sum()))]
        out: list[dict[str, object]] = []
        for s in busiest.tolist():
            ok = np.isfinite(u[:, s]) & np.isfinite(p[:, s])
            r = learn_maximum(u[ok, s], p[ok, s], static=float(self.t.thresholds[s, 0]))
            row: dict[str, object] = {
                "site": codes[s],
                "value": r.value,
                "method": r.method,
                "r2": r.r2_quadratic if r.method == "quadratic" else r.r2_linear,
                "reason": r.reason,
            }
            pick = np.flatnonzero(ok)[:: max(1, int(ok.sum()) // 300)]
            row["points_u"] = u[pick, s].tolist()
            row["points_p95"] = p[pick, s].tolist()
            if r.method != "static":  # the fit where it has data, not beyond
                grid = np.linspace(float(u[ok, s].min()), float(u[ok, s].max()), 33)
                row["curve_u"] = grid.tolist()
                row["curve_p95"] = fit_curve(r, grid).tolist()
            out.append(row)
        return out


class _TwinTelemetry:
    """The twin's telemetry: what the sites reported ``telemetry_delay`` ago, with noise
    (added when each tick's observation was recorded)."""

    def __init__(self, run: _Run) -> None:
        self.run = run

    def observe(self, now: float) -> Observation:
        seen = self.run._observed(self.run.history[0])
        age = np.full(self.run.t.S, (len(self.run.history) - 1) * self.run.t.sc.tick)
        if self.run.mode == "withdraw":  # the sledgehammer has no Duomog either
            return Observation(
                seen.utilisation, seen.cpu, age, capacity=seen.capacity, arriving=seen.arriving
            )
        return Observation(
            seen.utilisation,
            seen.cpu,
            age,
            seen.section_site,
            seen.section_utilisation,
            seen.section_cpu,
            seen.capacity,
            seen.arriving,
            seen.section_capacity,
        )


class _TwinActuator:
    """The twin's actuator: shares of plans and sections, and announcements, take effect
    at once (withdrawals through the routing engine at the next tick's traffic)."""

    def __init__(self, run: _Run) -> None:
        self.run = run

    def enforce(self, state: State, plan: Plan, now: float) -> None:
        self.run._enforce(state)
