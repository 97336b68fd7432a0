"""Observations, states and plans as JSON, with names at the edges.

Inside, the decision core works on arrays indexed by site, plan and section row; in
files and on the command line everything is named: sites by code, plans by name,
sections by name, prefixes by CIDR.  This module turns one into the other and checks
the files (pydantic), so that ``anyedge control plan`` can answer "what would the Traffic
Manager do now?" for an observation written by hand or exported from a live system.
``docs/control.md`` shows every format with an example.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .core import VISIBLE, Action, Config, Observation, Plan, State
from .forwards import Forwards
from .reasons import Names, fields, render


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SectionObs(_Strict):
    name: str
    utilisation: float = Field(ge=0)
    cpu: float = Field(ge=0)


class SiteObs(_Strict):
    site: str
    utilisation: float = Field(ge=0)
    cpu: dict[str, float]
    age_s: float = Field(0.0, ge=0)
    maximum: float = Field(0.90, gt=0, le=1)
    target: float = Field(0.85, gt=0, le=1)
    acceptable: float = Field(0.75, gt=0, le=1)
    can_forward: bool = True
    capacity: float | None = Field(None, ge=0, description="CPU ms/s at 100 %")
    prefixes: list[str] = []
    sections: list[SectionObs] = []

    @model_validator(mode="after")
    def _order(self) -> SiteObs:
        if not self.acceptable <= self.target <= self.maximum:
            raise ValueError("thresholds must satisfy acceptable <= target <= maximum")
        if any(v < 0 for v in self.cpu.values()):
            raise ValueError("CPU time per plan must be non-negative")
        return self


class Settings(_Strict):
    stale_after: float = Field(120.0, gt=0)
    max_move_share: float = Field(0.10, gt=0, le=1)
    revert_step: float = Field(0.25, gt=0, le=1)
    revert_floor: float = Field(0.01, ge=0, le=1)
    hysteresis: float = Field(0.05, ge=0, le=1)
    min_interval: float = Field(60.0, ge=0)
    protected_plans: list[str] | None = Field(
        None, description="plans that never move; default: enterprise, if it is a plan"
    )


class ObservationIn(_Strict):
    now: float
    plans: list[str] = Field(["free", "pro", "business", "enterprise"], min_length=1)
    sites: list[SiteObs] = Field(min_length=1)
    latency_ms: dict[str, dict[str, Annotated[float, Field(ge=0)]]] = {}
    settings: Settings = Settings()

    @model_validator(mode="after")
    def _unique(self) -> ObservationIn:
        if len(set(self.plans)) != len(self.plans):
            raise ValueError("a plan is listed twice in plans")
        return self


class ForwardIn(_Strict):
    site: str
    plan: str
    to: str
    share: float = Field(gt=0, le=1)
    cpu: float | None = Field(None, ge=0, description="CPU ms/s the forward carries")


class ShiftIn(_Strict):
    section: str
    share: float = Field(ge=0, le=1)
    cpu: float | None = Field(None, ge=0, description="CPU ms/s the shift carries")


class WithdrawnIn(_Strict):
    site: str
    prefix: str
    # what the withdrawal moved away (CPU ms/s) and the receivers' own traffic then
    # (see State.withdrawn_basis): how the prefix's return is judged; unknown if absent
    cpu: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    basis: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class StateIn(_Strict):
    forward: list[ForwardIn] = []
    shift: list[ShiftIn] = []
    withdrawn: list[WithdrawnIn] = []
    last_change: dict[str, float] = {}


def observation_from(doc: ObservationIn) -> tuple[Observation, Config, Names]:
    """Arrays of an observation file, with the configuration it carries."""
    sites = tuple(s.site for s in doc.sites)
    if len(set(sites)) != len(sites):
        raise KeyError("sites: a site is listed twice")
    plans = tuple(doc.plans)
    sec_names: list[str] = []
    sec_site: list[int] = []
    sec_u: list[float] = []
    sec_c: list[float] = []
    prefixes: list[str] = sorted({p for s in doc.sites for p in s.prefixes})
    for i, s in enumerate(doc.sites):
        unknown = set(s.cpu) - set(plans)
        if unknown:
            raise KeyError(f"sites[{i}].cpu: unknown plan {sorted(unknown)[0]!r}")
        for x in s.sections:
            sec_names.append(x.name)
            sec_site.append(i)
            sec_u.append(x.utilisation)
            sec_c.append(x.cpu)
    n = len(sites)
    lat = np.full((n, n), math.inf)
    np.fill_diagonal(lat, 0.0)
    row_of = {name: i for i, name in enumerate(sites)}
    for a, row in doc.latency_ms.items():  # one row at a time, its entries as arrays
        i = row_of.get(a, -1)
        if i < 0:
            raise KeyError(f"latency_ms: unknown site {a!r}")
        try:  # the row's names looked up in one call (in C), not one by one
            js = np.array(list(map(row_of.__getitem__, row)), dtype=np.int64)
        except KeyError:
            bad = next(b for b in row if b not in row_of)
            raise KeyError(f"latency_ms.{a}: unknown site {bad!r}") from None
        if a in row:
            raise KeyError(f"latency_ms.{a}.{a}: a site's latency to itself is 0")
        lat[i, js] = np.fromiter(row.values(), dtype=np.float64, count=len(row))
    # one direction is enough: a pair given one way only is the same the other way
    lat = np.where(np.isfinite(lat), lat, lat.T)
    obs = Observation(
        utilisation=np.array([s.utilisation for s in doc.sites]),
        cpu=np.array([[s.cpu.get(p, 0.0) for p in plans] for s in doc.sites]).reshape(n, -1),
        age=np.array([s.age_s for s in doc.sites]),
        section_site=np.array(sec_site, dtype=np.int64),
        section_utilisation=np.array(sec_u),
        section_cpu=np.array(sec_c),
        capacity=(
            np.array([s.capacity if s.capacity is not None else _inferred(s) for s in doc.sites])
        ),
    )
    st = doc.settings
    protected: tuple[str, ...]
    if st.protected_plans is None:
        protected = ("enterprise",) if "enterprise" in plans else ()
    else:
        unknown_plans = [p for p in st.protected_plans if p not in plans]
        if unknown_plans:
            raise KeyError(f"settings.protected_plans: unknown plan {unknown_plans[0]!r}")
        protected = tuple(st.protected_plans)
    announced = np.array(
        [[p in s.prefixes for s in doc.sites] for p in prefixes], dtype=np.bool_
    ).reshape(len(prefixes), n)
    cfg = Config(
        maximum=np.array([s.maximum for s in doc.sites]),
        target=np.array([s.target for s in doc.sites]),
        acceptable=np.array([s.acceptable for s in doc.sites]),
        latency_ms=lat,
        plans=plans,
        protected=protected,
        can_forward=np.array([s.can_forward for s in doc.sites]),
        announced=announced,
        stale_after=st.stale_after,
        max_move_share=st.max_move_share,
        revert_step=st.revert_step,
        revert_floor=st.revert_floor,
        hysteresis=st.hysteresis,
        min_interval=st.min_interval,
    )
    return obs, cfg, Names(sites, plans, tuple(sec_names), tuple(prefixes))


def _inferred(s: SiteObs) -> float:
    """Capacity from CPU time and utilisation, when the file gives none (0: unknown)."""
    total = sum(s.cpu.values())
    return total / s.utilisation if s.utilisation > 0 else 0.0


def state_from(doc: StateIn, names: Names) -> State:
    n, p = len(names.sites), len(names.plans)
    state = State.empty(n, p, len(names.sections), len(names.prefixes))
    shift, wd, last = state.shift.copy(), state.withdrawn.copy(), state.last_change.copy()
    shifted = state.shifted().copy()
    moved, basis = state.moved_by_withdrawal().copy(), state.withdrawal_basis().copy()
    entries: dict[tuple[int, int, int], tuple[float, float]] = {}
    for k, f in enumerate(doc.forward):
        plan = names.row("plans", f.plan)
        if plan < 0:
            raise KeyError(f"forward[{k}].plan: unknown plan {f.plan!r}")
        at = (names.site(f.site, f"forward[{k}].site"), plan, names.site(f.to, f"forward[{k}].to"))
        entries[at] = (f.share, f.cpu if f.cpu is not None else 0.0)
    for k, x in enumerate(doc.shift):
        row = names.row("sections", x.section)
        if row < 0:
            raise KeyError(f"shift[{k}].section: unknown section {x.section!r}")
        shift[row] = x.share
        shifted[row] = x.cpu if x.cpu is not None else 0.0
    for k, w in enumerate(doc.withdrawn):
        q = names.row("prefixes", w.prefix)
        if q < 0:
            raise KeyError(f"withdrawn[{k}].prefix: {w.prefix!r} is announced by no site")
        col = names.site(w.site, f"withdrawn[{k}].site")
        wd[q, col] = True
        moved[q, col] = w.cpu if w.cpu is not None else 0.0
        basis[q, col] = w.basis if w.basis is not None else 0.0
    for site, t in doc.last_change.items():
        last[names.site(site, "last_change")] = t
    keys = list(entries)
    forward = Forwards.of(
        [a for a, _, _ in keys],
        [b for _, b, _ in keys],
        [c for _, _, c in keys],
        [entries[k][0] for k in keys],
        [entries[k][1] for k in keys],
    )
    out = np.zeros((n, p))  # the share of each site's plan it forwards
    np.add.at(out, (forward.src, forward.plan), forward.share)
    if np.any(out > 1 + 1e-9):
        raise KeyError("forward: a site forwards more than all of a plan's traffic")
    blind = (out[forward.src, forward.plan] > 1 - VISIBLE) & (forward.cpu <= 0)
    if blind.any():
        k = int(np.flatnonzero(blind)[0])
        s, pl, d = int(forward.src[k]), int(forward.plan[k]), int(forward.dst[k])
        raise KeyError(
            f"forward: {names.sites[s]} forwards all its {names.plans[pl]} traffic, so the "
            f"site cannot see it: give the CPU time it carries (cpu) on the entry to "
            f"{names.sites[d]}"
        )
    return replace(
        state,
        forward=forward,
        shift=shift,
        withdrawn=wd,
        last_change=last,
        shift_cpu=shifted,
        withdrawn_cpu=moved,
        withdrawn_basis=basis,
    )


def state_to(state: State, names: Names) -> dict[str, Any]:
    f, shifted = state.forward, state.shifted()
    moved, basis = state.moved_by_withdrawal(), state.withdrawal_basis()
    return {
        "forward": [
            {
                "site": names.sites[a],
                "plan": names.plans[b],
                "to": names.sites[c],
                "share": float(sh),
                "cpu": float(cp),
            }
            for a, b, c, sh, cp in zip(
                f.src.tolist(), f.plan.tolist(), f.dst.tolist(), f.share, f.cpu, strict=True
            )
        ],
        "shift": [
            {
                "section": names.sections[x],
                "share": float(state.shift[x]),
                "cpu": float(shifted[x]),
            }
            for x in np.flatnonzero(state.shift > 1e-12).tolist()
        ],
        "withdrawn": [
            {
                "site": names.sites[b],
                "prefix": names.prefixes[a],
                "cpu": float(moved[a, b]),
                "basis": float(basis[a, b]),
            }
            for a, b in zip(*np.nonzero(state.withdrawn), strict=True)
        ],
        "last_change": {
            names.sites[i]: float(t) for i, t in enumerate(state.last_change) if math.isfinite(t)
        },
    }


def action_to(a: Action, names: Names) -> dict[str, Any]:
    """One action as JSON: names, full-precision shares, the reason as words and data."""
    out: dict[str, Any] = {"kind": a.kind, "site": names.sites[a.site] if a.site >= 0 else None}
    if a.plan >= 0:
        out["plan"] = names.plans[a.plan]
    if a.to >= 0:
        out["to"] = names.sites[a.to]
    if a.section >= 0:
        out["section"] = names.sections[a.section]
    if a.prefix >= 0:
        out["prefix"] = names.prefixes[a.prefix]
    if a.kind in ("forward", "revert", "handback", "shift"):
        out["share"] = float(a.share)
    if a.cpu or a.kind in ("forward", "revert", "handback", "shift"):
        out["cpu"] = float(a.cpu)
    out["code"] = a.reason.code
    out["fields"] = fields(a.reason, names)
    out["reason"] = render(a.reason, names)
    return out


def plan_to(plan: Plan, names: Names) -> list[dict[str, Any]]:
    return [action_to(a, names) for a in plan.actions]
