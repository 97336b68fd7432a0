"""The Traffic Manager's decision core: observation in, plan of actions out.

``decide(observation, state, config, now) -> Plan`` is a pure function: it reads no
clock, does no I/O and does not know whether it runs in the twin, the lab or production.
Each world hands it an :class:`Observation` (per site: CPU utilisation, CPU time per plan,
telemetry age; per section: utilisation and CPU time) and the :class:`State` of the moves
in force, and carries out the :class:`Plan` it returns, whose every action says why.

One decision, in order:

1. **Fail static.**  Sites whose telemetry is older than ``stale_after`` take part in
   nothing new (their moves stay in force); if every site is stale, nothing is decided.
2. **Duomog.**  In a multi-colo site that has room as a whole, a section above its
   maximum shifts the excess to its sister sections, which stay under acceptable.
3. **Reverts first.**  A site that forwards traffic and has fallen below acceptable
   (minus a hysteresis margin) takes part of it back — ``revert_step`` of what it
   forwards per decision (at least ``revert_floor`` of its own CPU time, so the moves
   end), highest-priority plan and farthest receiver first — before any capacity is
   offered to others.  A withdrawn prefix is announced again, one per decision, where
   the site has room for its traffic.
4. **Plurimog.**  A site above its maximum forwards the CPU time over its target, plans
   lowest priority first, to receivers nearest first (:mod:`.split`); receivers are
   sites below acceptable that forward nothing, their room shared among all sites that
   need it, the most loaded site served first.
5. **Withdrawal**, the sledgehammer, for a site that cannot forward: one prefix at a
   time, only if the predictor's atlas shows every site that would receive its traffic
   can take it, and never the last announcement of a prefix.  Where the atlas shows a
   receiver that could not, that receiver first forwards some of its own traffic away
   (preemption: room is made before the thundering herd, not after).

Guardrails throughout: a cap on the share of all CPU time one decision may move, and a
minimum time between changes at the same site.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from .split import assign, can_accept, take_from_plans, to_move

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.integer]
BoolArray = npt.NDArray[np.bool_]


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
    movable: BoolArray | None = None  # (P,) default: all but the highest-priority plan
    can_forward: BoolArray | None = None  # (S,) Plurimog available; default all
    announced: BoolArray | None = None  # (Q, S) who announces each prefix
    stale_after: float = 120.0  # seconds
    max_move_share: float = 0.10  # of all CPU time, per decision
    revert_step: float = 0.25  # of a site's forwarded traffic, per decision
    revert_floor: float = 0.01  # ...but at least this share of the site's CPU time
    hysteresis: float = 0.05  # below acceptable by this much before reverting
    min_interval: float = 60.0  # seconds between changes at one site

    def movable_plans(self) -> BoolArray:
        if self.movable is not None:
            return self.movable
        m = np.ones(len(self.plans), dtype=np.bool_)
        m[-1] = False
        return m


@dataclass(frozen=True)
class State:
    """The moves in force."""

    forward: FloatArray  # (S, P, S): share of site s's plan p traffic sent to site d
    shift: FloatArray  # (X,): share of each section's traffic moved to its sister sections
    withdrawn: BoolArray  # (Q, S): prefix q withdrawn at site s by the Traffic Manager
    last_change: FloatArray  # (S,) time of the last change at each site

    @classmethod
    def empty(cls, sites: int, plans: int, sections: int = 0, prefixes: int = 0) -> State:
        return cls(
            np.zeros((sites, plans, sites)),
            np.zeros(sections),
            np.zeros((prefixes, sites), dtype=np.bool_),
            np.full(sites, -np.inf),
        )

    def forwarding(self) -> BoolArray:
        return np.asarray(self.forward.sum(axis=(1, 2)) > 1e-12)


ActionKind = Literal["forward", "revert", "shift", "withdraw", "announce", "hold"]


@dataclass(frozen=True)
class Action:
    """One change, with its reason.  ``share`` is of the source's own traffic:
    of plan ``plan`` (forward, revert) or of section ``section`` (shift)."""

    kind: ActionKind
    site: int  # the site acting (-1: the whole network, for a hold)
    reason: str
    plan: int = -1
    to: int = -1  # receiving site (forward, revert)
    share: float = 0.0
    cpu: float = 0.0  # CPU ms/s this action moves
    section: int = -1
    prefix: int = -1


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]

    def of(self, kind: ActionKind) -> list[Action]:
        return [a for a in self.actions if a.kind == kind]

    @property
    def empty(self) -> bool:
        return not any(a.kind != "hold" for a in self.actions)


@dataclass(frozen=True)
class Failover:
    """What the predictor's atlas says a site's withdrawal does: ``share[s, r]`` of site
    s's traffic lands at site r (rows sum to at most 1)."""

    share: FloatArray  # (S, S)


def decide(
    obs: Observation, state: State, cfg: Config, now: float, failover: Failover | None = None
) -> Plan:
    """The plan for this observation (see the module doc)."""
    n = obs.sites
    actions: list[Action] = []
    fresh = obs.age <= cfg.stale_after
    if not fresh.any():
        return Plan(
            (
                Action(
                    "hold",
                    -1,
                    "no fresh telemetry from any site: failing static, moves in force are kept",
                ),
            )
        )
    for s in np.flatnonzero(~fresh):
        actions.append(
            Action(
                "hold", int(s), f"telemetry is {obs.age[s]:.0f} s old: no new moves for this site"
            )
        )
    quiet = now - state.last_change >= cfg.min_interval  # may change now
    total = obs.cpu.sum(axis=1)
    budget = cfg.max_move_share * float(total.sum())

    actions += _duomog(obs, state, cfg, fresh & quiet)

    # 3. reverts: forwarding sites with room take traffic back first
    forwarding = state.forwarding()
    room = can_accept(total, obs.utilisation, cfg.acceptable)
    calm = obs.utilisation < cfg.acceptable - cfg.hysteresis
    for s in np.flatnonzero(forwarding & calm & fresh & quiet):
        acts, used = _revert(int(s), obs, state, cfg, float(room[s]))
        actions += acts
        room[s] -= used

    actions += _announce_back(obs, state, cfg, fresh & quiet)

    # 4. Plurimog: overloaded sites forward to receivers with room
    receivers = fresh & ~forwarding & (obs.utilisation < cfg.acceptable)
    room = np.where(receivers, room, 0.0)
    need = np.where(fresh & quiet, to_move(total, obs.utilisation, cfg.target), 0.0)
    over = np.flatnonzero((obs.utilisation > cfg.maximum) & (need > 0))
    forward_ok = cfg.can_forward if cfg.can_forward is not None else np.ones(n, np.bool_)
    for s in over[np.argsort(-obs.utilisation[over], kind="stable")].tolist():
        if not forward_ok[s]:
            acts, used = _withdraw(
                s, obs, state, cfg, failover, room, forward_ok & fresh & quiet, budget
            )
            actions += acts
            budget -= used
            continue
        if budget <= 0:
            actions.append(
                Action(
                    "hold",
                    s,
                    "this decision already moves its cap of "
                    f"{100 * cfg.max_move_share:.0f} % of all CPU time",
                )
            )
            continue
        why = (
            f"{100 * obs.utilisation[s]:.1f} % is above the maximum "
            f"{100 * cfg.maximum[s]:.0f} %: moving {need[s]:,.0f} ms/s to reach "
            f"{100 * cfg.target[s]:.0f} %"
        )
        acts, used = _plurimog(s, float(need[s]), budget, why, obs, state, cfg, room, set())
        if not acts:
            actions.append(
                Action(
                    "hold",
                    s,
                    f"needs to move {need[s]:,.0f} ms/s but no "
                    "site below its acceptable threshold has room",
                )
            )
        actions += acts
        budget -= used
    return Plan(tuple(actions))


def _plurimog(
    s: int,
    need: float,
    budget: float,
    why: str,
    obs: Observation,
    state: State,
    cfg: Config,
    room: FloatArray,
    avoid: set[int],
) -> tuple[list[Action], float]:
    """Forward ``need`` ms/s of site s's traffic (see the module doc); ``room`` shrinks."""
    order = np.argsort(cfg.latency_ms[s], kind="stable")
    order = order[(order != s) & (room[order] > 0)]
    order = order[~np.isin(order, list(avoid))]
    # never take more than can be placed: what moves is still lowest priority first
    amount = min(need, budget, float(room[order].sum()))
    taken = take_from_plans(amount, obs.cpu[s], cfg.movable_plans())
    split = assign(taken, order, room[order])
    arriving = obs.cpu[s] / np.maximum(1.0 - state.forward[s].sum(axis=1), 1e-9)
    out: list[Action] = []
    plans, cols = np.nonzero(split.cpu > 1e-9)
    for k in np.lexsort((cols, -plans)).tolist():  # highest-priority plan first, nearest first
        p, r, c = int(plans[k]), int(split.receivers[cols[k]]), float(split.cpu[plans[k], cols[k]])
        out.append(
            Action(
                "forward",
                s,
                f"{why}; site {r} is {cfg.latency_ms[s, r]:.0f} ms away with room",
                plan=p,
                to=r,
                share=c / float(arriving[p]),
                cpu=c,
            )
        )
        room[r] -= c
    return out, split.moved


def _duomog(obs: Observation, state: State, cfg: Config, ok: BoolArray) -> list[Action]:
    """Shift load from hot sections to sister sections of sites that have room, and take
    it back when a section has cooled (all sections at once, arrays over sections)."""
    out: list[Action] = []
    sec = obs.section_site
    if not sec.size:
        return out
    multi = (np.bincount(sec, minlength=obs.sites)[sec] >= 2) & ok[sec]
    u, c = obs.section_utilisation, obs.section_cpu
    mx, tg, ac = cfg.maximum[sec], cfg.target[sec], cfg.acceptable[sec]
    for x in np.flatnonzero(multi & (state.shift > 0) & (u < ac - cfg.hysteresis)).tolist():
        back = min(float(state.shift[x]), cfg.revert_step)
        out.append(
            Action(
                "shift",
                int(sec[x]),
                f"section at {100 * u[x]:.1f} % is below the "
                f"acceptable {100 * ac[x]:.0f} %: taking back {100 * back:.0f} % of "
                "its traffic",
                section=x,
                share=-back,
            )
        )
    has_room = obs.utilisation[sec] <= tg
    need = np.where(multi & has_room & (u > mx), to_move(c, u, tg), 0.0)
    room = np.where(multi & (u < ac), can_accept(c, u, ac), 0.0)
    site_room = np.bincount(sec, weights=room, minlength=obs.sites)
    for x in np.flatnonzero(need > 0).tolist():
        site = int(sec[x])
        give = min(float(need[x]), float(site_room[site]))
        if give <= 0:
            continue
        site_room[site] -= give
        arriving = c[x] / max(1.0 - float(state.shift[x]), 1e-9)
        out.append(
            Action(
                "shift",
                site,
                f"section at {100 * u[x]:.1f} % is above the maximum "
                f"{100 * mx[x]:.0f} % while the site has room: shifting {give:,.0f} "
                "ms/s to its sister sections",
                section=x,
                share=give / float(arriving),
                cpu=give,
            )
        )
    return out


def _revert(
    s: int, obs: Observation, state: State, cfg: Config, room: float
) -> tuple[list[Action], float]:
    """Take back up to ``revert_step`` of what site s forwards, within its room."""
    arriving = obs.cpu[s] / np.maximum(1.0 - state.forward[s].sum(axis=1), 1e-9)
    fwd_cpu = state.forward[s] * arriving[:, None]  # (P, S) CPU ms/s forwarded
    # a step of what is forwarded, but never less than a floor, so that the last crumbs
    # come back too instead of shrinking geometrically for ever
    floor = cfg.revert_floor * float(obs.cpu[s].sum() + fwd_cpu.sum())
    budget = min(room, max(cfg.revert_step * float(fwd_cpu.sum()), floor))
    out: list[Action] = []
    used = 0.0
    far_first = np.argsort(-cfg.latency_ms[s], kind="stable")
    for p in range(obs.plans - 1, -1, -1):
        for d in far_first.tolist():
            c = min(float(fwd_cpu[p, d]), budget - used)
            if c <= 1e-9:
                continue
            out.append(
                Action(
                    "revert",
                    s,
                    f"{100 * obs.utilisation[s]:.1f} % is below the "
                    f"acceptable {100 * cfg.acceptable[s]:.0f} %: taking back "
                    f"{c:,.0f} ms/s forwarded to site {d}",
                    plan=p,
                    to=d,
                    share=c / float(arriving[p]),
                    cpu=c,
                )
            )
            used += c
    return out, used


def _announce_back(obs: Observation, state: State, cfg: Config, ok: BoolArray) -> list[Action]:
    """Announce again, one prefix per decision, where the site has room for it.

    A withdrawn prefix is taken to carry as much as each prefix still announced there
    (traffic spreads evenly over prefixes); with none announced, a healthy site (known
    capacity, no load) announces one back and the next decision judges the result.
    """
    out: list[Action] = []
    if not state.withdrawn.size:
        return out
    cap = obs.site_capacity()
    total = obs.cpu.sum(axis=1)
    announced = cfg.announced if cfg.announced is not None else np.ones_like(state.withdrawn)
    for s in np.flatnonzero(state.withdrawn.any(axis=0) & ok).tolist():
        live = int((announced[:, s] & ~state.withdrawn[:, s]).sum())
        if cap[s] <= 0:
            continue
        back = total[s] / live if live else 0.0
        after = (total[s] + back) / cap[s]
        if after > cfg.acceptable[s] - cfg.hysteresis:
            continue
        q = int(np.flatnonzero(state.withdrawn[:, s])[0])
        out.append(
            Action(
                "announce",
                s,
                f"{100 * total[s] / cap[s]:.1f} % with room for its "
                f"withdrawn traffic (about {100 * after:.0f} % after): announcing "
                f"prefix {q} again",
                prefix=q,
                cpu=back,
            )
        )
    return out


def _withdraw(
    s: int,
    obs: Observation,
    state: State,
    cfg: Config,
    failover: Failover | None,
    room: FloatArray,
    may_forward: BoolArray,
    budget: float,
) -> tuple[list[Action], float]:
    """The sledgehammer: withdraw one prefix at s if its receivers can take the load.

    If the atlas shows receivers that could not, they are asked first to forward some
    of their own traffic elsewhere — making room in advance, so that the withdrawal does
    not set off a thundering herd — and the prefix goes in a later decision.
    """
    if cfg.announced is None or not cfg.announced.size:
        return [
            Action("hold", s, "above the maximum, cannot forward, and no prefix to withdraw")
        ], 0.0
    if failover is None:
        return [
            Action(
                "hold",
                s,
                "above the maximum and cannot forward; no atlas says "
                "where a withdrawal would send its users, so nothing is withdrawn",
            )
        ], 0.0
    live = cfg.announced & ~state.withdrawn
    mine = [q for q in np.flatnonzero(live[:, s]).tolist() if live[q].sum() > 1]
    if not mine:
        return [
            Action(
                "hold",
                s,
                "its prefixes are withdrawn or announced nowhere else: "
                "never withdrawing the last announcement of a prefix",
            )
        ], 0.0
    total = float(obs.cpu[s].sum())
    per_prefix = total / max(int(live[:, s].sum()), 1)  # traffic spreads evenly over prefixes
    lands = failover.share[s] * per_prefix
    short = np.flatnonzero(lands > room + 1e-9)
    if short.size:
        out: list[Action] = []
        used = 0.0
        crowded = set(short.tolist()) | {s}
        for r in short.tolist():
            if not may_forward[r]:
                continue
            why = (
                f"making room for the withdrawal of a prefix at site {s}, which would send "
                f"{lands[r]:,.0f} ms/s here (room {max(room[r], 0):,.0f}): preventing a "
                "thundering herd"
            )
            acts, moved = _plurimog(
                r,
                float(lands[r] - max(room[r], 0.0)),
                budget - used,
                why,
                obs,
                state,
                cfg,
                room,
                crowded,
            )
            out += acts
            used += moved
        worst = int(short[np.argmax((lands - room)[short])])
        out.append(
            Action(
                "hold",
                s,
                f"withdrawing a prefix would send {lands[worst]:,.0f} ms/s "
                f"to site {worst}, which has room for {max(room[worst], 0):,.0f}: too "
                "risky for now",
            )
        )
        return out, used
    q = mine[0]
    room -= lands
    return [
        Action(
            "withdraw",
            s,
            f"above the maximum and cannot forward: withdrawing prefix "
            f"{q} moves about {per_prefix:,.0f} ms/s, which its receivers can take",
            prefix=q,
            cpu=per_prefix,
        )
    ], 0.0


def apply(state: State, plan: Plan, now: float) -> State:
    """The state after the plan's actions are carried out."""
    fwd, shift, wd, last = (
        state.forward.copy(),
        state.shift.copy(),
        state.withdrawn.copy(),
        state.last_change.copy(),
    )
    for a in plan.actions:
        if a.kind == "forward":
            fwd[a.site, a.plan, a.to] += a.share
        elif a.kind == "revert":
            fwd[a.site, a.plan, a.to] = max(fwd[a.site, a.plan, a.to] - a.share, 0.0)
        elif a.kind == "shift":
            shift[a.section] = min(max(shift[a.section] + a.share, 0.0), 1.0)
        elif a.kind == "withdraw":
            wd[a.prefix, a.site] = True
        elif a.kind == "announce":
            wd[a.prefix, a.site] = False
        else:
            continue
        last[a.site] = now
    return replace(state, forward=fwd, shift=shift, withdrawn=wd, last_change=last)
