"""The topology YAML, as pydantic models: the shape of the file and the range of values.

This module checks what can be checked one value at a time (types, ranges, patterns,
unknown keys); :mod:`.topology` then checks what needs the whole file (names defined
before use, no duplicates, ASNs known to the Internet).  A minimal file::

    asn: 64500
    sites:
      - code: CHC
        city: Christchurch
        country: NZ
        lat: -43.49
        lon: 172.53
        sections: [{name: CHC01, servers: 8, cpu_per_server: 64000}]
        transit: [2001]
    prefixes:
      - {cidr: 198.51.100.0/24, sites: all}
    internet:
      relations: ["1001|2001|-1"]

See ``docs/topology.md`` for every field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..network import DEFAULT_THRESHOLDS
from ..plans import DEFAULT_PLANS

Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
Count = Annotated[int, Field(ge=0, le=2**53)]  # fits the model's int64 arrays
Latitude = Annotated[float, Field(ge=-90.0, le=90.0)]
Longitude = Annotated[float, Field(ge=-180.0, le=180.0)]
ASN = Annotated[int, Field(ge=1, le=2**32 - 1)]
Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
SiteCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
SectionName = Annotated[str, Field(pattern=r"^[A-Z]{3}[0-9]{2}$")]
NodeName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,14}$")]
MED = Annotated[int, Field(ge=0, le=2**32 - 1)]
# NO_EXPORT (RFC 1997), and the lab's action communities: not to its peers, providers
Community = Literal["no-export", "no-peers", "no-providers"]
# "node:interface", or "node" alone: the interface is then named for it (labends.py)
Endpoint = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,14}(:[a-z][a-z0-9-]{0,14})?$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LatencyIn(Strict):
    inflation: float = Field(1.3, ge=1.0, le=10.0)
    access_ms: float = Field(2.0, ge=0.0, le=1000.0)


class PlanIn(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    share: float = Field(ge=0.0, le=1.0)
    cpu_ms_per_request: float = Field(gt=0.0)


DEFAULT_PLAN_ROWS = [
    PlanIn(name=n, share=float(s), cpu_ms_per_request=float(c))
    for n, s, c in zip(DEFAULT_PLANS.names, DEFAULT_PLANS.share, DEFAULT_PLANS.cpu_ms, strict=True)
]


class ThresholdsIn(Strict):
    maximum: Fraction = DEFAULT_THRESHOLDS[0]
    target: Fraction = DEFAULT_THRESHOLDS[1]
    acceptable: Fraction = DEFAULT_THRESHOLDS[2]

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdsIn:
        if not self.acceptable <= self.target <= self.maximum:
            raise ValueError(
                "thresholds must satisfy acceptable <= target <= maximum, got "
                f"{self.acceptable} / {self.target} / {self.maximum}"
            )
        return self


class SectionIn(Strict):
    name: SectionName
    servers: Count
    cpu_per_server: float = Field(ge=0.0, description="CPU time per server, ms/s")


class SiteIn(Strict):
    code: SiteCode
    city: str = Field(min_length=1)
    country: Country
    lat: Latitude
    lon: Longitude
    kind: Literal["single", "mcp"] = "single"
    thresholds: ThresholdsIn = ThresholdsIn()
    sections: list[SectionIn] = Field(min_length=1)
    transit: list[ASN] = []
    peers: list[ASN] = []
    prepend: dict[ASN, Annotated[int, Field(ge=0, le=32)]] = Field(
        {}, description="per session (by the neighbour's ASN): extra copies of our ASN"
    )
    med: dict[ASN, MED] = Field({}, description="per session: the MED sent (lowest wins)")
    communities: dict[ASN, list[Community]] = Field(
        {}, description="per session: what the neighbour may not do with the route"
    )


class PrefixIn(Strict):
    cidr: str
    sites: Literal["all"] | list[SiteCode] = "all"


class ASIn(Strict):
    asn: ASN
    name: str = ""
    kind: Literal["other", "tier1", "transit", "access", "content"] = "other"
    country: Literal[""] | Country = ""
    metros: list[Count] = []


class MetroIn(Strict):
    id: Count
    name: str = Field(min_length=1)
    country: Country
    lat: Latitude
    lon: Longitude
    population: Count


class EyeballIn(Strict):
    asn: ASN
    metro: Count
    rps: float = Field(ge=0.0, description="peak requests per second")
    mix: list[Annotated[float, Field(ge=0.0, le=1.0)]] | None = None
    access_ms: float | None = Field(
        None, ge=0.0, le=1000.0, description="this network's last mile here (calibrated worlds)"
    )


class InternetIn(Strict):
    as_rel: str | None = Field(None, description="CAIDA as-rel file, relative to this file")
    relations: list[str] = Field([], description="as-rel lines inline")
    ases: list[ASIn] = []
    metros: list[MetroIn] | str = Field([], description="inline, or a CSV file (tables.py)")
    eyeballs: list[EyeballIn] | str = Field([], description="inline, or a CSV file")


class LabNodeIn(Strict):
    kind: Literal["router", "site", "client"]
    asn: ASN | None = None
    site: SiteCode | None = None
    speaker: Literal["frr", "bird", "gobgp", "exabgp"] | None = None
    servers: int | None = Field(None, ge=1, le=16)
    metro: str | None = Field(None, description="a router's metro: a key of lab.metros")


class LabMetroIn(Strict):
    lat: Latitude
    lon: Longitude


class LabLinkIn(Strict):
    endpoints: list[Endpoint] = Field(min_length=2, max_length=2)
    relation: Literal["provider-customer", "peer", "none"] = "none"
    delay_ms: float = Field(0.0, ge=0, le=10_000, description="one way, each way")
    jitter_ms: float = Field(0.0, ge=0, le=10_000, description="standard deviation")
    loss: float = Field(0.0, ge=0, le=1, description="share of frames lost, each way")
    prepend: int = Field(0, ge=0, le=32, description="the site's extra ASNs on this session")
    med: MED = Field(0, description="the MED the site sends on this session")
    communities: list[Community] = Field([], description="the site's, on this session")
    ipv6: list[str] = Field(
        [], max_length=2, description="the two ends' IPv6 addresses (dual-stack labs)"
    )


class LabIn(Strict):
    nodes: dict[NodeName, LabNodeIn] = {}
    links: list[LabLinkIn] = []
    metros: dict[Annotated[str, Field(min_length=1)], LabMetroIn] = {}


class OperatorIn(Strict):
    name: str = Field(min_length=1)
    asn: ASN
    sites: list[SiteCode] = Field(min_length=1)


class BackboneLinkIn(Strict):
    sites: list[SiteCode] = Field(min_length=2, max_length=2)
    km: float | None = Field(None, gt=0.0, le=100_000.0, description="fibre route length")
    capacity_gbps: float = Field(gt=0.0, le=1e6)


class BackboneIn(Strict):
    route_factor: float = Field(
        1.25, ge=1.0, le=10.0, description="fibre route over great circle, where km is not given"
    )
    links: list[BackboneLinkIn] = []
    transit_detour: dict[SiteCode, Annotated[float, Field(ge=1.0, le=10.0)]] = {}


class OriginIn(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_.-]*$")
    city: str = Field(min_length=1)
    country: Country
    lat: Latitude
    lon: Longitude


class TopologyIn(Strict):
    anyedge: Literal[1] = Field(1, description="file format version")
    asn: ASN = 64500
    latency: LatencyIn = LatencyIn()
    plans: list[PlanIn] = Field(DEFAULT_PLAN_ROWS, min_length=1)
    sites: list[SiteIn] = Field(min_length=1)
    prefixes: list[PrefixIn] = []
    operators: list[OperatorIn] = Field([], description="others' sites on the same prefixes")
    internet: InternetIn = InternetIn()
    lab: LabIn = LabIn()
    backbone: BackboneIn = BackboneIn()
    origins: list[OriginIn] = Field([], description="customers' servers, behind transit")
