"""The lab as a production rehearsal: Prometheus scrapes the lab, ``anyedge control run``
decides on what Prometheus says and forwards through the sites' nftables.

Two pieces join the lab to the service (:mod:`anyedge.api`) the way a real network
would be joined:

* :class:`LabExporter` — a prometheus-client collector that, at each scrape, reads every
  site service's counters (its Unix socket in the lab directory) and exports them for
  Prometheus: ``anyedge_lab_requests_total{site, plan}`` (requests answered, cumulative),
  ``anyedge_lab_plan_cpu_ms{plan}`` (the topology's CPU ms per request of each plan) and
  ``anyedge_site_capacity_ms{site}`` (CPU ms/s of the site's servers).  A site whose
  service does not answer has no series, and the controller leaves it out with that
  reason.  ``anyedge lab exporter`` serves it over HTTP.
* :func:`controller_config` — the ``controller.yaml`` of this lab: the sites and their
  thresholds, the backbone latencies (no backbone link: never forwarded to), the PromQL
  that turns the counters into CPU ms/s per site and plan (:data:`CPU_QUERY`), and the
  ``nft`` actuator with every site's namespace, anycast addresses, Internet-facing
  interfaces and backbone links.  ``anyedge lab controller-config`` writes it.

The loop is then the service's own, unchanged: ``anyedge control run -c`` on that file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..model.world import World
from .build import node_dir
from .control import capacity_of, lab_config
from .forward import backbone_links, ingress
from .plan import LabPlan
from .service import read_stats

# CPU ms/s per site and plan: the rate of answered requests times each plan's cost
CPU_QUERY = (
    "sum by (site, plan) (rate(anyedge_lab_requests_total[4s]) "
    "* on (plan) group_left anyedge_lab_plan_cpu_ms)"
)
CAPACITY_QUERY = "sum by (site) (anyedge_site_capacity_ms)"
SCRAPED_QUERY = "max by (site) (timestamp(anyedge_lab_requests_total))"


def _location(world: World, code: str) -> tuple[float, float]:
    s = world.network.sites
    i = s.index(code)
    return float(s.lat[i]), float(s.lon[i])


class LabExporter(Collector):
    """The lab's sites' counters, read at each scrape."""

    def __init__(self, world: World, plan: LabPlan, directory: Path) -> None:
        self.plan, self.directory = plan, directory
        self.capacity = capacity_of(world, plan).tolist()
        self.cost = [float(c) for c in world.network.plans.cpu_ms]

    def collect(self) -> Iterator[Metric]:
        plans = self.plan.plans
        ports = [str(p) for p in self.plan.ports]
        req = CounterMetricFamily(
            "anyedge_lab_requests", "Requests a lab site answered, by plan", labels=["site", "plan"]
        )
        cap = GaugeMetricFamily(
            "anyedge_site_capacity_ms", "CPU ms/s of the site's servers", labels=["site"]
        )
        for i, n in enumerate(self.plan.sites):
            try:
                st = read_stats(node_dir(self.directory, n.name) / "stats.sock")
            except OSError:
                continue  # no series: the controller leaves the site out, saying why
            counts = {str(k): int(v) for k, v in st["requests"].items()}
            for name, port in zip(plans, ports, strict=True):
                req.add_metric([str(n.site), name], counts.get(port, 0))
            cap.add_metric([str(n.site)], self.capacity[i])
        yield req
        yield cap
        cost = GaugeMetricFamily(
            "anyedge_lab_plan_cpu_ms", "CPU ms per request of each plan", labels=["plan"]
        )
        for name, c in zip(plans, self.cost, strict=True):
            cost.add_metric([name], c)
        yield cost


def controller_config(
    world: World,
    plan: LabPlan,
    prometheus: str,
    *,
    http_port: int = 9180,
    journal: str = "journal.sqlite",
    interval: float = 1.0,
) -> dict[str, Any]:
    """The ``controller.yaml`` (as a mapping) that runs the service against this lab."""
    cfg = lab_config(world, plan)
    sites = plan.sites
    codes = [str(n.site) for n in sites]
    latency: dict[str, dict[str, float]] = {}
    for i, a in enumerate(codes):
        for j in range(i + 1, len(codes)):
            ms = float(cfg.latency_ms[i, j])
            if math.isfinite(ms):
                latency.setdefault(a, {})[codes[j]] = round(ms, 3)
    nft = {}
    for n in sites:
        links = [
            {"to": b.to_site, "ifname": b.ifname, "via": b.via, "index": b.index,
             "shared": list(b.shared) if b.shared is not None else None}
            for b in backbone_links(plan, n)
        ]  # fmt: skip
        if links:
            nft[str(n.site)] = {
                "namespace": n.namespace,
                "anycast": list(n.anycast),
                "ingress": ingress(n),
                "links": links,
            }
    return {
        "prometheus": {
            "url": prometheus,
            "queries": {"cpu": CPU_QUERY, "capacity": CAPACITY_QUERY, "scraped": SCRAPED_QUERY},
        },
        "interval": interval,
        "journal": journal,
        "plans": list(plan.plans),
        "protected_plans": [p for p in cfg.protected if p in plan.plans],
        "guardrails": {
            "stale_after": cfg.stale_after,
            "max_move_share": cfg.max_move_share,
            "min_interval": cfg.min_interval,
        },
        "sites": [
            {
                "name": c,
                "maximum": float(cfg.maximum[i]),
                "target": float(cfg.target[i]),
                "acceptable": float(cfg.acceptable[i]),
                "can_forward": bool(cfg.can_forward[i]) if cfg.can_forward is not None else True,
                "location": [round(float(x), 4) for x in _location(world, c)],
            }
            for i, c in enumerate(codes)
        ],
        "latency_ms": latency,
        "actuator": {
            "kind": "nft",
            "ports": dict(zip(plan.plans, plan.ports, strict=True)),
            "nft": nft,
        },
        "http": {"address": "127.0.0.1", "port": http_port},
    }
