"""The lab as a production rehearsal: Prometheus scrapes the lab's services directly,
``anyedge control run`` decides on what Prometheus says and forwards through the sites'
nftables.

Two pieces join the lab to the service (:mod:`anyedge.api`) the way a real network
would be joined:

* every site service (and every server's, in a site with servers) serves its own
  counters over HTTP (:mod:`.service_metrics`): ``anyedge_lab_requests_total`` and
  ``anyedge_lab_cpu_ms_total`` (the CPU its requests cost, at the topology's cost per
  plan) by ``site``, ``server`` and ``plan``, and ``anyedge_site_capacity_ms`` (the CPU
  ms/s it stands for).  It listens on a free port of 127.0.0.1 in the lab host's
  namespace and writes that address into ``<lab>/prometheus/<node>-<service>.json``;
  :func:`prometheus_config` is a ``prometheus.yml`` whose ``file_sd_configs`` watch
  those files, so Prometheus finds every service, and a server added or removed later,
  by itself.  A site whose service does not answer has no fresh series, and the
  controller leaves it out with that reason.  ``anyedge lab prometheus-config`` writes
  it.
* :func:`controller_config` — the ``controller.yaml`` of this lab: the sites and their
  thresholds, the backbone latencies (no backbone link: never forwarded to), the PromQL
  that turns the counters into CPU ms/s per site and plan (:data:`CPU_QUERY`), and the
  ``nft`` actuator with every site's namespace, anycast addresses, Internet-facing
  interfaces and backbone links; with ``--withdraw``, the ``network`` actuator (the
  sites' own speakers too) and :func:`lab_atlas`, so it withdraws prefixes as well.
  ``anyedge lab controller-config`` writes it.

The loop is then the service's own, unchanged: ``anyedge control run -c`` on that file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..model.world import World
from .control import lab_config
from .forward import backbone_links, ingress
from .plan import LabPlan, NodePlan

# CPU ms/s per site and plan: the rate of the CPU the services' requests cost
CPU_QUERY = "sum by (site, plan) (rate(anyedge_lab_cpu_ms_total[4s]))"
CAPACITY_QUERY = "sum by (site) (anyedge_site_capacity_ms)"
SCRAPED_QUERY = "max by (site) (timestamp(anyedge_lab_cpu_ms_total))"


def _location(world: World, code: str) -> tuple[float, float]:
    s = world.network.sites
    i = s.index(code)
    return float(s.lat[i]), float(s.lon[i])


def prometheus_config(directory: Path, scrape_interval: float = 1.0) -> str:
    """A ``prometheus.yml`` that scrapes every service of the lab in ``directory``."""
    files = str(directory / "prometheus" / "*.json")  # .build.targets_file
    s = f"{scrape_interval:g}s"
    return (
        f"global: {{scrape_interval: {s}, evaluation_interval: {s}}}\n"
        "scrape_configs:\n"
        f"  - {{job_name: anyedge-lab, file_sd_configs: [{{files: ['{files}']}}]}}\n"
    )


def controller_config(
    world: World,
    plan: LabPlan,
    prometheus: str,
    *,
    http_port: int = 9180,
    journal: str = "journal.sqlite",
    interval: float = 1.0,
    directory: Path | None = None,
    atlas: str | None = None,
) -> dict[str, Any]:
    """The ``controller.yaml`` (as a mapping) that runs the service against this lab.

    With ``directory`` (the running lab's) and ``atlas`` (the atlas file's name, which
    :func:`lab_atlas` writes, relative to the configuration) the actuator is ``network``:
    forwards by nftables and withdrawals through each site's own speaker, where the
    atlas says its users have somewhere to go."""
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
    actuator: dict[str, Any] = {
        "kind": "nft",
        "ports": dict(zip(plan.plans, plan.ports, strict=True)),
        "nft": nft,
    }
    if directory is not None and atlas is not None:
        actuator["kind"] = "network"
        actuator["speakers"] = {str(n.site): speaker_entry(plan, n, directory) for n in sites}
    doc: dict[str, Any] = {
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
                "prefixes": list(sites[i].prefixes),
            }
            for i, c in enumerate(codes)
        ],
        "latency_ms": latency,
        "actuator": actuator,
        "http": {"address": "127.0.0.1", "port": http_port},
    }
    if atlas is not None:
        doc["atlas"] = atlas
    return doc


def speaker_entry(plan: LabPlan, node: NodePlan, directory: Path) -> dict[str, Any]:
    """The site's speaker as controller.yaml names it: the one the lab runs."""
    from ..model.lab import Speaker
    from .build import speaker_config

    c = speaker_config(plan, node, directory.resolve())
    return {
        "driver": str((node.speaker or Speaker.FRR).value),
        "namespace": c.namespace,
        "workdir": str(c.workdir),
        "asn": c.asn,
        "router_id": c.router_id,
        "neighbors": [
            {
                "address": n.address,
                "asn": n.asn,
                "local_address": n.local_address,
                "interface": n.interface,
                "bfd": n.bfd,
            }
            for n in c.neighbors
        ],
    }


def lab_atlas(world: World) -> str:
    """The failover atlas of the lab's model (its first prefix, single sites, the
    tie-break its routers use), as the JSON ``controller.yaml``'s ``atlas`` names."""
    from ..predict import build_atlas
    from ..routing import Mode
    from .plan import lab_world

    model = lab_world(world)
    k = max(1, len(model.network.sites) - 1)
    return build_atlas(model, 0, k=k, jobs=1, mode=Mode.AS, sections=False).to_json()
