"""The failover atlas: every scenario's outcome, in a file the Traffic Manager reads.

An :class:`Atlas` holds, for one prefix, the outcome of every scenario with the load
each receiving site would carry, and ranks the scenarios by risk: the CPU time that
would land above receivers' maximum thresholds, then the worst utilisation.  It is
saved as JSON (``docs/predict.md`` documents every field); names are site codes, so the
file reads without the world it came from.  Loading validates the file; a problem names
the file, the place and what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..model.files.atomic import write_all
from ..model.files.text import read_json
from .predictor import Outcome, Predictor

FORMAT = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FlowIn(_Strict):
    site: str
    rps: float = Field(ge=0)
    share: float = Field(ge=0, le=1.000001)


class ReceiverIn(_Strict):
    site: str
    cpu_before: float
    cpu_after: float
    capacity_before: float = Field(ge=0)
    capacity: float = Field(ge=0)
    maximum: float = Field(gt=0, le=1)
    utilisation_after: float | None
    overloaded: bool


class ScenarioIn(_Strict):
    name: str
    kind: Literal["none", "single", "pair", "region", "section"]
    failed: list[str]
    section: str | None = None
    failed_rps: float = Field(ge=0)
    unreached_rps: float = Field(ge=0)
    collateral_rps: float = Field(ge=0)
    to: list[FlowIn]
    receivers: list[ReceiverIn]
    excess_cpu: float = Field(ge=0)
    worst_utilisation: float | None


class AtlasIn(_Strict):
    anyedge_atlas: Literal[1]
    prefix: str
    mode: Literal["as", "metro"]
    k: int = Field(ge=0)
    sites: list[str]
    scenarios: list[ScenarioIn]
    riskiest: list[str]


def _finite(x: float) -> float | None:
    return x if x == x and abs(x) != float("inf") else None


@dataclass(frozen=True)
class Atlas:
    data: AtlasIn

    @property
    def scenarios(self) -> list[ScenarioIn]:
        return self.data.scenarios

    def scenario(self, name: str) -> ScenarioIn:
        for sc in self.data.scenarios:
            if sc.name == name:
                return sc
        raise KeyError(name)

    def single(self, site: str) -> ScenarioIn:
        """The scenario in which ``site`` alone fails."""
        return self.scenario(site)

    def to_json(self) -> str:
        return json.dumps(self.data.model_dump(mode="json"), indent=1) + "\n"

    def save(self, path: str | Path) -> None:
        path = Path(path)
        write_all({path: self.to_json()})

    @classmethod
    def load(cls, path: str | Path) -> Atlas:
        return cls(read_json(path, AtlasIn))

    @classmethod
    def build(cls, p: Predictor, outcomes: list[Outcome], k: int) -> Atlas:
        w = p.world
        codes = w.network.sites.code
        sec_names = w.network.sections.name
        rows = []
        risk: list[tuple[float, float, str]] = []
        for o in outcomes:
            sc = o.scenario
            name = sc.name(w)
            cpu, cap = p.load_after(o)
            excess, worst, over = p.risk(o)
            util = p.utilisation(cpu, cap)
            recv = sorted(
                {s for s, d in o.cpu_delta.items() if d > 0}
                | set(o.capacity_delta) - set(sc.failed)
            )
            shares = o.shares()
            rows.append(
                ScenarioIn(
                    name=name,
                    kind=sc.kind,
                    failed=[codes[i] for i in sc.failed],
                    section=sec_names[sc.section] if sc.section >= 0 else None,
                    failed_rps=o.failed_rps,
                    unreached_rps=o.unreached_rps,
                    collateral_rps=o.collateral_rps,
                    to=[
                        FlowIn(site=codes[s], rps=r, share=shares[s])
                        for s, r in sorted(o.moved_to.items(), key=lambda t: -t[1])
                    ],
                    receivers=[
                        ReceiverIn(
                            site=codes[s],
                            cpu_before=float(p.base_cpu[s]),
                            cpu_after=float(cpu[s]),
                            capacity_before=float(p.capacity[s]),
                            capacity=float(cap[s]),
                            maximum=float(p.maximum[s]),
                            utilisation_after=_finite(float(util[s])),
                            overloaded=s in over,
                        )
                        for s in recv
                    ],
                    excess_cpu=excess,
                    worst_utilisation=_finite(worst),
                )
            )
            risk.append((-excess, -worst, name))
        risk.sort()
        return cls(
            AtlasIn(
                anyedge_atlas=FORMAT,
                prefix=w.network.prefixes.cidr[p.prefix],
                mode=str(p.router.mode),
                k=k,
                sites=list(codes),
                scenarios=rows,
                riskiest=[n for e, _, n in risk if e < 0][:50],
            )
        )

    def summary(self) -> dict[str, Any]:
        by_kind: dict[str, int] = {}
        for sc in self.data.scenarios:
            by_kind[sc.kind] = by_kind.get(sc.kind, 0) + 1
        over = [sc for sc in self.data.scenarios if sc.excess_cpu > 0]
        return {
            "prefix": self.data.prefix,
            "scenarios": len(self.data.scenarios),
            "by_kind": by_kind,
            "overloading": len(over),
            "riskiest": self.data.riskiest[:10],
        }
