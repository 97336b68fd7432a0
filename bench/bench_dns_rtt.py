"""Benchmark: the lab's round trips to the anycast DNS address against the twin's prediction.

A generated two-operator lab whose links carry the latency model's delays (``anyedge lab
generate --seed 7 --routers 12 --sites 4 --clients 20 --operators 2 --delays``), Knot at
every site.  Before (the second operator's sites withdrawn) and after (every site
announcing), each client times ``--count`` DNS queries to the service address, one
client at a time; its round trip is the fastest of them (the path's time with the least
of a busy machine's scheduling in it; the medians of each client's queries are printed
too).  Beside it, the twin's prediction for
the same topology (:func:`anyedge.lab.rtt.predict`: the routing engine's path, priced by
the links' delays there and back).

The delay lines cost something on top of their delay, and so does the measurement
(Python, the kernel, knotd).  Both are measured in the same run and added to the
prediction: the *crossing overhead* — ICMP echoes from every client to its own router,
across its one access link, less the configured 2 × delay, halved — once per shaped
link crossed; and the *local round trip* — the same DNS query asked inside a site's
namespace, crossing no link.  Printed: median and 90th percentile, lab and twin, raw and
corrected, the difference of the medians and the ratio lab / corrected twin.

Needs root.  Run: ``python bench/bench_dns_rtt.py [--count 10] [--seed 7]`` (about two
minutes).  The lab is taken down at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from anyedge.adapters import netns
from anyedge.lab import build, rtt, verfploeter
from anyedge.lab import dns as ldns
from anyedge.lab.compare import compare
from anyedge.lab.generate import generate
from anyedge.lab.measure import Announcer
from anyedge.lab.plan import LabPlan, make_plan, namespace_prefix
from anyedge.model.files.topology import dump_yaml, load_world
from anyedge.model.lab import NodeKind


def ping_ms(namespace: str, address: str, count: int) -> list[float]:
    """``count`` ICMP echo round trips from ``namespace`` to ``address``, one at a time."""
    with netns.entered(namespace):
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(2.0)
    ident = int.from_bytes(os.urandom(2), "big")
    out = []
    with s:
        for seq in range(count + 2):
            t0 = time.perf_counter()
            s.sendto(verfploeter.echo_request(ident, seq), (address, 0))
            while True:
                try:
                    got = verfploeter.parse_reply(s.recv(2048))
                except TimeoutError:
                    got = None
                    break
                if got == (ident, seq):
                    break
            if got is not None and seq >= 2:  # the first two warm ARP
                out.append((time.perf_counter() - t0) * 1e3)
    return out


def one_by_one(plan: LabPlan, count: int) -> dict[str, rtt.Timed]:
    clients = [n.name for n in plan.of_kind(NodeKind.CLIENT)]
    out = {}
    for c in clients:
        out.update(rtt.measure(plan, [c], count=count + 1))
    # the first query of each client warms ARP and the server: drop it
    return {c: rtt.Timed(c, t.site, t.rtt_ms[1:]) for c, t in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--count", type=int, default=10, help="DNS queries per client and phase")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    topo = generate(args.seed, routers=12, sites=4, clients=20, operators=2, delays=True)
    cdn = tuple(topo["operators"][0]["sites"])
    d = Path(tempfile.mkdtemp(prefix="anyedge-bench-rtt-"))
    os.chmod(d, 0o755)  # FRR's daemons (user frr) enter it
    (d / "topology.yaml").write_text(dump_yaml(topo))
    world = load_world(d / "topology.yaml")
    name = "br" + secrets.token_hex(3)
    plan = make_plan(world, name)
    lab_dir = d / "lab"
    report: dict[str, object] = {"seed": args.seed, "count": args.count}
    try:
        build.up(world, plan, lab_dir)
        ldns.start(plan, lab_dir)
        clients = plan.of_kind(NodeKind.CLIENT)
        access = [p.shape.delay_ms for c in clients for p in c.ports]
        pings = [min(ping_ms(c.namespace, c.ports[0].peer_address, args.count)) for c in clients]
        crossing = max(0.0, (statistics.median(pings) - 2 * statistics.median(access)) / 2)
        site = plan.sites[0]
        local = min(
            rtt.time_queries(site.namespace, site.anycast[0], args.count + 1, 2.0).rtt_ms[1:]
        )
        report["crossing_overhead_ms"] = round(crossing, 3)
        report["local_dns_ms"] = round(local, 3)
        ann = Announcer(plan, lab_dir)
        for phase, withdrawn in (("before", cdn), ("after", ())):
            for code in cdn:
                (ann.withdraw if withdrawn else ann.announce)(code)
            ann.settle()
            rows = compare(world, plan, lab_dir, flows=4, each_site=False)
            want = rtt.predict(world, plan, withdrawn)
            timed = one_by_one(plan, args.count)
            lab = rtt.summarize({c: t.min_ms for c, t in timed.items()})
            medians = rtt.summarize({c: t.median_ms for c, t in timed.items()})
            raw = rtt.summarize({c: p.rtt_ms for c, p in want.items()})
            fixed = rtt.summarize(
                {c: p.rtt_ms + p.crossings * crossing + local for c, p in want.items()}
            )
            report[phase] = {
                "catchments_agree": sum(r.agree for r in rows),
                "clients": len(rows),
                "lab": lab.to_dict(),
                "lab_query_medians": medians.to_dict(),
                "twin": raw.to_dict(),
                "twin_plus_overhead": fixed.to_dict(),
                "median_diff_ms": round(lab.median_ms - fixed.median_ms, 3),
                "median_ratio": round(lab.median_ms / fixed.median_ms, 4),
                "per_client": {
                    c: [
                        want[c].crossings,
                        round(want[c].rtt_ms, 2),
                        round(t.min_ms, 3),
                        round(t.median_ms, 3),
                    ]
                    for c, t in timed.items()
                },
            }
    finally:
        try:
            if (lab_dir / build.STATE).exists():
                build.down(lab_dir, name)
        finally:
            for ns in netns.listed(namespace_prefix(name)):
                netns.remove(ns)
            shutil.rmtree(d, ignore_errors=True)
    print(
        f"overhead: {report['crossing_overhead_ms']} ms per shaped link crossed (ICMP to "
        f"the client's router), {report['local_dns_ms']} ms for a DNS query inside a site"
    )
    for phase in ("before", "after"):
        r = report[phase]
        assert isinstance(r, dict)
        print(
            f"{phase:6}  agree {r['catchments_agree']}/{r['clients']}  "
            f"lab median {r['lab']['median_ms']} p90 {r['lab']['p90_ms']}  "
            f"twin {r['twin']['median_ms']} / {r['twin']['p90_ms']}  "
            f"twin + overhead {r['twin_plus_overhead']['median_ms']} / "
            f"{r['twin_plus_overhead']['p90_ms']}  "
            f"diff {r['median_diff_ms']} ms  ratio {r['median_ratio']}  "
            f"(lab with each client's median query: {r['lab_query_medians']['median_ms']})"
        )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
