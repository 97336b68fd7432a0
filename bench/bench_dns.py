"""Benchmark: anycast DNS — a site's query rate, health-checked failover, Verfploeter maps.

1. **Queries per second a site sustains.**  The three-site lab (``tests/data/lab3.yaml``)
   with Knot (``knotd``, one UDP worker) at every site; ``dnsperf`` (Debian's) sends the
   zone's A, NS, SOA and TXT queries for ``--seconds`` from client c1, across the lab's
   routers to the anycast address (answered by CHC), and — the baseline of the same run —
   from inside CHC's own namespace to the same server.  Ratio: across the lab / local.
   With no dnsperf installed, dnspython sends queries one at a time instead (far slower:
   it measures the client).
2. **Failover.**  The same lab with the health checker at every site (a query every
   0.2 s, rise 2, fall 3, dead-man 2 s): knotd at CHC is killed; the time until its agent
   withdraws the prefix (its log) and until c1 is answered by another site (dnspython
   from c1, every 50 ms).  Then the checker at AKL is killed: the time until the dead-man
   timer withdraws.  Baseline: the configured times (fall × interval, dead-man).
3. **World-wide Verfploeter map.**  The default 300-site world as the F-root pair (60
   sites of anyedge, 50 of a CDN): the map of every user network's reply site after the
   CDN joins, against the baseline of a plain catchment of the one-operator world; and
   the lab's map (echo requests from the anycast address to every client) against one
   round of ``anyedge lab probe`` from the clients.

Needs root (the lab).  Every process started is ended by its pid; the lab is taken down.
Run: ``python bench/bench_dns.py`` (``--seconds`` for the load runs, ``--json FILE``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from anyedge.adapters import netns  # noqa: E402
from anyedge.health import Settings  # noqa: E402
from anyedge.lab import dns as ldns  # noqa: E402
from anyedge.lab import healthd, verfploeter  # noqa: E402
from anyedge.lab.measure import probe_all  # noqa: E402
from anyedge.model.worldgen import build_world  # noqa: E402
from anyedge.routing import Mode, Router  # noqa: E402
from anyedge.sim import probes as P  # noqa: E402
from lab_support import DATA, running_lab  # noqa: E402

QUERIES = ["lab.anyedge.test. A", "lab.anyedge.test. NS", "lab.anyedge.test. SOA"]
QUERIES += ["www.lab.anyedge.test. A", "lab.anyedge.test. TXT", "ns.lab.anyedge.test. A"]


def dnsperf(ns: str, address: str, seconds: float, qfile: Path) -> dict[str, float]:
    out = netns.run(
        ns,
        ["dnsperf", "-s", address, "-d", str(qfile), "-l", str(seconds), "-c", "4", "-q", "200"],
        timeout=seconds + 30,
    )
    got: dict[str, float] = {}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Queries per second:"):
            got["qps"] = float(line.split(":")[1])
        elif line.startswith("Queries lost:"):
            got["lost"] = float(line.split(":")[1].split()[0])
        elif line.startswith("Average Latency"):
            got["latency_ms"] = float(line.split(":")[1].split()[0]) * 1000
    return got


def dnspython_rate(ns: str, address: str, seconds: float) -> dict[str, float]:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ldns.query(ns, address, timeout=1.0)
        n += 1
    return {"qps": n / (time.perf_counter() - t0), "lost": 0.0}


def wait_for(pred: Any, timeout: float = 30.0, step: float = 0.02) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError("timed out")
        time.sleep(step)
    return time.monotonic() - t0


def bench_lab(seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with running_lab(DATA / "lab3.yaml") as lab:
        plan, d = lab.plan, lab.directory
        knot = ldns.start(plan, d)
        c1, chc = plan.node("c1").namespace, plan.site_node("CHC").namespace
        addr = plan.service_address
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("\n".join(QUERIES) + "\n")
            qfile = Path(f.name)
        os.chmod(qfile, 0o644)
        try:
            if shutil.which("dnsperf"):
                tool = "dnsperf"
                remote = dnsperf(c1, addr, seconds, qfile)
                local = dnsperf(chc, addr, seconds, qfile)
            else:
                tool = "dnspython"
                remote = dnspython_rate(c1, addr, seconds)
                local = dnspython_rate(chc, addr, seconds)
        finally:
            qfile.unlink()
        out["qps"] = {
            "tool": tool,
            "across_lab": remote,
            "local": local,
            "ratio": round(remote["qps"] / local["qps"], 3),
        }
        # verfploeter in the lab against a round of client probes
        t0 = time.perf_counter()
        vf = verfploeter.catchment_map(plan)
        t_vf = time.perf_counter() - t0
        t0 = time.perf_counter()
        probe_all(plan, flows=1)
        t_probe = time.perf_counter() - t0
        out["lab_verfploeter"] = {
            "map": vf,
            "seconds": round(t_vf, 4),
            "probe_round_s": round(t_probe, 4),
            "ratio": round(t_vf / t_probe, 3),
        }
        # failover with real daemons
        s = healthd.CheckSettings(Settings(rise=2, fall=3, deadman_s=2.0), 0.2, 0.2)
        pids = healthd.start(plan, d, s)
        node = plan.site_node("CHC")
        n0 = len(healthd.events(d, node))
        netns.stop([knot["CHC"]])
        t0 = time.monotonic()
        t_withdraw = wait_for(lambda: any(not e["announce"] for e in healthd.events(d, node)[n0:]))

        def moved() -> bool:
            try:
                return ldns.query(c1, addr, timeout=0.05).site not in (None, "CHC")
            except Exception:
                return False

        t_moved = t_withdraw + wait_for(moved, step=0.05)
        akl = plan.site_node("AKL")
        n1 = len(healthd.events(d, akl))
        netns.stop([pids["AKL"].checker])
        t_dead = wait_for(
            lambda: any(e["reason"] == "checker_silent" for e in healthd.events(d, akl)[n1:])
        )
        del t0
        out["failover"] = {
            "configured_fall_s": s.health.fall * s.interval,
            "withdrawn_after_s": round(t_withdraw, 3),
            "client_moved_after_s": round(t_moved, 3),
            "configured_deadman_s": s.health.deadman_s,
            "deadman_withdrawn_after_s": round(t_dead, 3),
        }
    return out


def bench_world(runs: int) -> dict[str, Any]:
    w = build_world()
    pair = P.f_root_pair(w)

    def best(fn: Any) -> float:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    t_vf = best(lambda: P.verfploeter(pair.world, pair.after))
    t_base = best(lambda: Router(w, Mode.METRO).catchment())
    probes = P.atlas_probes(pair.world, 2000, seed=1)
    ba = P.compare(pair.world, probes, pair.before, pair.after).to_dict()
    return {
        "networks": len(w.internet.eyeballs),
        "verfploeter_s": round(t_vf, 4),
        "catchment_s": round(t_base, 4),
        "ratio": round(t_vf / t_base, 3),
        "f_root_pair": {k: ba[k] for k in ("median_ratio", "drop_ms", "largest_drop_at")}
        | {
            "before_median_ms": ba["before"]["median_ms"],  # type: ignore[index]
            "after_median_ms": ba["after"]["median_ms"],  # type: ignore[index]
            "before_p90_ms": ba["before"]["p90_ms"],  # type: ignore[index]
            "after_p90_ms": ba["after"]["p90_ms"],  # type: ignore[index]
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    out = {"lab": bench_lab(a.seconds), "world": bench_world(a.runs)}
    text = json.dumps(out, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text)
    q = out["lab"]["qps"]
    print(
        f"\nqueries/s at one site ({q['tool']}): {q['across_lab']['qps']:.0f} across the lab, "
        f"{q['local']['qps']:.0f} local; ratio {q['ratio']}"
    )
    wv = out["world"]
    print(
        f"world-wide Verfploeter map ({wv['networks']} networks): {wv['verfploeter_s']} s, "
        f"a plain catchment {wv['catchment_s']} s; ratio {wv['ratio']}"
    )


if __name__ == "__main__":
    main()
