"""What ``anyedge lab rtt`` prints: the lab's round trips to the anycast DNS address beside
the twin's prediction of them, client by client.

Data flow: :func:`withdrawn_sites` reads from the lab's state which sites announce the
service prefix now; :func:`anyedge.lab.rtt.predict` gives, for that announcement, every
client's site and the delays of its path there and back (the twin).  The lab's side:
each client, one at a time, times ``count`` DNS queries to the service address
(:func:`anyedge.lab.rtt.time_queries`; the first, which warms ARP and the server, is
dropped) and its round trip is the fastest, the path's time with the least of the
machine's scheduling in it; the NSID of the answers names the site.  A Verfploeter map
(:func:`anyedge.lab.verfploeter.catchment_map`) says where each client's ping reply
lands.

The delay lines cost a little on top of their delays, and so does asking: both are
measured in the same run (:func:`overhead`) and added to the prediction — the *crossing
overhead* from ICMP echoes between every client and its own router (one shaped link,
crossed twice), once per shaped link a path crosses; the *local round trip* from a DNS
query asked inside a site's namespace, crossing no link.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from ..adapters import netns
from ..model.lab import NodeKind
from ..model.world import World
from . import rtt, verfploeter
from .build import LabError, LabState
from .plan import LabPlan


@dataclass(frozen=True)
class Overhead:
    crossing_ms: float  # per shaped link crossed, beyond its delay
    local_ms: float  # a DNS query inside a site's namespace

    def of(self, p: rtt.Prediction) -> float:
        return p.crossings * self.crossing_ms + self.local_ms


NO_OVERHEAD = Overhead(0.0, 0.0)


def ping_ms(namespace: str, address: str, count: int, timeout: float = 2.0) -> list[float]:
    """``count`` ICMP echo round trips from ``namespace`` to ``address``, one at a time
    (after two that warm ARP)."""
    with netns.entered(namespace):
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(timeout)
    ident = int.from_bytes(os.urandom(2), "big")
    out = []
    with s:
        for seq in range(count + 2):
            t0 = time.perf_counter()
            s.sendto(verfploeter.echo_request(ident, seq), (address, 0))
            got = None
            while got != (ident, seq):
                try:
                    got = verfploeter.parse_reply(s.recv(2048))
                except TimeoutError:
                    break
            if got == (ident, seq) and seq >= 2:
                out.append((time.perf_counter() - t0) * 1e3)
    return out


def overhead(plan: LabPlan, count: int = 10) -> Overhead:
    """The delay lines' cost per crossing and the cost of asking, measured now."""
    clients = plan.of_kind(NodeKind.CLIENT)
    pings, access = [], []
    for c in clients:
        got = ping_ms(c.namespace, c.ports[0].peer_address, count)
        if got:
            pings.append(min(got))
            access.append(c.ports[0].shape.delay_ms)
    if not pings:
        raise LabError("no client's router answered a ping")
    crossing = max(0.0, (statistics.median(pings) - 2 * statistics.median(access)) / 2)
    site = plan.sites[0]
    local = rtt.time_queries(site.namespace, site.anycast[0], count + 1, 2.0).rtt_ms[1:]
    if not local:
        raise LabError(f"{site.site}: its DNS server did not answer inside the site")
    return Overhead(crossing, min(local))


def shaped(plan: LabPlan) -> int:
    """How many of the lab's link ends carry a delay."""
    return sum(p.shape.shaped for n in plan.nodes for p in n.ports)


def withdrawn_sites(plan: LabPlan, state: LabState) -> tuple[str, ...]:
    """The sites not announcing the service prefix now, as the lab's state records."""
    prefix = plan.prefixes[0]
    return tuple(
        str(n.site)
        for n in plan.sites
        if not any(r[0] == prefix for r in state.routes.get(n.name, []))
    )


def answering(plan: LabPlan) -> list[str]:
    """The sites whose DNS server answers on the anycast address, asked inside the site."""
    import dns.exception

    from . import dns as ldns

    out = []
    for n in plan.sites:
        try:
            if ldns.query(n.namespace, n.anycast[0], timeout=0.5).site == n.site:
                out.append(str(n.site))
        except (OSError, dns.exception.DNSException):
            pass
    return out


@dataclass(frozen=True)
class Row:
    client: str
    predicted: str | None  # the twin's site
    site: str | None  # the site that answered the DNS queries (NSID)
    verfploeter: str | None  # the site at which the client's ping reply landed
    crossings: int
    twin_ms: float  # the delays of the predicted path, there and back
    expected_ms: float  # twin_ms plus the measured overhead
    lab_ms: float  # the fastest query
    lab_median_ms: float  # the median query
    queries: int  # queries answered

    @property
    def agree(self) -> bool:
        return self.predicted is not None and self.predicted == self.site


@dataclass(frozen=True)
class Report:
    withdrawn: tuple[str, ...]
    overhead: Overhead
    count: int
    rows: tuple[Row, ...]

    def summary(self, field: str) -> rtt.Summary:
        return rtt.summarize({r.client: getattr(r, field) for r in self.rows})

    @property
    def agree(self) -> int:
        return sum(r.agree for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        lab, twin, expected = (self.summary(f) for f in ("lab_ms", "twin_ms", "expected_ms"))
        return {
            "withdrawn": list(self.withdrawn),
            "queries_per_client": self.count,
            "overhead": {k: round(v, 3) for k, v in asdict(self.overhead).items()},
            "clients": len(self.rows),
            "agree": self.agree,
            "verfploeter_is_dns": sum(r.verfploeter == r.site for r in self.rows),
            "lab": lab.to_dict(),
            "twin": twin.to_dict(),
            "twin_plus_overhead": expected.to_dict(),
            "median_diff_ms": round(lab.median_ms - expected.median_ms, 3),
            "p90_diff_ms": round(lab.p90_ms - expected.p90_ms, 3),
            "rows": [
                {
                    **{k: _round(v) for k, v in asdict(r).items()},
                    "agree": r.agree,
                }
                for r in self.rows
            ],
        }


def _round(v: object) -> object:
    if isinstance(v, float):
        return None if math.isnan(v) else round(v, 3)
    return v


def report(
    world: World, plan: LabPlan, state: LabState, count: int = 10, correct: bool = True
) -> Report:
    """Measure every client's round trip now and put the twin's prediction beside it
    (``correct``: with the delay lines' and the query's measured overhead added)."""
    withdrawn = withdrawn_sites(plan, state)
    want = rtt.predict(world, plan, withdrawn)
    extra = overhead(plan, count) if correct else NO_OVERHEAD
    caught = verfploeter.catchment_map(plan)
    rows = []
    for c in plan.of_kind(NodeKind.CLIENT):
        t = rtt.time_queries(c.namespace, plan.service_address, count + 1, 2.0)
        times = t.rtt_ms[1:]  # the first warms ARP and the server
        timed = rtt.Timed(c.name, t.site, times)
        p = want[c.name]
        rows.append(
            Row(
                c.name,
                p.site,
                t.site,
                caught.get(c.name),
                p.crossings,
                p.rtt_ms,
                p.rtt_ms + extra.of(p),
                timed.min_ms,
                timed.median_ms,
                len(times),
            )
        )
    return Report(withdrawn, extra, count, tuple(rows))
