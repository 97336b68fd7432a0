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
    withdrawn_cpu: FloatArray | None = None  # (Q, S): CPU ms/s the withdrawal moved away

    @classmethod
    def empty(cls, sites: int, plans: int, sections: int = 0, prefixes: int = 0) -> State:
        return cls(
            np.zeros((sites, plans, sites)),
            np.zeros(sections),
            np.zeros((prefixes, sites), dtype=np.bool_),
            np.full(sites, -np.inf),
            np.zeros((prefixes, sites)),
        )

    def moved_by_withdrawal(self) -> FloatArray:
        if self.withdrawn_cpu is None or self.withdrawn_cpu.shape != self.withdrawn.shape:
            return np.zeros(self.withdrawn.shape)
        return self.withdrawn_cpu

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
    known: BoolArray | None = None  # (S,) sites the atlas has a scenario for; default all


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
    own = _own_cpu(obs, state)  # what each site serves of its own users, per plan
    budget = cfg.max_move_share * float(total.sum())
    cap = obs.site_capacity()
    forward_ok = cfg.can_forward if cfg.can_forward is not None else np.ones(n, np.bool_)
    need = np.where(fresh & quiet, to_move(total, obs.utilisation, cfg.target), 0.0)
    over = np.flatnonzero((obs.utilisation > cfg.maximum) & (need > 0))
    # sites about to withdraw (they cannot forward) and the sites their users would reach:
    # those keep the room they have made (no revert) until the withdrawal is done
    pending = np.zeros(n, dtype=np.bool_)
    pending[[s for s in over.tolist() if not forward_ok[s]]] = True
    guarded = np.zeros(n, dtype=np.bool_)
    if failover is not None and pending.any():
        guarded = failover.share[pending].sum(axis=0) > 0

    actions += _duomog(obs, state, cfg, fresh & quiet)

    # 3. reverts: forwarding sites with room take traffic back first
    forwarding = state.forwarding()
    room = np.where(cap > 0, np.maximum(cap * cfg.acceptable - total, 0.0), 0.0)
    calm = obs.utilisation < cfg.acceptable - cfg.hysteresis
    for s in np.flatnonzero(forwarding & calm & fresh & quiet & ~guarded):
        acts, used = _revert(int(s), obs, own, state, cfg, float(room[s]))
        actions += acts
        room[s] -= used

    actions += _announce_back(obs, state, cfg, fresh & quiet)

    # 4. Plurimog: overloaded sites forward to receivers with room; 5. withdrawal
    receivers = fresh & ~forwarding & (obs.utilisation < cfg.acceptable)
    room_all = np.where(fresh, room, 0.0)  # for the atlas check: everyone's room
    room = np.where(receivers, room, 0.0)
    live = _live(cfg, state, n)
    for s in over[np.argsort(-obs.utilisation[over], kind="stable")].tolist():
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
        if not forward_ok[s]:
            acts, used = _withdraw(
                s,
                obs,
                own,
                state,
                cfg,
                failover,
                room,
                room_all,
                live,
                forward_ok & fresh & quiet,
                budget,
            )
            actions += acts
            budget -= used
            continue
        why = (
            f"{100 * obs.utilisation[s]:.1f} % is above the maximum "
            f"{100 * cfg.maximum[s]:.0f} %: moving {need[s]:,.0f} ms/s to reach "
            f"{100 * cfg.target[s]:.0f} %"
        )
        acts, used = _plurimog(s, float(need[s]), budget, why, own, state, cfg, room, set())
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
    own: FloatArray,
    state: State,
    cfg: Config,
    room: FloatArray,
    avoid: set[int],
) -> tuple[list[Action], float]:
    """Forward ``need`` ms/s of site s's own users' traffic (never what it was sent by
    others) to receivers nearest first; ``room`` shrinks."""
    lat = cfg.latency_ms[s]
    order = np.argsort(lat, kind="stable")
    order = order[(order != s) & (room[order] > 0) & np.isfinite(lat[order])]
    order = order[~np.isin(order, list(avoid))]
    # never take more than can be placed: what moves is still lowest priority first
    amount = min(need, budget, float(room[order].sum()))
    taken = take_from_plans(amount, own[s], cfg.movable_plans())
    split = assign(taken, order, room[order])
    arriving = own[s] / np.maximum(1.0 - state.forward[s].sum(axis=1), 1e-9)
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


def _live(cfg: Config, state: State, n: int) -> BoolArray:
    """(Q, S): announced by configuration and not withdrawn by the Traffic Manager."""
    announced = cfg.announced if cfg.announced is not None else np.zeros((0, n), np.bool_)
    if state.withdrawn.shape != announced.shape:
        raise ValueError(
            f"the state has {state.withdrawn.shape[0]} prefixes, the configuration "
            f"{announced.shape[0]}"
        )
    return np.asarray(announced & ~state.withdrawn, dtype=np.bool_)


def _own_cpu(obs: Observation, state: State) -> FloatArray:
    """CPU ms/s per site and plan of the site's own users (what others forward to it
    taken out), estimated from the shares in force: sites only forward their own."""
    f = state.forward  # (S, P, S)
    if f.shape[0] != obs.sites or not f.any():
        return obs.cpu
    kept = np.maximum(1.0 - f.sum(axis=2), 1e-9)  # (S, P)
    own = obs.cpu.copy()
    for _ in range(2):  # received depends on the senders' own traffic: two passes suffice
        received = np.einsum("sp,spd->dp", own / kept, f)
        own = np.maximum(obs.cpu - received, 0.0)
    return np.asarray(own)


def _revert(
    s: int, obs: Observation, own: FloatArray, state: State, cfg: Config, room: float
) -> tuple[list[Action], float]:
    """Take back up to ``revert_step`` of what site s forwards, within its room."""
    arriving = own[s] / np.maximum(1.0 - state.forward[s].sum(axis=1), 1e-9)
    fwd_cpu = state.forward[s] * arriving[:, None]  # (P, S) CPU ms/s forwarded
    # a step of what is forwarded, but never less than a floor, so that the last crumbs
    # come back too instead of shrinking geometrically for ever
    floor = cfg.revert_floor * float(own[s].sum() + fwd_cpu.sum())
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
    # a plan with no traffic left moves nothing by coming back: take its whole share back
    # at once, or a site that fell idle would forward for ever
    for p, d in zip(*np.nonzero((state.forward[s] > 0) & (arriving[:, None] <= 1e-9)), strict=True):
        out.append(
            Action(
                "revert",
                s,
                f"no {cfg.plans[p] if p < len(cfg.plans) else p} traffic arrives any more: "
                f"taking back what was forwarded to site {d}",
                plan=int(p),
                to=int(d),
                share=float(state.forward[s, p, d]),
                cpu=0.0,
            )
        )
    return out, used


def _announce_back(obs: Observation, state: State, cfg: Config, ok: BoolArray) -> list[Action]:
    """Announce again, one prefix per decision, where the site has room for it.

    A prefix brings back about the CPU time it took away when it was withdrawn (or, if
    that is not known, as much as each prefix still announced there); it goes back only
    if the site stays below acceptable, less the hysteresis margin, with it.  A site of
    unknown capacity waits.
    """
    out: list[Action] = []
    if not state.withdrawn.size:
        return out
    cap = obs.site_capacity()
    total = obs.cpu.sum(axis=1)
    moved = state.moved_by_withdrawal()
    announced = cfg.announced if cfg.announced is not None else np.ones_like(state.withdrawn)
    for s in np.flatnonzero(state.withdrawn.any(axis=0) & ok).tolist():
        if cap[s] <= 0:
            continue
        q = int(np.flatnonzero(state.withdrawn[:, s])[0])
        live = int((announced[:, s] & ~state.withdrawn[:, s]).sum())
        back = float(moved[q, s]) if moved[q, s] > 0 else (total[s] / live if live else 0.0)
        if back <= 0:
            continue  # nothing known of what it would bring back: keep it withdrawn
        after = (total[s] + back) / cap[s]
        if after > cfg.acceptable[s] - cfg.hysteresis:
            continue
        out.append(
            Action(
                "announce",
                s,
                f"{100 * total[s] / cap[s]:.1f} % with room for "
                f"the {back:,.0f} ms/s its withdrawn prefix carried (about "
                f"{100 * after:.0f} % after): announcing prefix {q} again",
                prefix=q,
                cpu=back,
            )
        )
    return out


def _withdraw(
    s: int,
    obs: Observation,
    own: FloatArray,
    state: State,
    cfg: Config,
    failover: Failover | None,
    room: FloatArray,
    room_all: FloatArray,
    live: BoolArray,
    may_forward: BoolArray,
    budget: float,
) -> tuple[list[Action], float]:
    """The sledgehammer: withdraw one prefix at s if its receivers can take the load.

    Only with the predictor's word for where the users go — none of them left without a
    site — and never the last announcement of a prefix (``live`` is updated as this
    decision withdraws).  If the atlas shows receivers that could not take their share,
    they are asked first to forward some of their own traffic elsewhere — making room in
    advance, so that the withdrawal does not set off a thundering herd — and the prefix
    goes in a later decision.
    """
    if not live.size or not live[:, s].any():
        return [
            Action(
                "hold",
                s,
                "above the maximum, cannot forward, and no prefix announced here to withdraw",
            )
        ], 0.0
    if failover is None or (failover.known is not None and not failover.known[s]):
        return [
            Action(
                "hold",
                s,
                "above the maximum and cannot forward; no atlas says "
                "where a withdrawal would send its users, so nothing is withdrawn",
            )
        ], 0.0
    share = failover.share[s]
    lost = 1.0 - float(share.sum())
    if lost > 1e-6:
        return [
            Action(
                "hold",
                s,
                f"withdrawing would leave {100 * lost:.1f} % of its users "
                "without any site: not withdrawing",
            )
        ], 0.0
    if np.any((share > 0) & ~np.isfinite(cfg.latency_ms[s])):
        return [
            Action(
                "hold",
                s,
                "the atlas sends its users to sites this observation "
                "does not cover: not withdrawing",
            )
        ], 0.0
    mine = [q for q in np.flatnonzero(live[:, s]).tolist() if live[q].sum() > 1]
    if not mine:
        return [
            Action(
                "hold",
                s,
                "its prefixes are announced nowhere else: never "
                "withdrawing the last announcement of a prefix",
            )
        ], 0.0
    total = float(obs.cpu[s].sum())
    per_prefix = total / int(live[:, s].sum())  # traffic spreads evenly over prefixes
    if per_prefix > budget:
        return [
            Action(
                "hold",
                s,
                f"withdrawing a prefix would move {per_prefix:,.0f} ms/s, "
                f"more than this decision may move ({budget:,.0f})",
            )
        ], 0.0
    lands = share * per_prefix
    short = np.flatnonzero(lands > room_all + 1e-9)
    if short.size:
        out: list[Action] = []
        used = 0.0
        crowded = set(short.tolist()) | {s}
        for r in short.tolist():
            if not may_forward[r]:
                continue
            why = (
                f"making room for the withdrawal of a prefix at site {s}, which would send "
                f"{lands[r]:,.0f} ms/s here (room {max(room_all[r], 0):,.0f}): preventing "
                "a thundering herd"
            )
            acts, moved = _plurimog(
                r,
                float(lands[r] - max(room_all[r], 0.0)),
                budget - used,
                why,
                own,
                state,
                cfg,
                room,
                crowded,
            )
            out += acts
            used += moved
        worst = int(short[np.argmax((lands - room_all)[short])])
        out.append(
            Action(
                "hold",
                s,
                f"withdrawing a prefix would send {lands[worst]:,.0f} "
                f"ms/s to site {worst}, which has room for "
                f"{max(room_all[worst], 0):,.0f}: too risky for now",
            )
        )
        return out, used
    q = mine[0]
    live[q, s] = False
    room -= lands
    room_all -= lands
    return [
        Action(
            "withdraw",
            s,
            f"above the maximum and cannot forward: withdrawing prefix "
            f"{q} moves about {per_prefix:,.0f} ms/s, which its receivers can take",
            prefix=q,
            cpu=per_prefix,
        )
    ], per_prefix


def apply(state: State, plan: Plan, now: float) -> State:
    """The state after the plan's actions are carried out."""
    fwd, shift, wd, last = (
        state.forward.copy(),
        state.shift.copy(),
        state.withdrawn.copy(),
        state.last_change.copy(),
    )
    moved = state.moved_by_withdrawal().copy()
    for a in plan.actions:
        if a.kind == "forward":
            fwd[a.site, a.plan, a.to] += a.share
        elif a.kind == "revert":
            fwd[a.site, a.plan, a.to] = max(fwd[a.site, a.plan, a.to] - a.share, 0.0)
        elif a.kind == "shift":
            shift[a.section] = min(max(shift[a.section] + a.share, 0.0), 1.0)
        elif a.kind == "withdraw":
            wd[a.prefix, a.site] = True
            moved[a.prefix, a.site] = a.cpu
        elif a.kind == "announce":
            wd[a.prefix, a.site] = False
            moved[a.prefix, a.site] = 0.0
        else:
            continue
        last[a.site] = now
    return replace(
        state, forward=fwd, shift=shift, withdrawn=wd, last_change=last, withdrawn_cpu=moved
    )
