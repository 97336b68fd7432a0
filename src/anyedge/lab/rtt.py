"""Round trips to the anycast DNS address in the lab, and the twin's prediction of them.

The twin and the lab describe one network when the lab's links carry delays (their
``delay_ms``, each way; :func:`anyedge.lab.generate.add_delays` derives them from the
latency model).  The prediction for a client is then the routing engine's path priced by
those delays:

* **there** — the routing engine (``Mode.AS`` on :func:`~anyedge.lab.plan.lab_world`,
  what :func:`~anyedge.lab.compare.predicted` uses) gives the client's AS path to the
  site it reaches: the client's router, the routers of the path's ASNs, the site; each
  hop is the lab's link between those two nodes;
* **back** — the site's reply goes to its first upstream (its default route), and from
  there follows BGP to the client's network, which the client's router originates
  (:attr:`~anyedge.lab.plan.NodePlan.networks`): the routing engine propagates that
  router's AS as an origin over the same graph and reads the upstream's AS path;
* the round trip is the sum of the one-way delays of the links there and back, and
  ``crossings`` counts the shaped links crossed (each adds the delay line's overhead).

:func:`measure` times real DNS queries (dnspython, UDP, from each client's namespace to
the service address, one thread per client) and reads the answering site from the
NSID; :func:`summarize` gives the median and the 90th percentile.
"""

from __future__ import annotations

import itertools
import socket
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dns.edns
import dns.message
import dns.query
import numpy as np

from ..adapters import netns
from ..model.lab import NodeKind
from ..model.world import World
from ..routing import Mode, Router, Seeds
from ..routing.graph import RoutingGraph
from ..routing.propagate import as_path, propagate
from .build import LabError
from .compare import announcement
from .dns import ZONE, _nsid_bytes
from .plan import LabPlan, NodePlan, Port, client_names, lab_world


@dataclass(frozen=True)
class Prediction:
    client: str
    site: str | None
    there: tuple[str, ...]  # node names, client first, site last
    back: tuple[str, ...]  # node names, site first, client last
    rtt_ms: float  # the configured delays there and back
    crossings: int  # shaped links crossed, both ways together


def _port(plan: LabPlan, a: str, b: str) -> Port:
    """``a``'s port on the link to ``b`` (the least delayed, if several)."""
    ports = [p for p in plan.node(a).ports if p.peer == b]
    if not ports:
        raise LabError(f"no link between {a} and {b} in the lab")
    return min(ports, key=lambda p: p.shape.delay_ms)


def _delay(plan: LabPlan, path: Sequence[str]) -> tuple[float, int]:
    ms, shaped = 0.0, 0
    for a, b in itertools.pairwise(path):
        shape = _port(plan, a, b).shape
        ms += shape.delay_ms
        shaped += int(shape.shaped)
    return ms, shaped


def _owner(plan: LabPlan, address: str) -> str:
    for n in plan.nodes:
        if any(p.ip == address for p in n.ports):
            return n.name
    raise LabError(f"no node holds {address}")


def return_path(plan: LabPlan, client: str, site: NodePlan, graph: RoutingGraph) -> tuple[str, ...]:
    """The nodes a reply from ``site`` crosses to ``client``: the site's first upstream,
    then the BGP path from there to the client's router (``graph``: the lab world's
    routing graph)."""
    if site.default_via is None:
        raise LabError(f"{site.name} has no default route")
    home = plan.node(client).ports[0].peer
    first = _owner(plan, site.default_via)
    routers = {n.asn: n.name for n in plan.of_kind(NodeKind.ROUTER) if n.asn is not None}
    asn_of = {name: asn for asn, name in routers.items()}
    row = {int(a): i for i, a in enumerate(graph.asn.tolist())}
    state = propagate(graph, Seeds.origins([row[asn_of[home]]]))
    ases = as_path(state, graph.asn, row[asn_of[first]], {})
    if not ases:
        raise LabError(f"{first} has no route towards {client}'s network")
    return (site.name, *(routers[a] for a in ases), client)


def predict(world: World, plan: LabPlan, withdrawn: Sequence[str] = ()) -> dict[str, Prediction]:
    """client -> its predicted site and round trip, with the sites ``withdrawn`` not
    announcing the service prefix (the others as the topology says)."""
    model = lab_world(world)
    codes = model.network.sites.code
    ann = announcement(model, plan.prefixes[0], None)
    if withdrawn:
        ann = ann.withdraw(*[codes.index(s) for s in withdrawn])
    router = Router(model, Mode.AS)
    c = router.catchment(ann)
    clients = client_names(world)
    metro_id = model.internet.metros.id
    router_by_asn = {n.asn: n.name for n in plan.of_kind(NodeKind.ROUTER)}
    out: dict[str, Prediction] = {}
    for e, row in enumerate(c.eyeball_site.tolist()):
        client = clients[int(metro_id[model.internet.eyeballs.metro[e]]) - 1]
        if row < 0:
            out[client] = Prediction(client, None, (), (), float("nan"), 0)
            continue
        site = plan.site_node(codes[row])
        ases = [a for a in c.eyeball_path(e) if a in router_by_asn]
        there = (client, *(router_by_asn[a] for a in ases), site.name)
        back = return_path(plan, client, site, router.graph)
        ms1, k1 = _delay(plan, there)
        ms2, k2 = _delay(plan, back)
        out[client] = Prediction(client, codes[row], there, back, ms1 + ms2, k1 + k2)
    return out


@dataclass(frozen=True)
class Timed:
    client: str
    site: str | None  # from the answers' NSID (None: no answer)
    rtt_ms: tuple[float, ...]  # each answered query's round trip

    @property
    def median_ms(self) -> float:
        return statistics.median(self.rtt_ms) if self.rtt_ms else float("nan")

    @property
    def min_ms(self) -> float:
        """The fastest query: the path's time with the least of the machine's noise."""
        return min(self.rtt_ms) if self.rtt_ms else float("nan")


def time_queries(namespace: str, address: str, count: int, timeout: float) -> Timed:
    q = dns.message.make_query(
        ZONE, "A", use_edns=0, options=[dns.edns.GenericOption(dns.edns.OptionType.NSID, b"")]
    )
    wire = q.to_wire()
    with netns.entered(namespace):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    times: list[float] = []
    site = None
    with sock:
        sock.connect((address, 53))
        sock.settimeout(timeout)
        for _ in range(count):
            t0 = time.perf_counter()
            sock.send(wire)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            times.append((time.perf_counter() - t0) * 1e3)
            r = dns.message.from_wire(data)
            nsid = next((o for o in r.options if o.otype == dns.edns.NSID), None)
            if nsid is not None:
                site = _nsid_bytes(nsid).decode(errors="replace")
    return Timed(namespace, site, tuple(times))


def measure(
    plan: LabPlan, clients: Sequence[str] | None = None, count: int = 5, timeout: float = 2.0
) -> dict[str, Timed]:
    """client -> ``count`` timed DNS queries to the service address (one after another
    per client; the clients at once, one thread each)."""
    names = list(clients or [n.name for n in plan.of_kind(NodeKind.CLIENT)])
    out: dict[str, Timed] = {}

    def one(name: str) -> None:
        t = time_queries(plan.node(name).namespace, plan.service_address, count, timeout)
        out[name] = Timed(name, t.site, t.rtt_ms)

    threads = [threading.Thread(target=one, args=(c,)) for c in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    missing = [c for c in names if c not in out]
    if missing:
        raise LabError(f"no measurement from {', '.join(missing)}")
    return {c: out[c] for c in names}


@dataclass(frozen=True)
class Summary:
    clients: int
    median_ms: float
    p90_ms: float

    def to_dict(self) -> dict[str, object]:
        return {
            "clients": self.clients,
            "median_ms": round(self.median_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
        }


def summarize(values: Mapping[str, float]) -> Summary:
    """Median and 90th percentile (linear interpolation, as numpy's) over clients."""
    v = np.array([x for x in values.values() if x == x], dtype=np.float64)
    if not v.size:
        raise ValueError("no round trip to summarize")
    return Summary(int(v.size), float(np.median(v)), float(np.percentile(v, 90)))
