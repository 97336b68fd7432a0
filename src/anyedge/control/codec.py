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
import re
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .core import Action, Config, Observation, Plan, State


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
    move_enterprise: bool = False


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


class ShiftIn(_Strict):
    section: str
    share: float = Field(ge=0, le=1)


class WithdrawnIn(_Strict):
    site: str
    prefix: str


class StateIn(_Strict):
    forward: list[ForwardIn] = []
    shift: list[ShiftIn] = []
    withdrawn: list[WithdrawnIn] = []
    last_change: dict[str, float] = {}


@dataclass(frozen=True)
class Names:
    """Rows ↔ names for one observation."""

    sites: tuple[str, ...]
    plans: tuple[str, ...]
    sections: tuple[str, ...]
    prefixes: tuple[str, ...]

    def site(self, name: str, where: str) -> int:
        try:
            return self.sites.index(name)
        except ValueError:
            raise KeyError(f"{where}: unknown site {name!r}") from None


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
    for a, row in doc.latency_ms.items():
        i = sites.index(a) if a in sites else -1
        if i < 0:
            raise KeyError(f"latency_ms: unknown site {a!r}")
        for b, ms in row.items():
            if b not in sites:
                raise KeyError(f"latency_ms.{a}: unknown site {b!r}")
            if b == a:
                raise KeyError(f"latency_ms.{a}.{b}: a site's latency to itself is 0")
            j = sites.index(b)
            lat[i, j] = ms
            if not math.isfinite(lat[j, i]):
                lat[j, i] = ms
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
    movable = np.ones(len(plans), dtype=np.bool_)
    if not st.move_enterprise:
        movable[-1] = False
    announced = np.array(
        [[p in s.prefixes for s in doc.sites] for p in prefixes], dtype=np.bool_
    ).reshape(len(prefixes), n)
    cfg = Config(
        maximum=np.array([s.maximum for s in doc.sites]),
        target=np.array([s.target for s in doc.sites]),
        acceptable=np.array([s.acceptable for s in doc.sites]),
        latency_ms=lat,
        plans=plans,
        movable=movable,
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
    fwd, shift, wd, last = (
        state.forward.copy(),
        state.shift.copy(),
        state.withdrawn.copy(),
        state.last_change.copy(),
    )
    for k, f in enumerate(doc.forward):
        if f.plan not in names.plans:
            raise KeyError(f"forward[{k}].plan: unknown plan {f.plan!r}")
        fwd[
            names.site(f.site, f"forward[{k}].site"),
            names.plans.index(f.plan),
            names.site(f.to, f"forward[{k}].to"),
        ] = f.share
    for k, x in enumerate(doc.shift):
        if x.section not in names.sections:
            raise KeyError(f"shift[{k}].section: unknown section {x.section!r}")
        shift[names.sections.index(x.section)] = x.share
    for k, w in enumerate(doc.withdrawn):
        if w.prefix not in names.prefixes:
            raise KeyError(f"withdrawn[{k}].prefix: {w.prefix!r} is announced by no site")
        wd[names.prefixes.index(w.prefix), names.site(w.site, f"withdrawn[{k}].site")] = True
    for site, t in doc.last_change.items():
        last[names.site(site, "last_change")] = t
    if np.any(fwd.sum(axis=2) > 1 + 1e-9):
        raise KeyError("forward: a site forwards more than all of a plan's traffic")
    return State(fwd, shift, wd, last)


def state_to(state: State, names: Names) -> dict[str, Any]:
    s, p, d = np.nonzero(state.forward > 1e-12)
    return {
        "forward": [
            {
                "site": names.sites[a],
                "plan": names.plans[b],
                "to": names.sites[c],
                "share": float(state.forward[a, b, c]),
            }
            for a, b, c in zip(s.tolist(), p.tolist(), d.tolist(), strict=True)
        ],
        "shift": [
            {"section": names.sections[x], "share": float(state.shift[x])}
            for x in np.flatnonzero(state.shift > 1e-12).tolist()
        ],
        "withdrawn": [
            {"site": names.sites[b], "prefix": names.prefixes[a]}
            for a, b in zip(*np.nonzero(state.withdrawn), strict=True)
        ],
        "last_change": {
            names.sites[i]: float(t) for i, t in enumerate(state.last_change) if math.isfinite(t)
        },
    }


def action_to(a: Action, names: Names) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": a.kind, "site": names.sites[a.site] if a.site >= 0 else None}
    if a.plan >= 0:
        out["plan"] = names.plans[a.plan]
    if a.to >= 0:
        out["to"] = names.sites[a.to]
    if a.section >= 0:
        out["section"] = names.sections[a.section]
    if a.prefix >= 0:
        out["prefix"] = names.prefixes[a.prefix]
    if a.kind in ("forward", "revert", "shift"):
        out["share"] = round(a.share, 9)
    if a.cpu:
        out["cpu"] = round(a.cpu, 3)
    out["reason"] = _named(a.reason, names)
    return out


def _named(reason: str, names: Names) -> str:
    """Reasons name sites and prefixes by row inside the core; by name here."""

    def sub(word: str, table: tuple[str, ...], text: str) -> str:
        def one(m: re.Match[str]) -> str:
            i = int(m.group(1))
            return f"{word} {table[i]}" if i < len(table) else m.group(0)

        return re.sub(word + r" (\d+)", one, text)

    return sub("prefix", names.prefixes, sub("site", names.sites, reason))


def plan_to(plan: Plan, names: Names) -> list[dict[str, Any]]:
    return [action_to(a, names) for a in plan.actions]
