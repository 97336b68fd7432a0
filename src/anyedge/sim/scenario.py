"""Scenarios for the digital twin: how long, how fine, and what goes wrong when.

A scenario is YAML::

    name: a day at the edge
    duration: 24h          # s, m, h suffixes; plain numbers are seconds
    tick: 10s
    seed: 1
    decision_interval: 60s # how often the Traffic Manager decides
    telemetry_delay: 30s   # how old its observations are
    telemetry_noise: 0.02  # relative noise on what it observes
    events:
      - {at: 2h, for: 3h, kind: section_down, section: IAD02, fraction: 0.6}
      - {at: 6h, for: 1h, kind: maintenance, site: AMS}
      - {at: 8h, for: 2h, kind: site_dark, site: CHC}
      - {at: 14h, for: 2h, kind: cable_cut, between: [10297, 2015]}
      - {at: 20h, for: 2h, kind: session_down, site: MAD, asn: 10153}
      - {at: 22h, for: 2h, kind: surge, country: BR, factor: 3}
      - {at: 3h, for: 4h, kind: subsea_cut, regions: [EU, AS], factor: 1.5,
         links: [[MRS, SIN], [MRS, BOM]]}
      - {at: 4h, for: 1h, kind: transit_congestion, site: AMS, asn: 2015, factor: 1.8}
      - {at: 23h, for: 30m, kind: link_down, link: 2015-10297}
      - {at: 23h, for: 30m, kind: site_down, site: SYD}
    cache_miss: {free: 0.1, enterprise: 0.2}   # per plan; others: fetch.DEFAULT_MISS

Event kinds: ``servers_down`` (a share of a site's servers), ``section_down`` (a share of
one section's servers, all by default), ``site_dark`` (the site is gone: no servers, its
BGP sessions down), ``session_down`` (one BGP session of a site), ``cable_cut`` (the link
between two ASes), ``surge`` (demand times ``factor`` in a ``country``, a ``metro`` by
geonames id, or the users of a ``site``), ``maintenance`` (like dark, planned),
``link_down`` (a ``link: A-B`` between two ASes, or a site and an AS, as ``anyedge
catchment --link-down`` takes it) and ``site_down`` (every BGP session of the site lost:
it announces nothing, its servers stay up); and for the origin fetches (:mod:`.fetch`):
``subsea_cut`` (transit between two continents, ``regions``, takes ``factor`` times as
long and loses ``loss``; the backbone ``links`` named, as pairs of sites, are cut) and
``transit_congestion`` (one transit provider, ``asn``, of one ``site`` takes ``factor``
times as long and loses ``loss``); and inside a site (:mod:`.servers`), ``server_fail``
and ``server_drain`` (the first ``count`` servers of a ``section``, or of a ``site``
that has one section, fail or are drained, and come back when the event ends).  The
events that touch routing carry their :class:`~anyedge.routing.Faults`, which the twin
hands to the routing engine while they last.  Everything is checked against the world
on load; an error names the file, the place and the problem.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..errors import InputError, Problem
from ..model.files.text import read_text
from ..model.files.validate import parse_model
from ..model.files.yamlpos import line_of, place
from ..model.world import World
from ..routing.faults import FaultError, Faults, resolve

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_DURATION_S = 31 * 86_400.0  # a month: the twin is for days, not years
MAX_TICKS = 1_000_000  # a day at 0.1 s ticks; more would run for hours


def seconds(value: Any) -> float:
    """``90``, ``"90s"``, ``"1.5m"``, ``"2h"`` → seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration, like 10s, 5m or 2h")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"a finite duration, like 10s, 5m or 2h, not {value!r}")
        return float(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*", str(value))
    if not m:
        raise ValueError(f"a duration, like 10s, 5m or 2h, not {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


Seconds = Annotated[float, BeforeValidator(seconds), Field(ge=0)]


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    at: Seconds
    for_: Seconds = Field(alias="for")
    kind: Literal[
        "servers_down",
        "section_down",
        "site_dark",
        "session_down",
        "cable_cut",
        "surge",
        "maintenance",
        "subsea_cut",
        "transit_congestion",
        "link_down",
        "site_down",
        "server_fail",
        "server_drain",
    ]
    site: str | None = None
    link: str | None = None
    section: str | None = None
    fraction: float = Field(1.0, gt=0, le=1)
    asn: int | None = None
    between: list[int] | None = None
    country: str | None = None
    metro: int | None = None
    factor: float = Field(2.0, gt=0)
    loss: float = Field(0.0, ge=0, le=1)
    regions: list[str] | None = None
    links: list[list[str]] | None = None
    count: int = Field(1, ge=1)


class ScenarioIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "scenario"
    duration: Seconds = 86_400.0
    tick: Seconds = 10.0
    seed: int = 1
    start_utc_hour: float = Field(0.0, ge=0, lt=24)
    decision_interval: Seconds = 60.0
    telemetry_delay: Seconds = 30.0
    telemetry_noise: float = Field(0.02, ge=0, le=0.5)
    events: list[EventIn] = []
    cache_miss: dict[str, Annotated[float, Field(ge=0, le=1)]] = {}


@dataclass(frozen=True)
class Event:
    """An event with its target resolved to rows of the world."""

    start: float
    end: float
    kind: str
    site: int = -1
    section: int = -1
    fraction: float = 1.0
    asn: int = -1
    between: tuple[int, int] = (-1, -1)
    country: str = ""
    metro: int = -1
    factor: float = 1.0
    loss: float = 0.0
    regions: tuple[str, str] = ("", "")
    links: tuple[tuple[int, int], ...] = ()  # backbone links cut, as site rows
    count: int = 0  # servers of ``section`` that fail or drain (its first ``count``)
    text: str = ""
    faults: Faults = field(default_factory=Faults)  # what it takes down in routing


@dataclass(frozen=True)
class Scenario:
    name: str
    duration: float
    tick: float
    seed: int
    start_utc_hour: float
    decision_interval: float
    telemetry_delay: float
    telemetry_noise: float
    events: tuple[Event, ...]
    cache_miss: tuple[tuple[str, float], ...] = ()  # (plan, share) given by the scenario


def parse_scenario(text: str, world: World, file: str | Path = "<scenario>") -> Scenario:
    if not text.strip():
        text = "{}\n"  # an empty scenario takes every default
    doc = parse_model(
        text, file, ScenarioIn, "a scenario is a YAML mapping (duration:, events:, ...)", _message
    )
    problems: list[Problem] = []
    events: list[Event] = []
    net, inet = world.network, world.internet

    def bad(i: int, key: str, msg: str) -> None:
        loc = ("events", i, key)
        problems.append(Problem(place(loc), msg, line_of(text, loc)))

    if doc.tick <= 0:
        problems.append(Problem("tick", "must be positive", line_of(text, ("tick",))))
    if doc.duration < doc.tick:
        problems.append(
            Problem("duration", "must be at least one tick", line_of(text, ("duration",)))
        )
    elif doc.duration > MAX_DURATION_S:
        problems.append(
            Problem(
                "duration",
                f"at most {MAX_DURATION_S / 86_400:g} days, got {doc.duration / 86_400:,.1f} days",
                line_of(text, ("duration",)),
            )
        )
    elif doc.tick > 0 and doc.duration / doc.tick > MAX_TICKS:
        problems.append(
            Problem(
                "duration",
                f"{doc.duration:,.0f} s at {doc.tick:g} s ticks is {doc.duration / doc.tick:,.0f} "
                f"ticks; at most {MAX_TICKS:,} (a longer tick, or a shorter duration)",
                line_of(text, ("duration",)),
            )
        )
    for i, x in enumerate(doc.events):
        if x.at >= doc.duration:
            bad(i, "at", f"starts at {x.at:g} s, after the scenario ends ({doc.duration:g} s)")
        ev: dict[str, Any] = {
            "start": x.at,
            "end": x.at + x.for_,
            "kind": x.kind,
            "fraction": x.fraction,
            "factor": x.factor,
            "loss": x.loss,
        }
        needs_site = x.kind in (
            "servers_down",
            "site_dark",
            "session_down",
            "maintenance",
            "transit_congestion",
            "site_down",
        )
        if needs_site or (x.kind == "surge" and x.site):
            if x.site is None:
                bad(i, "site", f"a {x.kind} event names its site")
                continue
            try:
                ev["site"] = net.sites.index(x.site.upper())
            except KeyError:
                bad(i, "site", f"unknown site {x.site!r}")
                continue
        if x.kind in SERVER_KINDS:
            err = _servers(x, world, ev)
            if err:
                bad(i, err[0], err[1])
                continue
        if x.kind == "section_down":
            if x.section is None or x.section.upper() not in net.sections.name:
                bad(i, "section", f"unknown section {x.section!r}")
                continue
            ev["section"] = net.sections.name.index(x.section.upper())
        if x.kind == "session_down":
            mine = net.sessions.asn[net.sessions.site == ev["site"]].tolist()
            if x.asn not in mine:
                bad(i, "asn", f"site {x.site} has no session with AS{x.asn}")
                continue
            ev["asn"] = int(x.asn or 0)
        if x.kind == "cable_cut":
            if not x.between or len(x.between) != 2:
                bad(i, "between", "a cable cut names the two ASes it separates")
                continue
            try:
                a, b = (inet.index(x) for x in x.between)
            except KeyError as k:
                bad(i, "between", f"AS{k.args[0]} is not in the Internet")
                continue
            pairs = {tuple(sorted(p)) for p in inet.p2c.tolist()} | {
                tuple(p) for p in inet.p2p.tolist()
            }
            if tuple(sorted((a, b))) not in pairs:
                bad(i, "between", f"AS{x.between[0]} and AS{x.between[1]} are not linked")
                continue
            ev["between"] = (int(x.between[0]), int(x.between[1]))
            ev["faults"] = resolve(world, [f"{x.between[0]}-{x.between[1]}"])
        if x.kind == "transit_congestion":
            from .fetch import providers  # (it imports this module)

            mine = [a for a in providers(net.sessions, len(net.sites))[ev["site"]].tolist() if a]
            if x.asn not in mine:
                listed = ", ".join(f"AS{a}" for a in mine) or "none"
                bad(i, "asn", f"AS{x.asn} is not a transit provider of {x.site} ({listed})")
                continue
            ev["asn"] = int(x.asn or 0)
        if x.kind == "subsea_cut":
            err = _subsea(x, world, ev)
            if err:
                bad(i, err[0], err[1])
                continue
        if x.kind == "session_down":
            ev["faults"] = resolve(world, [f"{x.site}-{x.asn}"])
        if x.kind == "site_down":
            ev["faults"] = resolve(world, sites=[str(x.site)])
        if x.kind == "link_down":
            try:
                ev["faults"] = resolve(world, [x.link or ""])
            except FaultError as err:
                for _, msg in err.problems:
                    bad(i, "link", msg)
                continue
        if x.kind == "surge":
            if x.country:
                if x.country.upper() not in set(inet.metros.country):
                    bad(i, "country", f"no metro in country {x.country!r}")
                    continue
                ev["country"] = x.country.upper()
            elif x.metro is not None:
                if x.metro not in set(inet.metros.id.tolist()):
                    bad(i, "metro", f"unknown metro {x.metro}")
                    continue
                ev["metro"] = inet.metros.index(x.metro)
            elif x.site is None:
                bad(i, "kind", "a surge names a country, a metro or a site")
                continue
        ev["text"] = describe(x)
        if x.kind in SERVER_KINDS:
            for other in events:
                if (
                    other.kind in SERVER_KINDS
                    and other.section == ev["section"]
                    and other.start < ev["end"]
                    and ev["start"] < other.end
                ):
                    name = net.sections.name[other.section]
                    bad(i, "at", f"overlaps another server event on {name}")
                    break
            else:
                events.append(Event(**ev))
            continue
        events.append(Event(**ev))
    plans = set(net.plans.names)
    for name in doc.cache_miss:
        if name not in plans:
            loc = ("cache_miss", name)
            problems.append(
                Problem(
                    place(loc),
                    f"unknown plan (plans: {', '.join(net.plans.names)})",
                    line_of(text, loc),
                )
            )
    if problems:
        raise InputError(file, problems)
    return Scenario(
        doc.name,
        doc.duration,
        doc.tick,
        doc.seed,
        doc.start_utc_hour,
        doc.decision_interval,
        doc.telemetry_delay,
        doc.telemetry_noise,
        tuple(sorted(events, key=lambda x: x.start)),
        tuple(sorted(doc.cache_miss.items())),
    )


CONTINENTS = ("AF", "AS", "EU", "NA", "OC", "SA")
SERVER_KINDS = ("server_fail", "server_drain")  # servers inside a section (:mod:`.servers`)


def _servers(x: EventIn, world: World, ev: dict[str, Any]) -> tuple[str, str] | None:
    """Resolve a server event's section (named, or the one section of a named site)
    and check its count; or (key, problem)."""
    net = world.network
    sec = net.sections
    if x.section is not None:
        if x.section.upper() not in sec.name:
            return "section", f"unknown section {x.section!r}"
        row = sec.name.index(x.section.upper())
    elif x.site is not None:
        try:
            s = net.sites.index(x.site.upper())
        except KeyError:
            return "site", f"unknown site {x.site!r}"
        mine = [i for i in range(len(sec.name)) if sec.site[i] == s]
        if len(mine) != 1:
            names = ", ".join(sec.name[i] for i in mine)
            return "site", f"{x.site} has {len(mine)} sections ({names}): name one as section"
        row = mine[0]
    else:
        return "section", f"a {x.kind} event names its section (or a site of one section)"
    n = int(sec.servers[row])
    if x.count >= n:
        return "count", f"{sec.name[row]} has {n} servers: at most {n - 1} may fail or drain"
    ev["section"], ev["site"], ev["count"] = row, int(sec.site[row]), x.count
    return None


def _subsea(x: EventIn, world: World, ev: dict[str, Any]) -> tuple[str, str] | None:
    """Resolve a subsea cut's regions and backbone links into ``ev``; or (key, problem)."""
    regions = [r.upper() for r in x.regions or []]
    if len(regions) != 2 or regions[0] == regions[1] or not set(regions) <= set(CONTINENTS):
        return "regions", f"a subsea cut names two continents of {', '.join(CONTINENTS)}"
    ev["regions"] = (regions[0], regions[1])
    links = world.backbone.links
    have = set(zip(links.a.tolist(), links.b.tolist(), strict=True))
    sites = world.network.sites
    rows = []
    for pair in x.links or []:
        if len(pair) != 2:
            return "links", f"a backbone link is two sites, not {pair}"
        try:
            a, b = sorted(sites.index(str(c).upper()) for c in pair)
        except KeyError:
            return "links", f"unknown site in {pair}"
        if (a, b) not in have:
            return "links", f"{'-'.join(map(str, pair))} is not a backbone link"
        rows.append((a, b))
    ev["links"] = tuple(rows)
    return None


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field (a scenario has name, duration, tick, seed, events, ...)"
    if err["type"] == "missing":
        return "required field is missing"
    return str(err["msg"])


def describe(e: EventIn) -> str:
    what = {
        "servers_down": f"{100 * e.fraction:.0f} % of {e.site}'s servers fail",
        "section_down": f"{100 * e.fraction:.0f} % of section {e.section} fails",
        "site_dark": f"{e.site} goes dark",
        "session_down": f"{e.site}'s BGP session with AS{e.asn} goes down",
        "cable_cut": f"the link between AS{(e.between or [0, 0])[0]} and "
        f"AS{(e.between or [0, 0])[1]} is cut",
        "surge": f"demand ×{e.factor:g} in "
        + (
            f"{e.country}"
            if e.country
            else f"metro {e.metro}"
            if e.metro
            else f"{e.site}'s catchment"
        ),
        "maintenance": f"{e.site} is drained for maintenance",
        "subsea_cut": f"a subsea cut: transit {'–'.join(e.regions or [])} ×{e.factor:g}"
        + (f", {100 * e.loss:g} % loss" if e.loss else "")
        + (f", backbone {', '.join('–'.join(p) for p in e.links)} cut" if e.links else ""),
        "transit_congestion": f"AS{e.asn} congested at {e.site}: ×{e.factor:g}"
        + (f", {100 * e.loss:g} % loss" if e.loss else ""),
        "link_down": f"the link {e.link} goes down",
        "site_down": f"{e.site} loses its BGP sessions",
        "server_fail": f"{e.count} of {e.section or e.site}'s servers fail",
        "server_drain": f"{e.count} of {e.section or e.site}'s servers are drained",
    }[e.kind]
    return what


def load_scenario(path: str | Path, world: World) -> Scenario:
    return parse_scenario(read_text(path), world, path)


# Every event matters in the default world: the section (all of it: Ashburn has room,
# so only Duomog saves its share), the servers, the dark site and the session at their
# region's evening; the session and the cable carry users, whom BGP moves when they go
# (AS10153, ES-Access-1, a Spanish fixed-line network, peers at MAD, and BIO, where its
# users go, cannot take them all at 22:00 local; the cable joins the Lithuanian mobile
# carrier AS10297 to its provider EU-Transit-1, AS2015, and its users go from WAW to BER
# when it is cut); the Brazilian surge at Brazil's evening peak (21:00 local is about
# 00:00 UTC); maintenance in Amsterdam's early-morning trough.
DEFAULT_SCENARIO = """\
name: a day at the edge
duration: 24h
tick: 10s
seed: 1
decision_interval: 60s
telemetry_delay: 30s
telemetry_noise: 0.02
events:
  - {at: 2h, for: 3h, kind: section_down, section: IAD02}
  - {at: 6h, for: 1h, kind: maintenance, site: AMS}
  - {at: 8h, for: 2h, kind: site_dark, site: CHC}
  - {at: 14h, for: 2h, kind: cable_cut, between: [10297, 2015]}
  - {at: 18h, for: 90m, kind: servers_down, site: FRA, fraction: 0.9}
  - {at: 20h, for: 2h, kind: session_down, site: MAD, asn: 10153}
  - {at: 22h, for: 2h, kind: surge, country: BR, factor: 2.5}
"""


def default_scenario(world: World) -> Scenario:
    return parse_scenario(DEFAULT_SCENARIO, world, "<default scenario>")
