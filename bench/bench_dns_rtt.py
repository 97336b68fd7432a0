"""Benchmark: the lab's round trips to the anycast DNS address against the twin's prediction.

A generated two-operator lab whose links carry the latency model's delays (``anyedge lab
generate --seed 7 --routers 12 --sites 4 --clients 20 --operators 2 --delays``), Knot at
every site.  Before (the second operator's sites withdrawn) and after (every site
announcing), :func:`anyedge.lab.rtt_report.report` — what ``anyedge lab rtt`` prints —
has each client, one at a time, time ``--count`` DNS queries to the service address;
its round trip is the fastest of them (the path's time with the least of a busy
machine's scheduling in it; the medians of each client's queries are printed too).
Beside it, the twin's prediction for the same topology (:func:`anyedge.lab.rtt.predict`:
the routing engine's path, priced by the links' delays there and back).

The delay lines cost something on top of their delay, and so does the measurement
(Python, the kernel, knotd).  Both are measured in the same run and added to the
prediction (:func:`anyedge.lab.rtt_report.overhead`): the *crossing overhead* — ICMP
echoes from every client to its own router, across its one access link, less the
configured 2 × delay, halved — once per shaped link crossed; and the *local round trip*
— the same DNS query asked inside a site's namespace, crossing no link.  Printed: median
and 90th percentile, lab and twin, raw and corrected, the difference of the medians and
the ratio lab / corrected twin; ``lab compare``'s agreement beside the command's.

Needs root.  Run: ``python bench/bench_dns_rtt.py [--count 10] [--seed 7] [--routers 12
--sites 4]`` (about two minutes; ``--seed 3 --routers 3 --sites 2`` is the lab of
tests/test_lab_dns_rtt.py, under a minute).  The lab is taken down at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

from anyedge.adapters import netns
from anyedge.lab import build, rtt_report
from anyedge.lab import dns as ldns
from anyedge.lab.compare import compare
from anyedge.lab.generate import generate
from anyedge.lab.measure import Announcer
from anyedge.lab.plan import make_plan, namespace_prefix
from anyedge.model.files.topology import dump_yaml, load_world


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--count", type=int, default=10, help="DNS queries per client and phase")
    ap.add_argument("--routers", type=int, default=12)
    ap.add_argument("--sites", type=int, default=4)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    topo = generate(
        args.seed, routers=args.routers, sites=args.sites, clients=20, operators=2, delays=True
    )
    cdn = tuple(topo["operators"][0]["sites"])
    d = Path(tempfile.mkdtemp(prefix="anyedge-bench-rtt-"))
    os.chmod(d, 0o755)  # FRR's daemons (user frr) enter it
    (d / "topology.yaml").write_text(dump_yaml(topo))
    world = load_world(d / "topology.yaml")
    name = "br" + secrets.token_hex(3)
    plan = make_plan(world, name)
    lab_dir = d / "lab"
    report: dict[str, object] = {
        "seed": args.seed,
        "routers": args.routers,
        "sites": args.sites,
        "count": args.count,
    }
    try:
        build.up(world, plan, lab_dir)
        ldns.start(plan, lab_dir)
        ann = Announcer(plan, lab_dir)
        for phase, withdrawn in (("before", cdn), ("after", ())):
            for code in cdn:
                (ann.withdraw if withdrawn else ann.announce)(code)
            ann.settle()
            rows = compare(world, plan, lab_dir, flows=4, each_site=False)
            r = rtt_report.report(world, plan, build.LabState.load(lab_dir), args.count)
            out = r.to_dict()
            report["crossing_overhead_ms"] = out["overhead"]["crossing_ms"]
            report["local_dns_ms"] = out["overhead"]["local_ms"]
            lab = r.summary("lab_ms")
            fixed = r.summary("expected_ms")
            report[phase] = {
                "catchments_agree": sum(x.agree for x in rows),
                "rtt_agree": r.agree,
                "clients": len(rows),
                "overhead": out["overhead"],
                "lab": out["lab"],
                "lab_query_medians": r.summary("lab_median_ms").to_dict(),
                "twin": out["twin"],
                "twin_plus_overhead": out["twin_plus_overhead"],
                "median_diff_ms": out["median_diff_ms"],
                "median_ratio": round(lab.median_ms / fixed.median_ms, 4),
                "per_client": {
                    x.client: [
                        x.crossings,
                        round(x.twin_ms, 2),
                        round(x.lab_ms, 3),
                        round(x.lab_median_ms, 3),
                    ]
                    for x in r.rows
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
        f"overhead (last phase): {report['crossing_overhead_ms']} ms per shaped link crossed "
        f"(ICMP to the client's router), {report['local_dns_ms']} ms for a DNS query inside "
        "a site"
    )
    for phase in ("before", "after"):
        ph = report[phase]
        assert isinstance(ph, dict)
        print(
            f"{phase:6}  agree {ph['catchments_agree']}/{ph['clients']} "
            f"(lab rtt: {ph['rtt_agree']})  "
            f"lab median {ph['lab']['median_ms']} p90 {ph['lab']['p90_ms']}  "
            f"twin {ph['twin']['median_ms']} / {ph['twin']['p90_ms']}  "
            f"twin + overhead {ph['twin_plus_overhead']['median_ms']} / "
            f"{ph['twin_plus_overhead']['p90_ms']}  "
            f"diff {ph['median_diff_ms']} ms  ratio {ph['median_ratio']}  "
            f"(lab with each client's median query: {ph['lab_query_medians']['median_ms']})"
        )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
