"""The twin's results as Prometheus metrics: ``anyedge simulate --metrics FILE``.

A simulated day ends with a :class:`~.result.Comparison`; this writes its numbers in
Prometheus's text format (prometheus-client's ``write_to_textfile``: written whole to a
temporary file, then renamed), for node_exporter's textfile collector or anything that
reads the format, so that the twin's verdicts sit beside the controller's own metrics
and can be compared with the same queries.  Every series has a ``mode`` label (``none``,
``withdraw``, ``manager``: the three controllers; Prometheus's base units):

==================================================  ====================================
``anyedge_twin_requests_total{mode}``               requests users sent
``anyedge_twin_failed_requests_total{mode}``        served by no site
``anyedge_twin_moved_requests_total{mode}``         served away from where BGP takes them
``anyedge_twin_forwarded_requests_total{mode}``     of those, forwarded (Plurimog)
``anyedge_twin_added_latency_seconds{mode, stat}``  ``mean`` and ``p95``, demand-weighted
``anyedge_twin_decisions_total{mode}``              the Traffic Manager's decisions
``anyedge_twin_actions_total{mode, kind}``          journaled actions, by kind
``anyedge_twin_routing_changes_total{mode}``        announcements withdrawn or restored
``anyedge_twin_site_utilisation{mode, site, stat}`` ``peak`` and ``mean`` over the day
``anyedge_twin_site_slo_breach_seconds{mode,site}`` time the site broke its SLO
``anyedge_twin_site_forwarded_rps{mode, site}``     mean requests/s the site forwarded
``anyedge_twin_server_utilisation{mode, section,``  ``peak`` over the day, per server of a
``server, stat}``                                   section that server events touch
``anyedge_twin_server_connections_broken{mode,``    share of a section's connections each
``section, change}``                                kind of table change broke, summed
``anyedge_twin_simulated_seconds``                  the day's length
==================================================  ====================================

Data flow: the comparison's run totals and per-sample series (one sample a minute) →
one collector → the file.  Nothing here runs the twin.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .result import Comparison


class TwinMetrics(Collector):
    """The metrics of one comparison (see the module doc)."""

    def __init__(self, comparison: Comparison) -> None:
        self.c = comparison

    def collect(self) -> Iterator[Metric]:
        c = self.c
        runs = c.runs
        counters: list[tuple[str, str, str]] = [
            ("requests", "Requests users sent", "requests"),
            ("failed_requests", "Requests served by no site", "failed"),
            ("moved_requests", "Requests served away from BGP's site", "moved"),
            ("forwarded_requests", "Moved requests forwarded by Plurimog", "forwarded"),
            ("decisions", "Decisions of the Traffic Manager", "decisions"),
            ("routing_changes", "Announcements withdrawn or restored", "routing_changes"),
        ]
        for name, doc, field in counters:
            fam = CounterMetricFamily(f"anyedge_twin_{name}", doc, labels=["mode"])
            for m, r in runs.items():
                fam.add_metric([m], float(getattr(r.totals, field)))
            yield fam
        fam = CounterMetricFamily(
            "anyedge_twin_actions", "Actions the controller took, by kind", labels=["mode", "kind"]
        )
        for m, r in runs.items():
            for kind, n in sorted(Counter(a["kind"] for a in r.actions).items()):
                fam.add_metric([m, kind], n)
        yield fam
        lat = GaugeMetricFamily(
            "anyedge_twin_added_latency_seconds",
            "Latency added over each user's start, demand-weighted",
            labels=["mode", "stat"],
        )
        for m, r in runs.items():
            lat.add_metric([m, "mean"], r.totals.added_latency_mean_ms / 1000)
            lat.add_metric([m, "p95"], r.totals.added_latency_p95_ms / 1000)
        yield lat
        util = GaugeMetricFamily(
            "anyedge_twin_site_utilisation",
            "CPU utilisation over the day",
            labels=["mode", "site", "stat"],
        )
        slo = GaugeMetricFamily(
            "anyedge_twin_site_slo_breach_seconds",
            "Time the site broke its SLO",
            labels=["mode", "site"],
        )
        fwd = GaugeMetricFamily(
            "anyedge_twin_site_forwarded_rps",
            "Mean requests/s the site forwarded",
            labels=["mode", "site"],
        )
        for m, r in runs.items():
            s = r.series
            u = np.asarray(s.utilisation, dtype=np.float64)
            out = np.nan_to_num(np.asarray(s.forwarded_out_rps, dtype=np.float64))
            for i, site in enumerate(c.sites):
                col = u[:, i] if u.ndim == 2 and u.shape[0] else np.zeros(1)
                util.add_metric([m, site, "peak"], float(np.nanmax(col)))
                util.add_metric([m, site, "mean"], float(np.nanmean(col)))
                slo.add_metric([m, site], 60 * float(r.totals.slo_breach_minutes.get(site, 0.0)))
                mean_out = float(out[:, i].mean()) if out.ndim == 2 and out.shape[0] else 0.0
                fwd.add_metric([m, site], mean_out)
        yield util
        yield slo
        yield fwd
        yield from self._servers()
        yield GaugeMetricFamily(
            "anyedge_twin_simulated_seconds", "The simulated day's length", value=c.duration_s
        )

    def _servers(self) -> Iterator[Metric]:
        """Servers inside sections that server events touched (:mod:`.servers`)."""
        if not any(r.servers for r in self.c.runs.values()):
            return
        util = GaugeMetricFamily(
            "anyedge_twin_server_utilisation",
            "CPU utilisation of a server over the day",
            labels=["mode", "section", "server", "stat"],
        )
        broken = GaugeMetricFamily(
            "anyedge_twin_server_connections_broken",
            "Share of a section's connections broken by its table's changes, by kind",
            labels=["mode", "section", "change"],
        )
        for m, r in self.c.runs.items():
            for sec, d in r.servers.get("sections", {}).items():
                for i, peak in enumerate(d["peak_utilisation"]):
                    util.add_metric([m, sec, str(i), "peak"], float(peak))
            total: Counter[tuple[str, str]] = Counter()
            for ch in r.servers.get("changes", []):
                total[(ch["section"], ch["what"])] += ch["broken"]
            for (sec, what), share in sorted(total.items()):
                broken.add_metric([m, sec, what], share)
        yield util
        yield broken


def write(comparison: Comparison, path: str | Path) -> None:
    """The comparison's metrics into ``path`` (Prometheus text format, written whole)."""
    reg = CollectorRegistry()
    reg.register(TwinMetrics(comparison))
    write_to_textfile(str(path), reg)
