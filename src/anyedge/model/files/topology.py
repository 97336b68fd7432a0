"""Load and save a world as topology YAML (plus an as-rel file for the Internet graph).

Loading runs in four passes, each reporting every problem it finds with its place:

1. read and parse the YAML (the C loader; a syntax error names its line);
2. check the shape and ranges with the pydantic schema (:mod:`.schema`);
3. check the file as a whole (:func:`_check`): duplicate codes, names used but never
   defined, sessions with unknown ASNs, plan shares that do not sum to one, …;
4. read the as-rel file the topology names, then build the arrays of the model and check
   the provider hierarchy has no loop.

Saving writes ``topology.yaml`` with ``internet.as-rel``, ``metros.csv`` and
``eyeballs.csv`` beside it, atomically: every file goes to a temporary name first, and
they replace the old ones only when all are complete.
Loading a saved world gives an equal world.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError

from ...errors import InputError, Problem
from ..backbone import Backbone, BackboneLinks, Origins
from ..countries import COUNTRIES
from ..geo import LatencyModel, great_circle_km
from ..internet import AS_KIND_NAMES, ASKind, Eyeballs, Internet, Metros, ProviderLoopError
from ..lab import Lab, LabLink, LabMetro, LabNode, NodeKind, Relation, Speaker
from ..network import (
    Network,
    Operator,
    Prefixes,
    Sections,
    SessionKind,
    Sessions,
    SiteKind,
    Sites,
    block_of,
    communities_of,
)
from ..plans import Plans
from ..world import World
from . import labends, labmetro
from .asrel import format_as_rel, parse_as_rel, read_as_rel
from .atomic import write_all
from .labv6 import check_lab_ipv6
from .schema import TopologyIn
from .tables import COLUMNS, format_table, read_table
from .text import read_text
from .yamlpos import Loc, _Loader, line_of, place

TOPOLOGY_FILE = "topology.yaml"
AS_REL_FILE = "internet.as-rel"
METROS_FILE = "metros.csv"
EYEBALLS_FILE = "eyeballs.csv"
SAVED_FILES = (TOPOLOGY_FILE, AS_REL_FILE, METROS_FILE, EYEBALLS_FILE)  # what save_world writes

_KIND_BY_NAME = {v: k for k, v in AS_KIND_NAMES.items()}


# ---------------------------------------------------------------------------- loading


def load_world(path: str | Path) -> World:
    """Load a topology YAML (or a directory holding ``topology.yaml``) into a World."""
    path = Path(path)
    if path.is_dir():
        path = path / TOPOLOGY_FILE
    text = read_text(path)
    return parse_world(text, path)


def parse_world(text: str, file: str | Path = "<topology>") -> World:
    file = Path(file)
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = int(mark.line) + 1 if mark is not None else None
        msg = str(getattr(e, "problem", None) or e)
        raise InputError.one(file, "", f"not valid YAML: {msg}", line) from None
    if not isinstance(data, dict):
        raise InputError.one(file, "", "a topology must be a YAML mapping (sites:, prefixes:, ...)")
    src = _Source(file, text)
    try:
        topo = TopologyIn.model_validate(data)
    except ValidationError as e:
        problems = [src.problem(tuple(err["loc"]), _pydantic_message(err)) for err in e.errors()]
        raise InputError(file, problems) from None
    topo = src.expand_tables(topo)
    found = list(_check(topo))
    if found:
        raise InputError(file, [src.problem(loc, msg) for loc, msg in found])
    return _build(topo, src)


class _Source:
    """Where each part of a topology came from, to put problems in their place."""

    def __init__(self, file: Path, text: str) -> None:
        self.file = file
        self.text = text
        self.tables: dict[str, tuple[Path, list[int]]] = {}

    def line(self, loc: Loc) -> int | None:
        return line_of(self.text, loc)

    def problem(self, loc: Loc, message: str) -> Problem:
        if len(loc) >= 3 and loc[0] == "internet" and loc[1] in self.tables:
            path, lines = self.tables[str(loc[1])]
            i = loc[2]
            if isinstance(i, int) and 0 <= i < len(lines):
                return Problem(".".join(str(x) for x in loc[3:]), message, lines[i], file=path)
        return Problem(place(loc), message, self.line(loc))

    def expand_tables(self, t: TopologyIn) -> TopologyIn:
        """Read the tables given as CSV file names; the result has them inline."""
        update: dict[str, Any] = {}
        for key in COLUMNS:
            value = getattr(t.internet, key)
            if isinstance(value, str):
                path = self.file.parent / value
                if not path.is_file():
                    raise InputError.one(
                        self.file,
                        f"internet.{key}",
                        f"{key} file {path} does not exist",
                        self.line(("internet", key)),
                    )
                rows, lines = read_table(path, key)
                self.tables[key] = (path, lines)
                update[key] = rows
        if not update:
            return t
        return t.model_copy(update={"internet": t.internet.model_copy(update=update)})


def _pydantic_message(err: Any) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if "input" in err and kind not in ("model_type", "dict_type", "list_type"):
        return f"{msg} (got {err['input']!r})"[:200]
    return str(msg)


def _check(t: TopologyIn) -> Iterator[tuple[Loc, str]]:
    """Whole-file checks; yields (place, message) for each problem."""
    names = [p.name for p in t.plans]
    for i, n in enumerate(names):
        if names.index(n) != i:
            yield ("plans", i, "name"), f"plan {n!r} is listed twice"
    total = sum(p.share for p in t.plans)
    if abs(total - 1.0) > 1e-6:
        yield ("plans",), f"plan shares must sum to 1, they sum to {total:g}"

    codes: dict[str, int] = {}
    sections: dict[str, tuple[int, int]] = {}
    for i, s in enumerate(t.sites):
        if s.code in codes:
            yield (
                ("sites", i, "code"),
                f"site {s.code} is already defined at sites[{codes[s.code]}]",
            )
        codes.setdefault(s.code, i)
        if s.country not in COUNTRIES:
            yield ("sites", i, "country"), f"unknown ISO country code {s.country!r}"
        if s.kind == "single" and len(s.sections) != 1:
            yield (
                ("sites", i, "sections"),
                (f"a single-section site has exactly one section, {s.code} has {len(s.sections)}"),
            )
        if s.kind == "mcp" and len(s.sections) < 2:
            yield ("sites", i, "sections"), "a multi-colo site (mcp) needs two or more sections"
        for j, sec in enumerate(s.sections):
            if not sec.name.startswith(s.code):
                yield (
                    ("sites", i, "sections", j, "name"),
                    (f"section {sec.name} of site {s.code} must be named {s.code}NN"),
                )
            if sec.name in sections:
                a, b = sections[sec.name]
                yield (
                    ("sites", i, "sections", j, "name"),
                    (f"section {sec.name} is already defined at sites[{a}].sections[{b}]"),
                )
            sections.setdefault(sec.name, (i, j))
        both = set(s.transit) & set(s.peers)
        if both:
            yield ("sites", i), f"AS{min(both)} is both a transit provider and a peer of {s.code}"
        for key in ("transit", "peers"):
            lst = getattr(s, key)
            for j, a in enumerate(lst):
                if lst.index(a) != j:
                    yield ("sites", i, key, j), f"AS{a} is listed twice"
        for key in ("prepend", "med", "communities"):
            for a in getattr(s, key):
                if a not in s.transit and a not in s.peers:
                    yield (
                        ("sites", i, key, a),
                        f"{s.code} has no session with AS{a} (not in its transit or peers)",
                    )

    seen_pfx: dict[str, int] = {}
    for i, p in enumerate(t.prefixes):
        try:
            net = ipaddress.ip_network(p.cidr, strict=True)
        except ValueError as e:
            yield ("prefixes", i, "cidr"), f"not a valid prefix: {e}"
            continue
        if str(net) in seen_pfx:
            yield (
                ("prefixes", i, "cidr"),
                f"prefix {net} is already listed at prefixes[{seen_pfx[str(net)]}]",
            )
        seen_pfx.setdefault(str(net), i)
        if p.sites != "all":
            for j, c in enumerate(p.sites):
                if c not in codes:
                    yield ("prefixes", i, "sites", j), f"unknown site {c}"

    yield from _check_operators(t, codes)
    yield from _check_internet(t, len(names))
    yield from _check_lab(t, codes)
    yield from _check_backbone(t, codes)


def _check_backbone(t: TopologyIn, codes: dict[str, int]) -> Iterator[tuple[Loc, str]]:
    seen: dict[tuple[str, ...], int] = {}
    for i, link in enumerate(t.backbone.links):
        for j, c in enumerate(link.sites):
            if c not in codes:
                yield ("backbone", "links", i, "sites", j), f"unknown site {c}"
        if link.sites[0] == link.sites[1]:
            yield ("backbone", "links", i, "sites"), "a backbone link joins two different sites"
        key = tuple(sorted(link.sites))
        if key in seen:
            yield (
                ("backbone", "links", i, "sites"),
                f"{key[0]} and {key[1]} are already linked by backbone.links[{seen[key]}]",
            )
        seen.setdefault(key, i)
    for c in t.backbone.transit_detour:
        if c not in codes:
            yield ("backbone", "transit_detour", c), f"unknown site {c}"
    names: dict[str, int] = {}
    for i, o in enumerate(t.origins):
        if o.country not in COUNTRIES:
            yield ("origins", i, "country"), f"unknown ISO country code {o.country!r}"
        if o.name in names:
            yield (
                ("origins", i, "name"),
                f"origin {o.name} is already defined at origins[{names[o.name]}]",
            )
        names.setdefault(o.name, i)


def _check_operators(t: TopologyIn, codes: dict[str, int]) -> Iterator[tuple[Loc, str]]:
    owner: dict[str, str] = {}
    asns: dict[int, str] = {t.asn: "anyedge's own ASN"}
    for i, o in enumerate(t.operators):
        if o.asn in asns:
            yield ("operators", i, "asn"), f"AS{o.asn} is already {asns[o.asn]}"
        asns.setdefault(o.asn, f"operator {o.name}'s")
        for j, c in enumerate(o.sites):
            if c not in codes:
                yield ("operators", i, "sites", j), f"unknown site {c}"
            elif c in owner:
                yield ("operators", i, "sites", j), f"site {c} already belongs to {owner[c]}"
            owner.setdefault(c, o.name)


def _check_internet(t: TopologyIn, n_plans: int) -> Iterator[tuple[Loc, str]]:
    net = t.internet
    assert isinstance(net.metros, list)  # tables were expanded
    assert isinstance(net.eyeballs, list)
    declared: dict[int, int] = {}
    for i, a in enumerate(net.ases):
        if a.asn in declared:
            yield (
                ("internet", "ases", i, "asn"),
                f"AS{a.asn} is already listed at ases[{declared[a.asn]}]",
            )
        declared.setdefault(a.asn, i)
        if a.country and a.country not in COUNTRIES:
            yield ("internet", "ases", i, "country"), f"unknown ISO country code {a.country!r}"
    if t.asn in declared:
        yield ("asn",), f"anyedge's ASN {t.asn} is also listed as an Internet AS"
    metros: dict[int, int] = {}
    for i, m in enumerate(net.metros):
        if m.id in metros:
            yield (
                ("internet", "metros", i, "id"),
                f"metro {m.id} is already listed at metros[{metros[m.id]}]",
            )
        metros.setdefault(m.id, i)
        if m.country not in COUNTRIES:
            yield ("internet", "metros", i, "country"), f"unknown ISO country code {m.country!r}"
    for i, a in enumerate(net.ases):
        for j, m_id in enumerate(a.metros):
            if m_id not in metros:
                yield ("internet", "ases", i, "metros", j), f"unknown metro {m_id}"
    if net.as_rel is not None and net.relations:
        yield ("internet",), "give relations either in an as_rel file or inline, not both"
    pairs: dict[tuple[int, int], int] = {}
    for i, e in enumerate(net.eyeballs):
        if e.metro not in metros:
            yield ("internet", "eyeballs", i, "metro"), f"unknown metro {e.metro}"
        if (e.asn, e.metro) in pairs:
            yield (
                ("internet", "eyeballs", i),
                (
                    f"AS{e.asn} in metro {e.metro} is already listed at "
                    f"eyeballs[{pairs[(e.asn, e.metro)]}]"
                ),
            )
        pairs.setdefault((e.asn, e.metro), i)
        if e.mix is not None:
            if len(e.mix) != n_plans:
                yield (
                    ("internet", "eyeballs", i, "mix"),
                    (f"mix needs one share per plan ({n_plans}), got {len(e.mix)}"),
                )
            elif abs(sum(e.mix) - 1.0) > 1e-6:
                yield (
                    ("internet", "eyeballs", i, "mix"),
                    f"mix must sum to 1, sums to {sum(e.mix):g}",
                )


def _check_lab(t: TopologyIn, codes: dict[str, int]) -> Iterator[tuple[Loc, str]]:
    nodes = t.lab.nodes
    yield from check_lab_ipv6(t)
    for name, n in nodes.items():
        if n.kind == "site":
            if n.site is None:
                yield ("lab", "nodes", name, "site"), "a site node must name its site (site: CODE)"
            elif n.site not in codes:
                yield ("lab", "nodes", name, "site"), f"unknown site {n.site}"
        elif n.site is not None:
            yield ("lab", "nodes", name, "site"), f"only site nodes name a site, this is a {n.kind}"
        if n.kind == "router" and n.asn is None:
            yield ("lab", "nodes", name), "a router needs an asn"
        if n.kind == "client" and n.speaker is not None:
            yield ("lab", "nodes", name, "speaker"), "a client runs no BGP speaker"
        if n.servers is not None and n.kind != "site":
            yield (
                ("lab", "nodes", name, "servers"),
                f"only site nodes have servers, this is a {n.kind}",
            )
    used: dict[str, int] = {}
    resolved = labends.resolve([k.endpoints for k in t.lab.links])
    yield from labends.clashes([k.endpoints for k in t.lab.links])
    for i, link in enumerate(t.lab.links):
        ends = resolved[i]
        for j, (node, _) in enumerate(ends):
            if node not in nodes:
                yield ("lab", "links", i, "endpoints", j), f"unknown node {node!r}"
            ep = ":".join(ends[j])
            if ep in used:
                yield (
                    ("lab", "links", i, "endpoints", j),
                    f"{ep} is already used by links[{used[ep]}]",
                )
            used.setdefault(ep, i)
        if ends[0][0] == ends[1][0]:
            yield ("lab", "links", i), "a link joins two different nodes"
        if link.relation != "none":
            for j, (node, _) in enumerate(ends):
                if node in nodes and nodes[node].kind == "client":
                    yield (
                        ("lab", "links", i, "endpoints", j),
                        (
                            f"a {link.relation} link needs BGP speakers at both ends; "
                            f"{node} is a client"
                        ),
                    )
        yield from _check_lab_link(t, i)
    yield from _check_lab_nodes(t)
    yield from _check_lab_graph(t)
    yield from labmetro.check(t)


def _check_lab_link(t: TopologyIn, i: int) -> Iterator[tuple[Loc, str]]:
    """What each kind of lab link may be: who sells transit to whom, who peers."""
    nodes, link = t.lab.nodes, t.lab.links[i]
    names = [e.split(":")[0] for e in link.endpoints]
    if any(n not in nodes for n in names) or names[0] == names[1]:
        return
    kinds = sorted(nodes[n].kind for n in names)
    rel, loc = link.relation, ("lab", "links", i)
    if kinds == ["router", "site"]:
        if rel == "none":
            yield (*loc, "relation"), "a site and a router need a BGP relation"
        elif rel == "provider-customer" and nodes[names[0]].kind == "site":
            yield loc, "a site buys transit: the router is the provider (first endpoint)"
    elif kinds == ["router", "router"] and rel == "none" and not _internal(t, names):
        yield (*loc, "relation"), "routers exchange routes: give the link a relation"
    elif kinds == ["site", "site"] and rel != "none":
        yield (*loc, "relation"), "a link between two sites is a backbone link: relation none"
    elif "client" in kinds and kinds != ["client", "router"]:
        yield loc, "a client connects to a router"
    for key in ("prepend", "med", "communities"):
        if getattr(link, key) and kinds != ["router", "site"]:
            yield (
                (*loc, key),
                f"{key} is what a site sends on its session with a router; "
                f"this link joins a {nodes[names[0]].kind} and a {nodes[names[1]].kind}",
            )
    router = next((nodes[n] for n in names if nodes[n].kind == "router"), None)
    action = set(link.communities) & {"no-peers", "no-providers"}
    if action and router is not None and router.asn is not None and router.asn > 65535:
        yield (
            (*loc, "communities"),
            f"{', '.join(sorted(action))}: an action community is ASN:990 or ASN:991, "
            f"and AS{router.asn} does not fit in 16 bits",
        )


def _internal(t: TopologyIn, names: list[str]) -> bool:
    """A link between two routers of one AS in a metro lab (its IGP's and iBGP's)."""
    a, b = (t.lab.nodes[n] for n in names)
    return labmetro.is_metro_lab(t) and a.asn is not None and a.asn == b.asn


def _check_lab_nodes(t: TopologyIn) -> Iterator[tuple[Loc, str]]:
    nodes = t.lab.nodes
    degree: dict[str, int] = dict.fromkeys(nodes, 0)
    for link in t.lab.links:
        for e in link.endpoints:
            end = e.split(":")[0]
            if end in degree:
                degree[end] += 1
    seen_site: dict[str, str] = {}
    seen_asn: dict[int, str] = {}
    for name, n in nodes.items():
        if n.kind == "client" and degree[name] != 1:
            links = degree[name]
            yield ("lab", "nodes", name), f"a client has exactly one link, this one has {links}"
        if n.kind == "site" and n.site is not None:
            if n.site in seen_site:
                other = seen_site[n.site]
                yield ("lab", "nodes", name, "site"), f"site {n.site} is already {other}"
            seen_site.setdefault(n.site, name)
        if n.kind == "router" and n.asn is not None:
            if n.asn == t.asn:
                yield ("lab", "nodes", name, "asn"), f"{n.asn} is anyedge's own ASN"
            elif n.asn in seen_asn and not labmetro.is_metro_lab(t):
                yield (
                    ("lab", "nodes", name, "asn"),
                    (
                        f"AS{n.asn} is already {seen_asn[n.asn]} (several routers of one AS "
                        "each stand in a metro: give the routers a metro from lab.metros)"
                    ),
                )
            seen_asn.setdefault(n.asn, name)
        if n.kind == "router" and n.speaker not in (None, "frr"):
            yield ("lab", "nodes", name, "speaker"), "routers run FRR"


def _check_lab_graph(t: TopologyIn) -> Iterator[tuple[Loc, str]]:
    """One link per pair of nodes, no provider loop among routers, every site reachable
    over BGP, and routers joined to each other (answers to clients go router to router)."""
    nodes = t.lab.nodes
    pairs: dict[frozenset[str], int] = {}
    provider_of: dict[str, list[str]] = {}
    bgp: set[str] = set()
    router_links: dict[str, set[str]] = {n: set() for n, v in nodes.items() if v.kind == "router"}
    for i, link in enumerate(t.lab.links):
        a, b = (e.split(":")[0] for e in link.endpoints)
        if a not in nodes or b not in nodes or a == b:
            continue
        pair = frozenset((a, b))
        if pair in pairs:
            yield ("lab", "links", i), f"{a} and {b} are already linked by links[{pairs[pair]}]"
        pairs.setdefault(pair, i)
        if link.relation != "none":
            bgp.update((a, b))
        if a in router_links and b in router_links:
            router_links[a].add(b)
            router_links[b].add(a)
            if link.relation == "provider-customer":
                provider_of.setdefault(b, []).append(a)
    for name, n in nodes.items():
        if n.kind == "site" and name not in bgp:
            yield ("lab", "nodes", name), "a site needs a BGP link to a router"
    loop = _find_cycle(provider_of)
    if loop:
        yield ("lab", "links"), "provider loop: " + " -> ".join(loop)
    if router_links:
        first = next(iter(router_links))
        seen, todo = {first}, [first]
        while todo:
            for q in router_links[todo.pop()] - seen:
                seen.add(q)
                todo.append(q)
        apart = sorted(set(router_links) - seen)
        if apart:
            yield (
                ("lab", "nodes", apart[0]),
                f"routers must be joined by router links; {', '.join(apart)} cannot reach {first}",
            )


def _find_cycle(up: dict[str, list[str]]) -> list[str]:
    """One cycle in the customer -> provider graph ``up``, or nothing."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(n: str) -> list[str]:
        state[n] = 1
        path.append(n)
        for m in up.get(n, []):
            if state.get(m) == 1:
                return [*path[path.index(m) :], m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        state[n] = 2
        path.pop()
        return []

    for n in sorted(up):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return []


# ---------------------------------------------------------------------------- building


def _build(t: TopologyIn, src: _Source) -> World:
    plans = Plans(
        names=tuple(p.name for p in t.plans),
        share=np.array([p.share for p in t.plans]),
        cpu_ms=np.array([p.cpu_ms_per_request for p in t.plans]),
    )
    code_index = {s.code: i for i, s in enumerate(t.sites)}
    sites = Sites(
        code=tuple(s.code for s in t.sites),
        city=tuple(s.city for s in t.sites),
        country=tuple(s.country for s in t.sites),
        lat=np.array([s.lat for s in t.sites]),
        lon=np.array([s.lon for s in t.sites]),
        kind=np.array([SiteKind.MCP if s.kind == "mcp" else SiteKind.SINGLE for s in t.sites]),
        thresholds=np.array(
            [[s.thresholds.maximum, s.thresholds.target, s.thresholds.acceptable] for s in t.sites]
        ).reshape(-1, 3),
    )
    secs = [(i, sec) for i, s in enumerate(t.sites) for sec in s.sections]
    sections = Sections(
        name=tuple(sec.name for _, sec in secs),
        site=np.array([i for i, _ in secs]),
        servers=np.array([sec.servers for _, sec in secs]),
        cpu_per_server=np.array([sec.cpu_per_server for _, sec in secs]),
    )
    announced = np.zeros((len(t.prefixes), len(t.sites)), dtype=np.bool_)
    for i, p in enumerate(t.prefixes):
        if p.sites == "all":
            announced[i, :] = True
        else:
            announced[i, [code_index[c] for c in p.sites]] = True
    prefixes = Prefixes(
        cidr=tuple(str(ipaddress.ip_network(p.cidr)) for p in t.prefixes), announced=announced
    )
    rows = [(i, a, SessionKind.TRANSIT) for i, s in enumerate(t.sites) for a in s.transit]
    rows += [(i, a, SessionKind.PEER) for i, s in enumerate(t.sites) for a in s.peers]
    sessions = Sessions.from_rows(
        rows,
        [t.sites[i].prepend.get(a, 0) for i, a, _ in rows],
        [t.sites[i].med.get(a, 0) for i, a, _ in rows],
        [block_of(t.sites[i].communities.get(a, [])) for i, a, _ in rows],
    )
    operators = tuple(
        Operator(o.name, o.asn, tuple(code_index[c] for c in o.sites)) for o in t.operators
    )
    network = Network(
        asn=t.asn,
        sites=sites,
        sections=sections,
        prefixes=prefixes,
        sessions=sessions,
        plans=plans,
        operators=operators,
    )
    internet = _build_internet(t, src, plans)
    world = World(
        network=network,
        internet=internet,
        latency=LatencyModel(inflation=t.latency.inflation, access_ms=t.latency.access_ms),
        lab=_build_lab(t),
        backbone=_build_backbone(t, sites),
        access_ms=_access(t, internet),
    )
    return world


def _access(t: TopologyIn, internet: Internet) -> np.ndarray:
    """Each eyeball row's own last mile, if the file gives any (the rest take the
    latency model's); none: an empty array."""
    net = t.internet
    assert isinstance(net.eyeballs, list)
    if all(e.access_ms is None for e in net.eyeballs):
        return np.zeros(0)
    given = {(e.asn, e.metro): e.access_ms for e in net.eyeballs}
    e, m = internet.eyeballs, internet.metros
    out = [
        given.get((int(internet.asn[a]), int(m.id[mm])))
        for a, mm in zip(e.as_.tolist(), e.metro.tolist(), strict=True)
    ]
    return np.array([t.latency.access_ms if v is None else v for v in out])


def _build_backbone(t: TopologyIn, sites: Sites) -> Backbone:
    b, code_index = t.backbone, {c: i for i, c in enumerate(sites.code)}
    rows = []
    for link in b.links:
        x, y = code_index[link.sites[0]], code_index[link.sites[1]]
        km = link.km
        if km is None:
            gc = great_circle_km(sites.lat[x], sites.lon[x], sites.lat[y], sites.lon[y])
            km = max(float(gc) * b.route_factor, 1.0)
        rows.append((x, y, km, link.capacity_gbps))
    detour = np.ones(len(sites))
    for c, f in b.transit_detour.items():
        detour[code_index[c]] = f
    origins = Origins(
        name=tuple(o.name for o in t.origins),
        city=tuple(o.city for o in t.origins),
        country=tuple(o.country for o in t.origins),
        lat=np.array([o.lat for o in t.origins], dtype=np.float64),
        lon=np.array([o.lon for o in t.origins], dtype=np.float64),
    )
    return Backbone(links=BackboneLinks.from_rows(rows), transit_detour=detour, origins=origins)


def _build_internet(t: TopologyIn, src: _Source, plans: Plans) -> Internet:
    net = t.internet
    file, text = src.file, src.text
    assert isinstance(net.metros, list)
    assert isinstance(net.eyeballs, list)
    rel_file: Path | str = file
    if net.as_rel is not None:
        rel_file = file.parent / net.as_rel
        if not rel_file.is_file():
            raise InputError.one(
                file,
                "internet.as_rel",
                f"as-rel file {rel_file} does not exist",
                line_of(text, ("internet", "as_rel")),
            )
        rel = read_as_rel(rel_file)
    else:
        first = line_of(text, ("internet", "relations", 0)) or 1
        try:
            rel = parse_as_rel(net.relations, file=file, first_line=0, name="relations[{}]".format)
        except InputError as e:  # inline lines: report as relations[i]
            raise InputError(
                file,
                [
                    Problem(
                        f"internet.relations[{p.line}]",
                        p.message,
                        line_of(text, ("internet", "relations", p.line or 0)) or first,
                    )
                    for p in e.problems
                ],
            ) from None

    declared = {a.asn: a for a in net.ases}
    asn = np.unique(np.concatenate([rel.asns, np.array(sorted(declared), dtype=np.int64)]))
    problems: list[Problem] = []
    if t.asn in set(rel.asns.tolist()):
        problems.append(
            Problem(
                "asn",
                f"anyedge's ASN {t.asn} also appears in the as-rel relations",
                line_of(text, ("asn",)),
            )
        )
    known = set(asn.tolist())
    for i, o in enumerate(t.operators):
        if o.asn in known:
            problems.append(
                src.problem(
                    ("operators", i, "asn"),
                    f"operator {o.name}'s ASN {o.asn} is also an Internet AS",
                )
            )
    for i, s in enumerate(t.sites):
        for key in ("transit", "peers"):
            for j, a in enumerate(getattr(s, key)):
                if a not in known:
                    problems.append(
                        src.problem(
                            ("sites", i, key, j),
                            f"AS{a} is not in the Internet (neither in its relations nor in "
                            "internet.ases)",
                        )
                    )
    for i, eye in enumerate(net.eyeballs):
        if eye.asn not in known:
            problems.append(
                src.problem(
                    ("internet", "eyeballs", i, "asn"), f"AS{eye.asn} is not in the Internet"
                )
            )
    if problems:
        raise InputError(file, problems)

    metros = Metros(
        id=np.array([m.id for m in net.metros], dtype=np.int64),
        name=tuple(m.name for m in net.metros),
        country=tuple(m.country for m in net.metros),
        lat=np.array([m.lat for m in net.metros]),
        lon=np.array([m.lon for m in net.metros]),
        population=np.array([m.population for m in net.metros], dtype=np.int64),
    )
    row = {int(a): i for i, a in enumerate(asn)}
    mrow = {int(m): i for i, m in enumerate(metros.id)}
    e_as = np.array([row[e.asn] for e in net.eyeballs], dtype=np.int64)
    e_metro = np.array([mrow[e.metro] for e in net.eyeballs], dtype=np.int64)
    mix = np.array(
        [e.mix if e.mix is not None else plans.share for e in net.eyeballs], dtype=np.float64
    ).reshape(-1, len(plans))
    eyeballs = Eyeballs.from_rows(
        e_as, e_metro, np.array([e.rps for e in net.eyeballs], dtype=np.float64), mix
    )
    pres = [(row[a.asn], mrow[m]) for a in net.ases for m in a.metros]
    presence = np.unique(
        np.concatenate(
            [np.array(pres, dtype=np.int64).reshape(-1, 2), np.stack([e_as, e_metro], axis=1)]
        ),
        axis=0,
    )
    internet = Internet(
        asn=asn,
        kind=np.array(
            [
                _KIND_BY_NAME[declared[a].kind] if a in declared else ASKind.OTHER
                for a in asn.tolist()
            ]
        ),
        name=tuple(declared[a].name if a in declared else "" for a in asn.tolist()),
        country=tuple(declared[a].country if a in declared else "" for a in asn.tolist()),
        p2c=_rows(asn, rel.p2c),
        p2p=np.sort(_rows(asn, rel.p2p), axis=1),
        metros=metros,
        presence=presence,
        eyeballs=eyeballs,
    )
    try:
        internet.provider_levels()
    except ProviderLoopError as e:
        a, b = e.cycle[0], e.cycle[1]
        ln = rel.line_of(a, b)
        where = Path(rel_file) if net.as_rel is not None else file
        if net.as_rel is None and ln is not None:
            raise InputError.one(
                where,
                f"internet.relations[{ln}]",
                str(e),
                line_of(text, ("internet", "relations", ln)),
            ) from None
        raise InputError.one(where, "", str(e), ln) from None
    return internet


def _rows(asn: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    rows = np.searchsorted(asn, pairs).reshape(-1, 2)
    order = np.lexsort((rows[:, 1], rows[:, 0]))
    return np.asarray(rows[order])


def _build_lab(t: TopologyIn) -> Lab:
    nodes = tuple(
        LabNode(
            name=name,
            kind=NodeKind(n.kind),
            asn=n.asn,
            site=n.site,
            speaker=Speaker(n.speaker) if n.speaker else None,
            servers=n.servers or 0,
            metro=n.metro,
        )
        for name, n in t.lab.nodes.items()
    )
    links = []
    ends = labends.resolve([k.endpoints for k in t.lab.links])
    for link, (a, b) in zip(t.lab.links, ends, strict=True):
        links.append(
            LabLink(
                a=a,
                b=b,
                relation=Relation(link.relation),
                delay_ms=link.delay_ms,
                jitter_ms=link.jitter_ms,
                loss=link.loss,
                prepend=link.prepend,
                med=link.med,
                communities=tuple(link.communities),
                ipv6=tuple(link.ipv6),
            )
        )
    metros = tuple(LabMetro(k, m.lat, m.lon) for k, m in t.lab.metros.items())
    return Lab(nodes=nodes, links=tuple(links), metros=metros)


# ---------------------------------------------------------------------------- saving


def _link_dict(k: LabLink) -> dict[str, Any]:
    d: dict[str, Any] = {"endpoints": [":".join(k.a), ":".join(k.b)], "relation": str(k.relation)}
    for name in ("delay_ms", "jitter_ms", "loss", "prepend", "med"):
        if getattr(k, name):
            d[name] = getattr(k, name)
    if k.communities:
        d["communities"] = list(k.communities)
    if k.ipv6:
        d["ipv6"] = list(k.ipv6)
    return d


def _backbone_dict(world: World) -> dict[str, Any]:
    bb, code = world.backbone, world.network.sites.code
    out: dict[str, Any] = {}
    links = bb.links
    detour = bb.transit_detour
    if len(links) or len(detour):
        out["backbone"] = {
            "links": [
                {"sites": [code[a], code[b]], "km": float(k), "capacity_gbps": float(g)}
                for a, b, k, g in zip(
                    links.a.tolist(), links.b, links.km, links.capacity_gbps, strict=True
                )
            ],
            "transit_detour": {code[i]: float(f) for i, f in enumerate(detour) if f != 1.0},
        }
    o = bb.origins
    if len(o):
        out["origins"] = [
            {
                "name": o.name[i],
                "city": o.city[i],
                "country": o.country[i],
                "lat": float(o.lat[i]),
                "lon": float(o.lon[i]),
            }
            for i in range(len(o))
        ]
    return out


def world_to_dict(world: World, inline: bool = False) -> dict[str, Any]:
    """The topology YAML's content for ``world``.

    With ``inline`` the relations, metros and eyeballs are written in the YAML itself;
    otherwise it names ``internet.as-rel``, ``metros.csv`` and ``eyeballs.csv``, which
    :func:`save_world` writes beside it.
    """
    net, inet = world.network, world.internet
    plans = net.plans
    out: dict[str, Any] = {
        "anyedge": 1,
        "asn": int(net.asn),
        "latency": {"inflation": world.latency.inflation, "access_ms": world.latency.access_ms},
        "plans": [
            {"name": n, "share": float(s), "cpu_ms_per_request": float(c)}
            for n, s, c in zip(plans.names, plans.share, plans.cpu_ms, strict=True)
        ],
    }
    sites = []
    ses = net.sessions
    for i, code in enumerate(net.sites.code):
        th = net.sites.thresholds[i]
        mine = ses.site == i
        sites.append(
            {
                "code": code,
                "city": net.sites.city[i],
                "country": net.sites.country[i],
                "lat": float(net.sites.lat[i]),
                "lon": float(net.sites.lon[i]),
                "kind": "mcp" if net.sites.kind[i] == SiteKind.MCP else "single",
                "thresholds": {
                    "maximum": float(th[0]),
                    "target": float(th[1]),
                    "acceptable": float(th[2]),
                },
                "sections": [
                    {
                        "name": net.sections.name[j],
                        "servers": int(net.sections.servers[j]),
                        "cpu_per_server": float(net.sections.cpu_per_server[j]),
                    }
                    for j in net.site_sections(i)
                ],
                "transit": [int(a) for a in ses.asn[mine & (ses.kind == SessionKind.TRANSIT)]],
                "peers": [int(a) for a in ses.asn[mine & (ses.kind == SessionKind.PEER)]],
            }
        )
        for key, col in (("prepend", ses.prepend), ("med", ses.med)):
            pre = mine & (col > 0)
            if pre.any():
                sites[-1][key] = {
                    int(a): int(k) for a, k in zip(ses.asn[pre], col[pre], strict=True)
                }
        pre = mine & (ses.block > 0)
        if pre.any():
            sites[-1]["communities"] = {
                int(a): communities_of(int(b))
                for a, b in zip(ses.asn[pre], ses.block[pre], strict=True)
            }
    out["sites"] = sites
    out["prefixes"] = [
        {
            "cidr": c,
            "sites": "all"
            if bool(row.all()) and row.size
            else [net.sites.code[j] for j in np.flatnonzero(row)],
        }
        for c, row in zip(net.prefixes.cidr, net.prefixes.announced, strict=True)
    ]
    if net.operators:
        out["operators"] = [
            {"name": o.name, "asn": o.asn, "sites": [net.sites.code[s] for s in o.sites]}
            for o in net.operators
        ]
    metros, eyeballs = _tables(world)
    m = inet.metros
    present: dict[int, list[int]] = {}
    for a, mi in inet.presence.tolist():
        present.setdefault(a, []).append(int(m.id[mi]))
    ases = []
    for i, a in enumerate(inet.asn.tolist()):
        row: dict[str, Any] = {"asn": a}
        if inet.name[i]:
            row["name"] = inet.name[i]
        if inet.kind[i] != ASKind.OTHER:
            row["kind"] = AS_KIND_NAMES[ASKind(int(inet.kind[i]))]
        if inet.country[i]:
            row["country"] = inet.country[i]
        if i in present:
            row["metros"] = present[i]
        ases.append(row)
    if inline:
        out["internet"] = {
            "relations": format_as_rel(inet).splitlines()[2:],
            "ases": ases,
            "metros": metros,
            "eyeballs": eyeballs,
        }
    else:
        out["internet"] = {
            "as_rel": AS_REL_FILE,
            "metros": METROS_FILE,
            "eyeballs": EYEBALLS_FILE,
            "ases": ases,
        }
    out.update(_backbone_dict(world))
    lab = world.lab
    if lab.nodes or lab.links:
        nodes: dict[str, Any] = {}
        for n in lab.nodes:
            d: dict[str, Any] = {"kind": str(n.kind)}
            if n.asn is not None:
                d["asn"] = n.asn
            if n.site is not None:
                d["site"] = n.site
            if n.speaker is not None:
                d["speaker"] = str(n.speaker)
            if n.servers:
                d["servers"] = n.servers
            if n.metro is not None:
                d["metro"] = n.metro
            nodes[n.name] = d
        out["lab"] = {
            "nodes": nodes,
            "links": [_link_dict(k) for k in lab.links],
        }
        if lab.metros:
            out["lab"]["metros"] = {m.name: {"lat": m.lat, "lon": m.lon} for m in lab.metros}
    return out


def _tables(world: World) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    inet, plans = world.internet, world.network.plans
    m = inet.metros
    metros = [
        {
            "id": int(m.id[i]),
            "name": m.name[i],
            "country": m.country[i],
            "lat": float(m.lat[i]),
            "lon": float(m.lon[i]),
            "population": int(m.population[i]),
        }
        for i in range(len(m))
    ]
    e = inet.eyeballs
    eyeballs = []
    for i in range(len(e)):
        row: dict[str, Any] = {
            "asn": int(inet.asn[e.as_[i]]),
            "metro": int(m.id[e.metro[i]]),
            "rps": float(e.rps[i]),
        }
        if not np.array_equal(e.mix[i], plans.share):
            row["mix"] = [float(x) for x in e.mix[i]]
        if world.access_ms.size:
            row["access_ms"] = float(world.access_ms[i])
        eyeballs.append(row)
    return metros, eyeballs


def dump_yaml(data: dict[str, Any]) -> str:
    dumper: type = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return str(
        yaml.dump(
            data,
            Dumper=dumper,
            sort_keys=False,
            default_flow_style=None,
            allow_unicode=True,
            width=120,
        )
    )


def save_world(world: World, directory: str | Path) -> Path:
    """Write the topology and its tables into ``directory``; return the YAML's path.

    The files are ``topology.yaml``, ``internet.as-rel``, ``metros.csv`` and
    ``eyeballs.csv``.  All are written in full before any is moved into place, so a
    failure while writing leaves the old files untouched; each move replaces one file
    whole (a failure between two moves leaves some files new and some old, never a
    half-written file).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    metros, eyeballs = _tables(world)
    texts = (
        "# anyedge topology: see docs/topology.md\n" + dump_yaml(world_to_dict(world)),
        format_as_rel(world.internet),
        format_table("metros", metros),
        format_table("eyeballs", eyeballs),
    )
    files = {directory / name: text for name, text in zip(SAVED_FILES, texts, strict=True)}
    write_all(files)
    return directory / TOPOLOGY_FILE
