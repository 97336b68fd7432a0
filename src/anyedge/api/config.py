"""``controller.yaml``: what ``anyedge control run`` watches, decides with and acts on.

Example (``docs/examples/controller.yaml`` is a complete one)::

    prometheus:
      url: http://127.0.0.1:9090
      queries:                       # PromQL; these are the defaults
        cpu: sum by (site, plan) (anyedge_site_cpu_ms)
        capacity: sum by (site) (anyedge_site_capacity_ms)
    interval: 10                     # seconds between decisions
    journal: /var/lib/anyedge/journal.sqlite
    plans: [free, pro, business, enterprise]   # lowest priority first
    protected_plans: [enterprise]
    guardrails: {stale_after: 60, max_move_share: 0.10, min_interval: 60}
    sites:
      - {name: AMS, maximum: 0.90, target: 0.85, acceptable: 0.75, prefixes: [192.0.2.0/24]}
      - {name: FRA}
    latency_ms: {AMS: {FRA: 8}}      # one direction is enough; a pair not given is never used
    actuator: {kind: dry-run}        # or nft, speakers (per site), or network (both)
    # and beside any kind, server weights from CPU (Unimog), through each site's balancer:
    #   actuator: {kind: ..., balancer: {damping: 0.5, sites: {AMS: {agent: edge.sock}}}}
    http: {address: 127.0.0.1, port: 9180, token_file: /etc/anyedge/token}
    atlas: atlas.json                # optional: the predictor's atlas, for withdrawals
    learn: {slo_ms: 20, every: 3600} # optional: learned maxima, with queries.p95 given

Every problem is reported with the file, line and place (exit status 2) before anything
starts; relative paths (``journal``, ``atlas``, ``token_file``, ``log``, ``agent``) are
read beside the config file.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..adapters.bgp.base import Neighbor, SiteSpeaker, SpeakerConfig
from ..control.core import Config
from ..control.reasons import Names
from ..errors import InputError
from ..model.files.text import read_text
from ..model.files.validate import parse_model

Fraction = Annotated[float, Field(ge=0.0, le=2.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueriesIn(_Strict):
    cpu: str = "sum by (site, plan) (anyedge_site_cpu_ms)"
    capacity: str = "sum by (site) (anyedge_site_capacity_ms)"
    utilisation: str | None = None
    scraped: str | None = "max by (site) (timestamp(anyedge_site_cpu_ms))"
    site_label: str = "site"
    plan_label: str = "plan"
    p95: str | None = None  # each site's p95 latency in ms: what ``learn`` learns from


class LearnIn(_Strict):
    """Learned maximum thresholds (the reference's): each site's maximum where its p95
    latency meets the SLO, from the samples of the last ``window`` seconds, relearnt
    every ``every`` seconds; trusted only below the static maximum."""

    slo_ms: float = Field(20.0, gt=0)
    every: float = Field(3600.0, gt=0)
    window: float = Field(7 * 86400.0, gt=0)
    min_points: int = Field(30, ge=3)
    learn_from: float = Field(0.5, ge=0, le=1.5)  # samples must reach this utilisation


class PrometheusIn(_Strict):
    url: str = Field(pattern=r"^https?://")
    queries: QueriesIn = QueriesIn()
    timeout: float = Field(5.0, gt=0, le=60)


class GuardrailsIn(_Strict):
    stale_after: float = Field(120.0, gt=0)
    max_move_share: float = Field(0.10, gt=0, le=1)
    revert_step: float = Field(0.25, gt=0, le=1)
    revert_floor: float = Field(0.01, ge=0, le=1)
    hysteresis: float = Field(0.05, ge=0, le=1)
    min_interval: float = Field(60.0, ge=0)


class SiteIn(_Strict):
    name: str = Field(min_length=1)
    maximum: Fraction = 0.90
    target: Fraction = 0.85
    acceptable: Fraction = 0.75
    can_forward: bool = True
    prefixes: tuple[str, ...] = ()
    # [latitude, longitude], degrees: where the dashboard's map draws the site
    location: (
        tuple[Annotated[float, Field(ge=-90, le=90)], Annotated[float, Field(ge=-180, le=180)]]
        | None
    ) = None

    @model_validator(mode="after")
    def _order(self) -> SiteIn:
        if not self.acceptable <= self.target <= self.maximum:
            raise ValueError(
                f"thresholds must be acceptable <= target <= maximum, got {self.acceptable:g}, "
                f"{self.target:g}, {self.maximum:g}"
            )
        for p in self.prefixes:
            ipaddress.ip_network(p)  # ValueError: not a prefix
        return self


class LinkIn(_Strict):
    """A backbone link from a site to another, for the nft forwarder."""

    to: str
    ifname: str
    via: str
    index: int = Field(ge=0, le=255)
    shared: tuple[str, ...] | None = None  # anycast addresses both sites hold (None: all)


class NftSiteIn(_Strict):
    namespace: str | None = None  # None: this machine's own nftables
    anycast: tuple[str, ...] = Field(min_length=1)
    ingress: tuple[str, ...] = Field(min_length=1)
    links: tuple[LinkIn, ...] = ()


class NeighborIn(_Strict):
    """A BGP neighbour of a site's speaker, as the speaker was started with it."""

    address: str
    asn: int = Field(ge=1, le=4294967295)
    local_address: str
    interface: str
    bfd: bool = False


class SpeakerIn(_Strict):
    driver: Literal["frr", "bird", "gobgp", "exabgp"]
    namespace: str
    workdir: str
    asn: int = Field(ge=1, le=4294967295)
    router_id: str
    # BIRD rewrites its whole configuration on a change: without its neighbours it would
    # drop its sessions (FRR, GoBGP and ExaBGP change only the routes)
    neighbors: tuple[NeighborIn, ...] = ()

    @model_validator(mode="after")
    def _bird(self) -> SpeakerIn:
        if self.driver == "bird" and not self.neighbors:
            raise ValueError(
                "a bird speaker needs its neighbors: BIRD is reconfigured from a whole new "
                "file, which would have none"
            )
        return self


class BalancerSiteIn(_Strict):
    agent: str  # the site's edge agent: its Unix socket (the loader of the balancer)


class BalancerIn(_Strict):
    """Unimog: server weights from each server's CPU, through the site's balancer."""

    cpu: str = "sum by (site, server) (anyedge_server_cpu_ms)"  # PromQL, ms/s per server
    capacity: str = "sum by (site, server) (anyedge_server_capacity_ms)"
    server_label: str = "server"
    damping: float = Field(0.5, gt=0, le=1)  # how far one step goes towards even CPU
    floor: float = Field(0.02, gt=0, le=1)  # utilisation an idle server is taken to have
    # the table is left as it is while no weight would change by more than this share
    min_change: float = Field(0.02, ge=0, le=1)
    sites: dict[str, BalancerSiteIn] = Field(min_length=1)


class ActuatorIn(_Strict):
    # network: forwards by nftables and withdrawals by the speakers, as a real site acts
    kind: Literal["dry-run", "nft", "speakers", "network"] = "dry-run"
    # dry-run: each enforced state as one JSON line (None: not written)
    log: str | None = None
    # rehearsal: seconds each enforcement takes (a slow network change), dry-run only
    delay: float = Field(0.0, ge=0, le=600)
    ports: dict[str, int] = {}  # nft: each plan's port
    nft: dict[str, NftSiteIn] = {}  # per site
    speakers: dict[str, SpeakerIn] = {}  # per site
    balancer: BalancerIn | None = None  # beside any kind: server weights, every step


class HttpIn(_Strict):
    address: str = "127.0.0.1"
    port: int = Field(9180, ge=0, le=65535)  # 0: any free port (written to the log)
    token_file: str | None = None  # the bearer token for overrides (else $ANYEDGE_TOKEN)


class ControllerIn(_Strict):
    prometheus: PrometheusIn
    interval: float = Field(10.0, gt=0, le=3600)
    journal: str = "journal.sqlite"
    plans: tuple[str, ...] = Field(("free", "pro", "business", "enterprise"), min_length=1)
    protected_plans: tuple[str, ...] = ("enterprise",)
    guardrails: GuardrailsIn = GuardrailsIn()
    sites: tuple[SiteIn, ...] = Field(min_length=1)
    latency_ms: dict[str, dict[str, Annotated[float, Field(ge=0)]]] = {}
    actuator: ActuatorIn = ActuatorIn()
    http: HttpIn | None = HttpIn()
    atlas: str | None = None
    learn: LearnIn | None = None

    @model_validator(mode="after")
    def _names(self) -> ControllerIn:
        if self.learn is not None and not self.prometheus.queries.p95:
            raise ValueError("learn needs prometheus.queries.p95 (each site's p95 latency)")
        names = [s.name for s in self.sites]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"site {', '.join(dup)} is listed twice")
        known = set(names)
        for a, row in self.latency_ms.items():
            for b in [a, *row]:
                if b not in known:
                    raise ValueError(f"latency_ms names site {b!r}, which is not in sites")
        for p in self.protected_plans:
            if p not in self.plans:
                raise ValueError(f"protected plan {p!r} is not in plans")
        act = self.actuator
        per_site: dict[str, list[str]] = {
            "nft": list(act.nft) if act.kind in ("nft", "network") else [],
            "speakers": list(act.speakers) if act.kind in ("speakers", "network") else [],
        }
        for part, sites in per_site.items():
            for s in sites:
                if s not in known:
                    raise ValueError(f"actuator.{part} names site {s!r}, which is not in sites")
        for s in act.balancer.sites if act.balancer is not None else {}:
            if s not in known:
                raise ValueError(f"actuator.balancer names site {s!r}, which is not in sites")
        if act.kind == "network" and not (act.nft and act.speakers):
            raise ValueError("a network actuator needs both nft (forwards) and speakers")
        if act.kind in ("nft", "network"):
            missing = [
                p for p in self.plans if p not in self.protected_plans and p not in act.ports
            ]
            if missing:
                raise ValueError(f"actuator.ports has no port for plan {', '.join(missing)}")
            for s, site in act.nft.items():
                for link in site.links:
                    if link.to not in known:
                        raise ValueError(f"actuator.nft.{s}: link to unknown site {link.to!r}")
        return self


def load(path: str | Path) -> ControllerIn:
    """The configuration in ``path``, or :class:`InputError` with every problem."""
    text = read_text(path)
    return parse_model(text, path, ControllerIn, "a controller configuration is a YAML mapping")


class AnnouncerIn(SpeakerIn):
    """``anyedge transit serve --speaker FILE``: the site's running speaker, and the
    routes the site announces of its own (kept beside every customer's prefixes)."""

    own: tuple[str, ...] = ()
    prepend: int = Field(0, ge=0, le=32)  # extra copies of the ASN on customers' prefixes

    @model_validator(mode="after")
    def _prefixes(self) -> AnnouncerIn:
        for p in self.own:
            ipaddress.ip_network(p)  # ValueError: not a prefix
        return self


def load_announcer(path: str | Path) -> AnnouncerIn:
    """The speaker file of ``transit serve``, or :class:`InputError` with every problem."""
    return parse_model(read_text(path), path, AnnouncerIn, "a speaker file is a YAML mapping")


def speaker(node: str, c: SpeakerIn, config_file: str | Path) -> SiteSpeaker:
    """A driver for the running speaker ``c`` describes (its workdir relative to the
    file it was read from)."""
    from ..adapters.bgp.bird import Bird
    from ..adapters.bgp.exabgp import ExaBgp
    from ..adapters.bgp.frr import Frr
    from ..adapters.bgp.gobgp import GoBgp

    kinds: dict[str, Callable[[SpeakerConfig], SiteSpeaker]] = {
        "frr": Frr,
        "bird": Bird,
        "gobgp": GoBgp,
        "exabgp": ExaBgp,
    }
    neighbors = tuple(
        Neighbor(n.address, n.asn, n.local_address, n.interface, n.bfd) for n in c.neighbors
    )
    cfg = SpeakerConfig(
        node, c.namespace, beside(config_file, c.workdir), c.asn, c.router_id, neighbors
    )
    return kinds[c.driver](cfg)


def beside(config_file: str | Path, path: str) -> Path:
    """``path`` as written in the config: relative to the config file's folder."""
    p = Path(path)
    return p if p.is_absolute() else Path(config_file).parent / p


def names_of(doc: ControllerIn) -> Names:
    prefixes = tuple(dict.fromkeys(p for s in doc.sites for p in s.prefixes))
    return Names(sites=tuple(s.name for s in doc.sites), plans=tuple(doc.plans), prefixes=prefixes)


def core_config(doc: ControllerIn) -> Config:
    """The decision core's :class:`Config` for this network."""
    names = names_of(doc)
    n = len(doc.sites)
    lat = np.full((n, n), math.inf)
    np.fill_diagonal(lat, 0.0)
    index = {s: i for i, s in enumerate(names.sites)}
    for a, row in doc.latency_ms.items():
        for b, ms in row.items():
            lat[index[a], index[b]] = lat[index[b], index[a]] = ms
    announced = None
    if names.prefixes:
        announced = np.array(
            [[p in s.prefixes for s in doc.sites] for p in names.prefixes], dtype=np.bool_
        )
    g = doc.guardrails
    return Config(
        maximum=np.array([s.maximum for s in doc.sites]),
        target=np.array([s.target for s in doc.sites]),
        acceptable=np.array([s.acceptable for s in doc.sites]),
        latency_ms=lat,
        plans=tuple(doc.plans),
        protected=tuple(doc.protected_plans),
        can_forward=np.array([s.can_forward for s in doc.sites], dtype=np.bool_),
        announced=announced,
        stale_after=g.stale_after,
        max_move_share=g.max_move_share,
        revert_step=g.revert_step,
        revert_floor=g.revert_floor,
        hysteresis=g.hysteresis,
        min_interval=g.min_interval,
    )


def check_files(doc: ControllerIn, path: str | Path) -> None:
    """Files the configuration names that must exist before anything starts."""
    for place, name in (
        ("atlas", doc.atlas),
        ("http.token_file", doc.http and doc.http.token_file),
    ):
        if name and not beside(path, name).is_file():
            raise InputError.one(path, place, f"no such file: {beside(path, name)}")
