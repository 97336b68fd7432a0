"""The Traffic Manager's decision core: observation in, plan of actions out.

``decide(observation, state, config, now) -> Plan`` is a pure function: it reads no
clock, does no I/O and does not know whether it runs in the twin, the lab or production.
Each world hands it an :class:`Observation` (per site: CPU utilisation, CPU time per plan,
telemetry age, and where it can measure it the CPU time of the site's own users before
forwarding; per section: utilisation and CPU time) and the :class:`State` of the moves
in force, and carries out the :class:`Plan` it returns.  Every action carries a
:class:`~.reasons.Reason` — a code and its fields, turned into words at the edges.

**What each site forwards is known, not guessed.**  The state holds, for every forward
in force, its share *and* the CPU time it carried when last decided.  From the
observation the core works out each site's own traffic per plan (``arriving``): measured
where the world reports it; otherwise solved from what each site serves less what it is
sent, divided by the share it keeps — and where a site keeps none of a plan (a share of
1), from the CPU time the state recorded.  Forwarding chains (A→B→C) are solved to any
depth.  Every amount below is CPU time in ms/s of this one estimate, kept up to date
(``load``) as the decision adds actions.

One decision, in order, with one budget (``max_move_share`` of all CPU time) shared by
every kind of action:

1. **Fail static.**  Sites whose telemetry is older than ``stale_after`` take part in
   nothing new (their moves stay in force); if every site is stale, nothing is decided.
2. **Hand back.**  A site above its maximum that receives others' traffic hands all of
   it back to its senders before it forwards any of its own: a site never receives
   while above its maximum.  A sender that is then above its own maximum places the
   traffic elsewhere in the same decision (step 4).
3. **Duomog.**  In a multi-colo site that has room as a whole, a section above its
   maximum shifts the excess to its sister sections, which stay under acceptable.
4. **Plurimog.**  A site above its maximum forwards the CPU time over its target, plans
   lowest priority first (protected plans never), to receivers nearest first
   (:mod:`.split`); receivers are fresh sites below acceptable that forward nothing and
   have nothing withdrawn, filled up to acceptable, the most loaded sender served first.
   What cannot be placed is said in a ``hold``: no room, the cap, or protected plans.
5. **Withdrawal**, the sledgehammer, for a site that cannot forward: one prefix at a
   time, only if the predictor's atlas shows every site that would receive its traffic
   can take it, and never the last announcement of a prefix.  Where the atlas shows a
   receiver that could not, that receiver first forwards some of its own traffic away
   (preemption: room is made before the thundering herd, not after).
6. **Reverts.**  A forwarding site below acceptable (minus a hysteresis margin) takes
   back one step of what it forwards — ``revert_step`` of it, at least ``revert_floor`` of
   its own traffic — highest-priority plan and farthest receiver first, never past its
   acceptable threshold; a cooled section takes back its shift; a withdrawn prefix is
   announced again, one per decision, where the site has room for its traffic.

A site changes at most once per ``min_interval`` (a sender placing traffic handed back
to it is the one exception: the hand-back was not its choice).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import compress
from typing import Literal

import numpy as np
import numpy.typing as npt

from . import landing
from .forwards import TINY, Forwards
from .neighbours import everyone, walk
from .reasons import Reason
from .split import can_accept, fill, take, to_move

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.integer]
BoolArray = npt.NDArray[np.bool_]

VISIBLE = 0.02  # a site that keeps less than this share of a plan cannot see its own traffic
EPS = 1e-9


@dataclass(frozen=True)
class Observation:
    """What the world reports, arrays over sites (S), plans (P) and sections (X)."""

    utilisation: FloatArray  # (S,) CPU utilisation of the site's healthy servers, 0..1+
    cpu: FloatArray  # (S, P) CPU ms/s per plan served at the site now
    age: FloatArray  # (S,) seconds since the site's telemetry was taken
    section_site: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))  # (X,)
    section_utilisation: FloatArray = field(default_factory=lambda: np.zeros(0))  # (X,)
    section_cpu: FloatArray = field(default_factory=lambda: np.zeros(0))  # (X,) ms/s
    capacity: FloatArray | None = None  # (S,) CPU ms/s at 100 %, if known
    # (S, P) CPU ms/s of each site's own users (its catchment) before any forwarding,
    # where the world measures it (by the site requests enter at); else estimated
    arriving: FloatArray | None = None
    section_capacity: FloatArray | None = None  # (X,) CPU ms/s at 100 %, if known

    def sections_capacity(self) -> FloatArray:
        """Each section's capacity as reported, else from CPU time and utilisation (0:
        unknown — an idle section, or one whose traffic is all shifted away)."""
        if self.section_capacity is not None:
            return self.section_capacity
        c, u = self.section_cpu, self.section_utilisation
        return np.asarray(np.where(u > 0, c / np.where(u > 0, u, 1.0), 0.0))

    def site_capacity(self) -> FloatArray:
        """Capacity as reported, else inferred from CPU time and utilisation (0: unknown)."""
        if self.capacity is not None:
            return self.capacity
        total = self.cpu.sum(axis=1)
        u = self.utilisation
        return np.asarray(np.where(u > 0, total / np.where(u > 0, u, 1.0), 0.0))

    @property
    def sites(self) -> int:
        return int(self.utilisation.shape[0])

    @property
    def plans(self) -> int:
        return int(self.cpu.shape[1])


@dataclass(frozen=True)
class Config:
    """How the Traffic Manager is set up for one network."""

    maximum: FloatArray  # (S,) thresholds
    target: FloatArray
    acceptable: FloatArray
    latency_ms: FloatArray  # (S, S) round trip between sites
    plans: tuple[str, ...] = ("free", "pro", "business", "enterprise")
    protected: tuple[str, ...] = ("enterprise",)  # plans that never move
    can_forward: BoolArray | None = None  # (S,) Plurimog available; default all
    announced: BoolArray | None = None  # (Q, S) who announces each prefix
    stale_after: float = 120.0  # seconds
    max_move_share: float = 0.10  # of all CPU time, per decision, every kind of action
    revert_step: float = 0.25  # of a site's forwarded traffic, per decision
    revert_floor: float = 0.01  # ...but at least this share of the site's CPU time
    hysteresis: float = 0.05  # below acceptable by this much before reverting
    min_interval: float = 60.0  # seconds between changes at one site
    # (S,) sites an operator pinned: like stale ones, they take part in nothing new and
    # their moves in force stay; default none
    pinned: BoolArray | None = None

    def live(self, obs: Observation) -> BoolArray:
        """Sites that may take part in new moves: fresh telemetry and not pinned."""
        fresh = obs.age <= self.stale_after
        return fresh if self.pinned is None else fresh & ~self.pinned

    def movable_plans(self) -> BoolArray:
        return np.array([p not in self.protected for p in self.plans], dtype=np.bool_)

    def nearest(self, s: int) -> IntArray:
        """Site s's others by latency, nearest first (the whole row; the core walks the
        short lists of :mod:`.neighbours` instead)."""
        return np.asarray(everyone(self.latency_ms, s), dtype=np.int64)


@dataclass(frozen=True)
class State:
    """The moves in force.  ``forward`` is a sparse :class:`~.forwards.Forwards` table;
    a dense (S, P, S) array of shares (with ``forward_cpu`` beside it) is accepted and
    turned into one, for small networks written by hand."""

    forward: Forwards
    shift: FloatArray  # (X,): share of each section's traffic moved to its sister sections
    withdrawn: BoolArray  # (Q, S): prefix q withdrawn at site s by the Traffic Manager
    last_change: FloatArray  # (S,) time of the last change at each site
    withdrawn_cpu: FloatArray | None = None  # (Q, S): CPU ms/s the withdrawal moved away
    forward_cpu: FloatArray | None = None  # with a dense ``forward`` only: its CPU time
    shift_cpu: FloatArray | None = None  # (X,): CPU ms/s each shift carried
    plans: int = 0  # how many plans (a dense ``forward`` says it itself)
    # (Q, S): when prefix q was withdrawn at s, the own traffic (CPU ms/s) of the sites
    # its users went to, weighted by the share each took; 0 where unknown
    withdrawn_basis: FloatArray | None = None

    def __post_init__(self) -> None:
        f = self.forward
        if not isinstance(f, Forwards):
            a = np.asarray(f, dtype=np.float64)
            object.__setattr__(self, "forward", Forwards.from_dense(a, self.forward_cpu))
            object.__setattr__(self, "forward_cpu", None)
            object.__setattr__(self, "plans", int(a.shape[1]))

    @classmethod
    def empty(cls, sites: int, plans: int, sections: int = 0, prefixes: int = 0) -> State:
        return cls(
            Forwards.empty(),
            np.zeros(sections),
            np.zeros((prefixes, sites), dtype=np.bool_),
            np.full(sites, -np.inf),
            np.zeros((prefixes, sites)),
            None,
            np.zeros(sections),
            plans,
            np.zeros((prefixes, sites)),
        )

    @property
    def sites(self) -> int:
        return int(self.last_change.shape[0])

    def shares(self) -> FloatArray:
        """The forwards as a dense (S, P, S) array of shares (small networks, tests)."""
        return self.forward.dense(self.sites, self.plans)

    def moved_by_withdrawal(self) -> FloatArray:
        if self.withdrawn_cpu is None or self.withdrawn_cpu.shape != self.withdrawn.shape:
            return np.zeros(self.withdrawn.shape)
        return self.withdrawn_cpu

    def withdrawal_basis(self) -> FloatArray:
        b = self.withdrawn_basis
        if b is None or b.shape != self.withdrawn.shape:
            return np.zeros(self.withdrawn.shape)
        return b

    def shifted(self) -> FloatArray:
        if self.shift_cpu is None or self.shift_cpu.shape != self.shift.shape:
            return np.zeros(self.shift.shape)
        return self.shift_cpu

    def forwarding(self) -> BoolArray:
        return self.forward.forwarding(self.sites)

    def receiving(self) -> BoolArray:
        return self.forward.receiving(self.sites)


ActionKind = Literal["forward", "revert", "handback", "shift", "withdraw", "announce", "hold"]


@dataclass(frozen=True)
class Action:
    """One change, with its reason.  ``share`` is of the source's own traffic: of plan
    ``plan`` (forward, revert, handback) or of section ``section`` (shift).  ``cpu`` is
    the CPU ms/s it moves (for a hold: what is left unmoved, if any)."""

    kind: ActionKind
    site: int  # the site acting (-1: the whole network, for a hold)
    reason: Reason
    plan: int = -1
    to: int = -1  # receiving site (forward, revert, handback)
    share: float = 0.0
    cpu: float = 0.0
    section: int = -1
    prefix: int = -1
    # withdraw: the receivers' own CPU ms/s, weighted by the atlas's shares, with the
    # prefix's users landed — what :meth:`_Decision.announce_back` scales ``cpu`` by
    basis: float = 0.0


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    # the forwards in force, with the CPU ms/s each carried on the observation decided on
    carried: Forwards | None = field(default=None, compare=False, repr=False)

    def of(self, kind: ActionKind) -> list[Action]:
        return [a for a in self.actions if a.kind == kind]

    @property
    def empty(self) -> bool:
        return not any(a.kind != "hold" for a in self.actions)


@dataclass(frozen=True)
class Failover:
    """What the predictor's atlas says a site's withdrawal does: ``share[s, r]`` of site
    s's traffic lands at site r (rows sum to at most 1)."""

    share: FloatArray  # (S, S); not changed in place (.landing reads each row once)
    known: BoolArray | None = None  # (S,) sites the atlas has a scenario for; default all


def hold(site: int, code: str, unmoved: float = 0.0, **values: float | str) -> Action:
    return Action("hold", site, Reason.of(code, **values), cpu=unmoved)


# ----------------------------------------------------------------- what flows where


@dataclass(frozen=True)
class Flows:
    """The forwards in force, as K entries, with the CPU time each carries now."""

    src: IntArray
    plan: IntArray
    dst: IntArray
    share: FloatArray
    cpu: FloatArray
    arriving: FloatArray  # (S, P) each site's own users' CPU ms/s before forwarding


def flows(obs: Observation, state: State) -> Flows:
    """What each forward carries on this observation (see the module doc)."""
    f = state.forward
    s, p, d, share = f.src, f.plan, f.dst, f.share
    if obs.arriving is not None:
        arriving = np.asarray(obs.arriving, dtype=np.float64)
        return Flows(s, p, d, share, arriving[s, p] * share, arriving)
    served = np.asarray(obs.cpu, dtype=np.float64)
    kept = f.kept(obs.sites, obs.plans)  # (S, P)
    recorded = f.cpu
    visible = kept[s, p] >= VISIBLE
    cpu = recorded.copy()
    for _ in range(max(1, min(s.size, 64))):  # one pass per link of the longest chain
        own = _own_served(served, p, d, cpu)
        new = np.where(visible, own[s, p] / np.maximum(kept[s, p], VISIBLE) * share, recorded)
        done = np.allclose(new, cpu, rtol=1e-12, atol=1e-9)
        cpu = new
        if done:
            break
    own = _own_served(served, p, d, cpu)
    out = np.zeros_like(served)
    np.add.at(out, (s, p), cpu)
    return Flows(s, p, d, share, cpu, own + out)


def _own_served(served: FloatArray, p: IntArray, d: IntArray, cpu: FloatArray) -> FloatArray:
    received = np.zeros_like(served)
    np.add.at(received, (d, p), cpu)
    return np.asarray(np.maximum(served - received, 0.0))


# ------------------------------------------------------------------------ decide


def decide(
    obs: Observation, state: State, cfg: Config, now: float, failover: Failover | None = None
) -> Plan:
    """The plan for this observation (see the module doc)."""
    fresh = obs.age <= cfg.stale_after
    if not fresh.any():
        return Plan((hold(-1, "no_fresh_telemetry"),))
    with _collector_paused():
        return _decide(obs, state, cfg, now, failover, fresh)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for one decision, as it was after it.

    A decision allocates a few small objects per action (the action, its reason, the
    working dict's entries) and frees nothing until it returns, and none of them forms
    a cycle.  Left on, the collector runs every 700 allocations and walks the young
    objects, and every tenth and hundredth run walks the older ones too: the decision's
    working set, which grows with the sites — so its work per decision grew faster than
    the sites (measured: a tenth of a decision's CPU time at 10,000 sites, a thirtieth
    at 3,000).  Paused, it goes on counting, and runs once at the first allocation
    after the decision, over what the decision left.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _decide(
    obs: Observation,
    state: State,
    cfg: Config,
    now: float,
    failover: Failover | None,
    fresh: BoolArray,
) -> Plan:
    d = _Decision(obs, state, cfg, now, failover)
    for s in np.flatnonzero(~fresh).tolist():
        d.out.append(hold(s, "stale", age_s=float(obs.age[s])))
    for s in np.flatnonzero(fresh & ~d.fresh).tolist():
        d.out.append(hold(s, "pinned"))
    d.handbacks()
    d.duomog_out()
    d.relieve()
    d.reverts()
    d.duomog_back()
    d.announce_back()
    return Plan(tuple(d.out), carried=d.carried_now)


class _Decision:
    """The working arrays of one decision; every step reads and updates them."""

    def __init__(
        self, obs: Observation, state: State, cfg: Config, now: float, fo: Failover | None
    ) -> None:
        n = obs.sites
        self.obs, self.state, self.cfg, self.now, self.failover = obs, state, cfg, now, fo
        self.fresh = cfg.live(obs)
        self.quiet = self.fresh & (now - state.last_change >= cfg.min_interval)
        self.cap = np.asarray(obs.site_capacity(), dtype=np.float64)
        total = obs.cpu.sum(axis=1)
        self.load = np.asarray(total, dtype=np.float64).copy()  # after the actions so far
        self.budget = cfg.max_move_share * float(total.sum())
        self.fl = flows(obs, state)
        self.carried_now = state.forward.with_cpu(self.fl.cpu)
        # the forwards after the actions so far: (src, plan, dst) -> [share, CPU ms/s]
        fl = self.fl
        self.fw: dict[tuple[int, int, int], list[float]] = {
            (a, b, c): [sh, cp]
            for a, b, c, sh, cp in zip(
                fl.src.tolist(),
                fl.plan.tolist(),
                fl.dst.tolist(),
                fl.share.tolist(),
                fl.cpu.tolist(),
                strict=True,
            )
        }
        fwd = np.zeros_like(self.fl.arriving)
        np.add.at(fwd, (self.fl.src, self.fl.plan), self.fl.cpu)
        self.own_left = np.maximum(self.fl.arriving - fwd, 0.0)  # own traffic still served
        self.changed = np.zeros(n, dtype=np.bool_)
        self.returned = np.zeros(n)  # CPU ms/s handed back to each sender
        self.returned_by = np.full(n, -1)  # ... by which site (the last one)
        self.movable = cfg.movable_plans()
        self.forward_ok = (
            cfg.can_forward if cfg.can_forward is not None else np.ones(n, dtype=np.bool_)
        )
        self.live = _live(cfg, state, n)
        self.live_sites = self.live.sum(axis=1).tolist()  # per prefix: sites announcing it
        self.out: list[Action] = []
        self.guarded = np.zeros(n, dtype=np.bool_)
        self.out_share = np.bincount(self.fl.src, weights=self.fl.share, minlength=n)
        self.total = np.asarray(total, dtype=np.float64)
        # room each receiver has left (CPU ms/s to its acceptable; 0: not a receiver),
        # as plain floats: set when relieving starts, kept as forwards land
        self.room: list[float] = []
        # sites whose load or room changed since the room was last set from the loads
        self.touched: set[int] = set()
        self.capacc = self.cap * cfg.acceptable  # CPU ms/s at each site's acceptable
        self.movable_list = self.movable.tolist()
        self.handed = np.zeros(n, dtype=np.bool_)  # sites that handed traffic back

    # -- helpers

    def u(self) -> FloatArray:
        """Utilisation after the actions so far (unknown capacity: as observed)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            delta = np.where(self.cap > 0, (self.load - self.total) / self.cap, 0)
        return np.asarray(self.obs.utilisation + delta)

    def u_at(self, s: int) -> float:
        delta = (self.load[s] - self.total[s]) / self.cap[s] if self.cap[s] > 0 else 0.0
        return float(self.obs.utilisation[s] + delta)

    def receivers(self) -> BoolArray:
        """Fresh sites below acceptable, forwarding nothing, with nothing withdrawn."""
        withdrawn = (
            self.state.withdrawn.any(axis=0)
            if self.state.withdrawn.size
            else np.zeros(self.obs.sites, dtype=np.bool_)
        )
        return np.asarray(
            self.fresh
            & (self.out_share <= 1e-12)
            & ~self.handed
            & (self.returned <= 0)
            & ~withdrawn
            & (self.cap > 0)
            & (self.u() < self.cfg.acceptable)
        )

    def move(self, s: int, p: int, r: int, cpu: float) -> None:
        """Book ``cpu`` ms/s of s's plan p moving to r (negative: coming back from r)."""
        self.load[s] -= cpu
        self.load[r] += cpu
        self.budget -= abs(cpu)
        self.changed[s] = True

    # -- 2. hand back

    def handbacks(self) -> None:
        fl, u = self.fl, self.obs.utilisation
        received = np.bincount(fl.dst, weights=fl.cpu, minlength=self.obs.sites)
        hot = self.fresh & (u > self.cfg.maximum) & (received > EPS)
        # each receiver's forwards in one sort (entries in table order within each)
        by_dst = np.argsort(fl.dst, kind="stable")
        starts = np.searchsorted(fl.dst[by_dst], np.arange(self.obs.sites + 1))
        for h in np.flatnonzero(hot)[np.argsort(-u[hot], kind="stable")].tolist():
            entries = by_dst[starts[h] : starts[h + 1]]
            for k in entries[::-1].tolist():  # highest priority first
                s, p, c = int(fl.src[k]), int(fl.plan[k]), float(fl.cpu[k])
                if not self.fresh[s]:
                    continue  # a stale sender's moves stay in force
                if c > self.budget + EPS:
                    self.out.append(
                        hold(
                            h,
                            "short_cap",
                            c,
                            need=c,
                            moved=0.0,
                            left=c,
                            cap_share=self.cfg.max_move_share,
                        )
                    )
                    break
                why = Reason.of(
                    "handback",
                    receiver=h,
                    utilisation=float(u[h]),
                    maximum=float(self.cfg.maximum[h]),
                    cpu=c,
                )
                share = self.fw.pop((s, p, h))[0]
                self.out.append(Action("handback", s, why, plan=p, to=h, share=share, cpu=c))
                self.move(s, p, h, -c)
                self.out_share[s] -= share
                self.own_left[s, p] += c
                self.returned[s] += c
                self.returned_by[s] = h
                self.changed[h] = True
                self.handed[h] = True

    # -- 3./6. Duomog

    def _sections(self) -> tuple[IntArray, BoolArray, FloatArray]:
        sec = self.obs.section_site
        multi = np.bincount(sec, minlength=self.obs.sites)[sec] >= 2
        sh = self.state.shift
        c = np.asarray(self.obs.section_cpu, dtype=np.float64)
        kept = 1.0 - sh
        rec = self.state.shifted()
        arriving = np.where(
            kept >= VISIBLE,
            c / np.maximum(kept, VISIBLE),
            np.where(sh > 0, rec / np.maximum(sh, EPS), c),
        )
        return sec, multi, arriving

    def duomog_out(self) -> None:
        sec = self.obs.section_site
        if not sec.size:
            return
        sec, multi, _ = self._sections()
        ok = multi & self.quiet[sec]
        u, c = self.obs.section_utilisation, self.obs.section_cpu
        mx, tg, ac = self.cfg.maximum[sec], self.cfg.target[sec], self.cfg.acceptable[sec]
        has_room = self.obs.utilisation[sec] <= tg
        over = to_move(c, u, tg)
        if self.obs.section_capacity is not None:  # known: exactly what is over the target
            over = np.maximum(c - self.obs.section_capacity * tg, 0.0)
        need = np.where(ok & has_room & (u > mx), over, 0.0)
        room = np.where(multi & (u < ac) & (self.state.shift <= 0), can_accept(c, u, ac), 0.0)
        site_room = np.bincount(sec, weights=room, minlength=self.obs.sites)
        for x in np.flatnonzero(need > 0).tolist():
            site = int(sec[x])
            give = min(float(need[x]), float(site_room[site]), max(self.budget, 0.0))
            if give <= EPS:
                continue
            site_room[site] -= give
            self.budget -= give
            self.changed[site] = True
            arriving = c[x] / max(1.0 - float(self.state.shift[x]), VISIBLE)
            why = Reason.of(
                "shift_out", utilisation=float(u[x]), maximum=float(mx[x]), cpu=give, section=x
            )
            self.out.append(
                Action("shift", site, why, section=x, share=give / float(arriving), cpu=give)
            )

    def duomog_back(self) -> None:
        sec = self.obs.section_site
        if not sec.size:
            return
        sec, multi, arriving = self._sections()
        caps = self.obs.sections_capacity()
        u, ac = self.obs.section_utilisation, self.cfg.acceptable[sec]
        ok = multi & self.quiet[sec] & ~self.changed[sec]
        for x in np.flatnonzero(
            ok & (self.state.shift > 0) & (u < ac - self.cfg.hysteresis)
        ).tolist():
            back = min(float(self.state.shift[x]), self.cfg.revert_step)
            cpu = back * float(arriving[x])
            # the section takes back no more than brings it to acceptable, and nothing
            # while its capacity is unknown (a section with no servers reports none)
            cap_x = float(caps[x])
            if cap_x <= 0:
                continue
            fit = max(cap_x * float(ac[x]) - float(self.obs.section_cpu[x]), 0.0)
            if cpu > fit and arriving[x] > 0:
                back, cpu = fit / float(arriving[x]), fit
            cpu = min(cpu, max(self.budget, 0.0))
            if arriving[x] > 0:
                back = min(back, cpu / float(arriving[x]))
            if back <= EPS:
                continue
            self.budget -= cpu
            why = Reason.of(
                "shift_back",
                utilisation=float(u[x]),
                acceptable=float(ac[x]),
                share=back,
                section=x,
            )
            self.out.append(Action("shift", int(sec[x]), why, section=x, share=-back, cpu=cpu))

    # -- 4./5. relieve overloaded sites

    def relieve(self) -> None:
        cfg = self.cfg
        u = self.u()
        acting = self.quiet | (self.returned > 0)
        over = np.flatnonzero(acting & self.fresh & (u > cfg.maximum))
        # sites about to withdraw (they cannot forward) and the sites their users would
        # reach keep the room they have made (no revert) until the withdrawal is done
        pending = [s for s in over.tolist() if not self.forward_ok[s]]
        if self.failover is not None and pending:
            self.guarded = self.failover.share[pending].sum(axis=0) > 0
        for s in np.flatnonzero(self.fresh & ~acting & (u > cfg.maximum)).tolist():
            since = float(self.now - self.state.last_change[s])
            self.out.append(
                hold(
                    s,
                    "waiting",
                    utilisation=float(u[s]),
                    since_s=since,
                    min_interval_s=cfg.min_interval,
                )
            )
        self.room = self.receiver_room()
        for s in over[np.argsort(-u[over], kind="stable")].tolist():
            us = self.u_at(s)
            load = float(self.load[s])
            need = load - load * float(cfg.target[s]) / us if us > 0 else 0.0
            if us <= cfg.maximum[s] or need <= EPS:
                continue
            if not self.forward_ok[s]:
                self.withdraw(s)
                continue
            fields = {
                "utilisation": us,
                "maximum": float(cfg.maximum[s]),
                "need": need,
                "target": float(cfg.target[s]),
            }
            code = "over_maximum"
            if self.returned[s] > 0:  # placing what a hot receiver handed back
                code = "replace"
                fields["returned"] = float(self.returned[s])
                fields["sender"] = float(self.returned_by[s])
            self.plurimog(s, need, code, fields)

    def receiver_room(self) -> list[float]:
        """Room left at each receiver (0 elsewhere), from the loads so far."""
        self.touched = set()
        return np.where(self.receivers(), self.capacc - self.load, 0.0).tolist()  # type: ignore[no-any-return]

    def refresh_room(self) -> None:
        """After a withdrawal (loads changed): each receiver's room from its load, the
        receivers staying those found first (room above EPS; at or below it, a site has
        no room wherever room is read, as if it were 0).  Only the sites whose load or
        room changed since the room was last set from the loads are recomputed — the
        others would get the very same floats — so a withdrawal costs the sites its
        users land at, not the network."""
        room, capacc, load = self.room, self.capacc, self.load
        for r in self.touched:
            if room[r] > EPS:
                room[r] = float(capacc[r] - load[r])
        self.touched = set()

    def plurimog(
        self,
        s: int,
        need: float,
        code: str,
        fields: dict[str, float],
        avoid: set[int] | None = None,
    ) -> float:
        """Forward ``need`` ms/s of site s's own users' traffic (never what it was sent),
        nearest receivers first; a hold says what could not be placed, and why."""
        cfg = self.cfg
        own = self.own_left[s].tolist()  # plain floats: a handful of plans
        movable = sum(compress(own, self.movable_list))
        budget = max(self.budget, 0.0)
        goal = min(need, budget, movable)
        # receivers nearest first until their room covers the goal: the site's short
        # list of neighbours (.neighbours), then, if it runs out, all sites in order
        room = self.room
        order: list[int] = []
        order_ms: list[float] = []
        room_l: list[float] = []
        found, exhausted = 0.0, True
        for ids, ms in walk(cfg.latency_ms, s):
            for r, m in zip(ids, ms, strict=True):
                x = room[r]
                if x > EPS and (avoid is None or r not in avoid) and math.isfinite(m):
                    order.append(r)
                    order_ms.append(m)
                    room_l.append(x)
                    found += x
                    if found >= goal:
                        exhausted = False
                        break
            if not exhausted:
                break
        room_known = found if exhausted else math.inf
        amount = min(goal, found)
        moved = 0.0
        if amount > EPS:
            # what moves: plans lowest priority first; where: nearest first, the
            # highest-priority plan to the nearest (the reference's rule, in .split)
            taken = take(amount, own, self.movable_list)
            moves, filled = fill(taken, room_l)
            base = tuple(fields.items())
            arriving_s = self.fl.arriving[s].tolist()
            load, out, fw = self.load, self.out, self.fw
            shares = 0.0
            for p, i, c in moves:  # booked as move() would, the sender's side once
                if c <= EPS:
                    continue
                r = order[i]
                share = c / arriving_s[p]
                why = Reason(code, (*base, ("receiver", float(r)), ("latency_ms", order_ms[i])))
                out.append(Action("forward", s, why, plan=p, to=r, share=share, cpu=c))
                load[r] += c
                room[r] -= c
                entry = fw.setdefault((s, p, r), [0.0, 0.0])
                entry[0] += share
                entry[1] += c
                own[p] -= c
                shares += share
                moved += c
            if moved > 0.0:
                load[s] -= moved
                self.budget -= moved
                self.changed[s] = True
                self.out_share[s] += shares
                self.own_left[s] = own
            room[s] = 0.0  # a site that forwards receives nothing
            for r in order[:filled]:
                room[r] = 0.0  # filled to acceptable: no room left this decision
            self.touched.add(s)
            self.touched.update(order)
        left = need - moved
        if left > max(EPS, 1e-6 * need):
            if movable < need - EPS and movable <= min(budget, room_known) + EPS:
                protected = ", ".join(
                    p for p, m in zip(cfg.plans, self.movable, strict=True) if not m
                )
                self.out.append(
                    hold(
                        s,
                        "short_protected",
                        left,
                        need=need,
                        movable=movable,
                        left=left,
                        protected=protected or "no plan",
                    )
                )
            elif budget < need - EPS and budget <= room_known + EPS:
                self.out.append(
                    hold(
                        s,
                        "short_cap",
                        left,
                        need=need,
                        moved=moved,
                        left=left,
                        cap_share=cfg.max_move_share,
                    )
                )
            else:
                self.out.append(hold(s, "short_no_room", left, need=need, moved=moved, left=left))
        return moved

    def withdraw(self, s: int) -> None:
        """The sledgehammer: withdraw one prefix at s if its receivers can take the load.

        Only with the predictor's word for where the users go — none of them left without
        a site — and never the last announcement of a prefix (``live`` is updated as this
        decision withdraws).  If the atlas shows receivers that could not take their
        share, they are asked first to forward some of their own traffic elsewhere, and
        the prefix goes in a later decision.
        """
        fo, cfg, live = self.failover, self.cfg, self.live
        if not live.size or not live[:, s].any():
            self.out.append(hold(s, "no_prefix"))
            return
        if fo is None or (fo.known is not None and not fo.known[s]):
            self.out.append(hold(s, "no_atlas"))
            return
        # the sites its users land at (the row's non-zero entries, .landing), so that
        # this costs those sites, not the network
        row = landing.row(fo.share, s)
        ids, share = row.ids, row.share
        lost = 1.0 - row.total
        if lost > 1e-6:
            self.out.append(hold(s, "users_lost", lost=lost))
            return
        if np.any((share > 0) & ~np.isfinite(cfg.latency_ms[s, ids])):
            self.out.append(hold(s, "unknown_receivers"))
            return
        mine = [q for q in np.flatnonzero(live[:, s]).tolist() if self.live_sites[q] > 1]
        if not mine:
            self.out.append(hold(s, "last_announcement"))
            return
        per_prefix = float(self.load[s]) / int(live[:, s].sum())  # spread evenly over prefixes
        if per_prefix > self.budget + EPS:
            self.out.append(
                hold(s, "withdraw_over_cap", per_prefix, cpu=per_prefix, left=max(self.budget, 0.0))
            )
            return
        lands = share * per_prefix  # at ids; nothing lands elsewhere
        room_at = np.where(
            self.fresh[ids],
            np.maximum(self.cap[ids] * cfg.acceptable[ids] - self.load[ids], 0.0),
            0.0,
        )
        short = np.flatnonzero(lands > room_at + EPS)  # positions in ids
        if short.size:
            crowded = {*ids[short].tolist(), s}
            for k in short.tolist():
                r = int(ids[k])
                if not (self.forward_ok[r] and self.quiet[r]):
                    continue
                fields = {"sender": float(s), "lands": float(lands[k]), "room": float(room_at[k])}
                self.plurimog(r, float(lands[k] - room_at[k]), "make_room", fields, crowded)
            worst = int(short[np.argmax((lands - room_at)[short])])
            self.out.append(
                hold(
                    s,
                    "withdraw_risky",
                    lands=float(lands[worst]),
                    worst=int(ids[worst]),
                    room=float(room_at[worst]),
                )
            )
            return
        q = mine[0]
        live[q, s] = False
        self.live_sites[q] -= 1
        basis = float(share @ (self.fl.arriving[ids].sum(axis=1) + lands))
        self.load[ids] += lands
        self.load[s] -= per_prefix
        self.budget -= per_prefix
        self.changed[s] = True
        self.touched.update(ids.tolist())
        self.touched.add(s)
        self.refresh_room()  # the receivers' room, after what lands
        why = Reason.of("withdraw", prefix=q, cpu=per_prefix)
        self.out.append(Action("withdraw", s, why, prefix=q, cpu=per_prefix, basis=basis))

    # -- 6. reverts

    def reverts(self) -> None:
        cfg = self.cfg
        u = self.obs.utilisation
        forwarding = self.out_share > 1e-12
        calm = u < cfg.acceptable - cfg.hysteresis
        sites = np.flatnonzero(forwarding & calm & self.quiet & ~self.guarded & ~self.changed)
        # each sender's forwards, found in one pass (not one pass per reverting site)
        by_src: dict[int, list[tuple[int, int, int]]] = {}
        for k in self.fw:
            by_src.setdefault(k[0], []).append(k)
        for s in sites.tolist():
            self.revert(s, by_src.get(s, []))

    def revert(self, s: int, mine: list[tuple[int, int, int]]) -> None:
        """Take back one step of what s forwards (``mine``: its forwards in force)."""
        cfg = self.cfg
        arriving = self.fl.arriving[s]
        sent = float(sum(self.fw[k][1] for k in mine))
        # a step of what is forwarded, but never less than a floor, so that the last
        # crumbs come back too instead of shrinking geometrically for ever; never past
        # acceptable; within what this decision may still move
        floor = cfg.revert_floor * float(arriving.sum())
        room = (
            max(float(self.cap[s] * cfg.acceptable[s] - self.load[s]), 0.0)
            if self.cap[s] > 0
            else 0.0
        )
        budget = min(room, max(cfg.revert_step * sent, floor), max(self.budget, 0.0))
        used = 0.0
        u = float(self.obs.utilisation[s])
        lat = cfg.latency_ms[s]
        # highest-priority plan first, farthest receiver first
        for key in sorted(mine, key=lambda k: (-k[1], -lat[k[2]], k[2])):
            _, p, d = key
            share, fwd = self.fw[key]
            if fwd <= EPS:  # no traffic of the plan left: nothing moves by coming back
                why = Reason.of("revert_idle", plan=p, receiver=d)
                self.out.append(Action("revert", s, why, plan=p, to=d, share=share, cpu=0.0))
                del self.fw[key]
                self.out_share[s] -= share
                self.changed[s] = True
                continue
            c = min(fwd, budget - used)
            if c <= EPS:
                continue
            back = share if c >= fwd - EPS else min(c / float(arriving[p]), share)
            why = Reason.of(
                "revert", utilisation=u, acceptable=float(cfg.acceptable[s]), cpu=c, receiver=d
            )
            self.out.append(Action("revert", s, why, plan=p, to=d, share=back, cpu=c))
            self.move(s, p, d, -c)
            if back >= share - TINY:
                del self.fw[key]
            else:
                self.fw[key] = [share - back, fwd - c]
            self.out_share[s] -= back
            used += c

    def moved_now(self) -> FloatArray:
        """(Q, S): what each withdrawn prefix's users would cost their site now."""
        moved = self.state.moved_by_withdrawal()
        basis = self.state.withdrawal_basis()
        fo = self.failover
        scale = (basis > 0) & (moved > 0)
        if fo is None or not scale.any():
            return moved
        if fo.known is not None:
            scale &= np.asarray(fo.known, dtype=np.bool_)[None, :]
        out = moved.copy()
        arriving = self.fl.arriving
        for s in np.flatnonzero(scale.any(axis=0)).tolist():  # the sites that withdrew
            r = landing.row(fo.share, s)  # where their users are: a few sites, not all
            now = float(r.share @ arriving[r.ids].sum(axis=1))
            col = scale[:, s]
            out[col, s] = moved[col, s] * now / basis[col, s]
        return out

    def announce_back(self) -> None:
        """Announce again, one prefix per decision, where the site has room for it.

        What a prefix would bring back cannot be seen at the site: its users are at the
        sites they went to.  It is estimated as the CPU time it took away when it was
        withdrawn, scaled by how the own traffic of those sites (weighted by the atlas's
        shares) has changed since — demand rises and falls there as it does for the
        users that left.  Where that is not known (a state from before the basis was
        kept, no atlas now), the CPU time moved stands as it was; where even that is not
        known, as much as each prefix still announced there.  The prefix goes back only
        if the site stays below acceptable, less the hysteresis margin, with it.  A site
        of unknown capacity waits.

        (Without the scaling, a site whose only prefix was withdrawn for overload would
        wait for the overload itself to fit below acceptable: never.)
        """
        state, cfg = self.state, self.cfg
        if not state.withdrawn.size:
            return
        moved = self.moved_now()
        announced = cfg.announced if cfg.announced is not None else np.ones_like(state.withdrawn)
        ok = state.withdrawn.any(axis=0) & self.quiet & ~self.changed
        for s in np.flatnonzero(ok).tolist():
            if self.cap[s] <= 0:
                continue
            q = int(np.flatnonzero(state.withdrawn[:, s])[0])
            live = int((announced[:, s] & ~state.withdrawn[:, s]).sum())
            back = float(moved[q, s]) if moved[q, s] > 0 else (self.load[s] / live if live else 0.0)
            if back <= 0 or back > self.budget + EPS:
                continue  # nothing known of what it would bring back, or over the cap
            after = (self.load[s] + back) / self.cap[s]
            if after > cfg.acceptable[s] - cfg.hysteresis:
                continue
            self.load[s] += back
            self.budget -= back
            self.changed[s] = True
            why = Reason.of(
                "announce",
                utilisation=float(self.load[s] - back) / float(self.cap[s]),
                cpu=back,
                after=float(after),
                prefix=q,
            )
            self.out.append(Action("announce", s, why, prefix=q, cpu=back))


def _live(cfg: Config, state: State, n: int) -> BoolArray:
    """(Q, S): announced by configuration and not withdrawn by the Traffic Manager."""
    announced = cfg.announced if cfg.announced is not None else np.zeros((0, n), np.bool_)
    if state.withdrawn.shape != announced.shape:
        raise ValueError(
            f"the state has {state.withdrawn.shape[0]} prefixes, the configuration "
            f"{announced.shape[0]}"
        )
    return np.asarray(announced & ~state.withdrawn, dtype=np.bool_)


def apply(state: State, plan: Plan, now: float) -> State:
    """The state after the plan's actions are carried out."""
    shift, wd, last = state.shift.copy(), state.withdrawn.copy(), state.last_change.copy()
    base = plan.carried if plan.carried is not None else state.forward
    fw: dict[tuple[int, int, int], list[float]] = {
        (int(a), int(b), int(c)): [float(sh), float(cp)]
        for a, b, c, sh, cp in zip(base.src, base.plan, base.dst, base.share, base.cpu, strict=True)
    }
    shifted = state.shifted().copy()
    moved = state.moved_by_withdrawal().copy()
    basis = state.withdrawal_basis().copy()
    for a in plan.actions:
        if a.kind == "forward":
            entry = fw.setdefault((a.site, a.plan, a.to), [0.0, 0.0])
            entry[0] += a.share
            entry[1] += a.cpu
        elif a.kind in ("revert", "handback"):
            entry = fw.get((a.site, a.plan, a.to), [0.0, 0.0])
            entry[0] -= a.share
            entry[1] = max(entry[1] - a.cpu, 0.0)
            if entry[0] <= TINY:
                fw.pop((a.site, a.plan, a.to), None)
        elif a.kind == "shift":
            shift[a.section] = min(max(shift[a.section] + a.share, 0.0), 1.0)
            shifted[a.section] = (
                0.0
                if shift[a.section] <= 1e-12
                else max(shifted[a.section] + np.sign(a.share) * a.cpu, 0.0)
            )
        elif a.kind == "withdraw":
            wd[a.prefix, a.site] = True
            moved[a.prefix, a.site] = a.cpu
            basis[a.prefix, a.site] = a.basis
        elif a.kind == "announce":
            wd[a.prefix, a.site] = False
            moved[a.prefix, a.site] = 0.0
            basis[a.prefix, a.site] = 0.0
        else:
            continue
        last[a.site] = now
        if a.kind == "handback":
            last[a.to] = now
    keys = list(fw)
    forward = Forwards.of(
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [fw[k][0] for k in keys],
        [fw[k][1] for k in keys],
    )
    return replace(
        state,
        forward=forward,
        shift=shift,
        withdrawn=wd,
        last_change=last,
        withdrawn_cpu=moved,
        shift_cpu=shifted,
        withdrawn_basis=basis,
    )
