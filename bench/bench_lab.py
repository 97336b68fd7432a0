"""Benchmark: bringing a 20-router lab up and down, and convergence per BGP speaker.

1. **Up and down.** A generated 20-router lab (four sites, six clients): the time of
   ``lab up`` (namespaces, links, FRR on every router, the sites' speakers and
   services, BGP converged) and of ``lab down``.  Its network part (namespaces, veth
   links, addresses, routes) is set beside a naive builder that runs one ``ip`` process
   per change, as a shell script would; the ratio is printed.
2. **Convergence.** In ``tests/data/lab4.yaml`` (one site per speaker kind: FRR, BIRD,
   GoBGP, ExaBGP), each site withdraws the prefix through its speaker while its client
   probes every 10 ms: the time from the withdrawal to the first answer from the next
   site, and the probes lost.  The baseline is the same site failing without a word
   (every packet in and out of it dropped): the routers notice only when the hold timer
   (3 s) expires.

Needs root.  Run: ``python bench/bench_lab.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from anyedge.adapters import netns, nft
from anyedge.lab import build
from anyedge.lab.failover import measure
from anyedge.lab.forward import backbone_links
from anyedge.lab.generate import generate
from anyedge.lab.measure import Announcer, probe_argv
from anyedge.lab.plan import LabPlan, make_plan
from anyedge.model.files import load_world
from anyedge.model.files.topology import dump_yaml, parse_world
from anyedge.model.lab import NodeKind

ROOT = Path(__file__).resolve().parent.parent
TAG = f"{os.getpid() % 0x10000:04x}"  # lab names of this run: others may run the bench too


def lab_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="anyedge-bench-"))
    os.chmod(d, 0o755)
    return d


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def naive_network(plan: LabPlan) -> float:
    """The network part of the lab, one ``ip`` process per change; returns seconds."""
    t0 = time.perf_counter()
    try:
        return _naive(plan, t0)
    finally:
        for n in plan.nodes:
            if netns.exists(n.namespace):
                netns.remove(n.namespace)


def _naive(plan: LabPlan, t0: float) -> float:
    for n in plan.nodes:
        ip("netns", "add", n.namespace)
        ip("-n", n.namespace, "link", "set", "lo", "up")
        for key in ("net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter"):
            value = "1" if key.endswith("forward") else "0"
            ip("netns", "exec", n.namespace, "sysctl", "-q", "-w", f"{key}={value}")
    for n, p, other, q in plan.links():
        peer = ["peer", "name", q.ifname, "netns", other.namespace]
        ip("link", "add", p.ifname, "netns", n.namespace, "type", "veth", *peer)
        ip("-n", other.namespace, "link", "set", q.ifname, "up")
    for n in plan.nodes:
        for p in n.ports:
            ip("-n", n.namespace, "link", "set", p.ifname, "up")
            ip("-n", n.namespace, "addr", "add", p.address, "dev", p.ifname)
        for a in n.anycast:
            ip("-n", n.namespace, "addr", "add", f"{a}/32", "dev", "lo")
        if n.default_via:
            ip("-n", n.namespace, "route", "add", "default", "via", n.default_via)
        if n.kind is NodeKind.SITE:  # Plurimog's backbone routing tables
            for cmd in nft.routing_commands(backbone_links(plan, n)):
                ip("-n", n.namespace, *cmd.split())
    return time.perf_counter() - t0


def batched_network(plan: LabPlan) -> float:
    """The same network part as ``lab up`` builds it; returns seconds."""
    d = lab_dir()
    state = build.LabState(name=plan.name, topology="", namespaces=list(plan.namespaces))
    t0 = time.perf_counter()
    build._network(plan, d, state, lambda _: None)
    took = time.perf_counter() - t0
    for n in plan.nodes:
        netns.remove(n.namespace)
    shutil.rmtree(d, ignore_errors=True)
    return took


def up_and_down() -> None:
    print("== a 20-router lab: 4 sites (FRR, BIRD, GoBGP, ExaBGP), 6 clients ==")
    topo = Path(tempfile.mkdtemp()) / "lab20.yaml"
    topo.write_text(dump_yaml(generate(5, routers=20, sites=4, clients=6)))
    world = parse_world(topo.read_text(), topo)
    plan = make_plan(world, f"bu{TAG}")
    print(f"  {len(plan.nodes)} namespaces, {len(world.lab.links)} links")
    naive = statistics.median(naive_network(make_plan(world, f"bn{TAG}")) for _ in range(3))
    ours = statistics.median(batched_network(make_plan(world, f"bb{TAG}")) for _ in range(3))
    print(
        f"  network part: {ours:.2f} s batched, {naive:.2f} s one ip call per change "
        f"(x{naive / ours:.1f})"
    )
    ups, downs = [], []
    for _ in range(3):
        d = lab_dir()
        t0 = time.perf_counter()
        try:
            build.up(world, plan, d)
            ups.append(time.perf_counter() - t0)
        finally:
            t1 = time.perf_counter()
            build.down(d, plan.name)
            downs.append(time.perf_counter() - t1)
            shutil.rmtree(d, ignore_errors=True)
    print(f"  lab up (BGP converged): median {statistics.median(ups):.2f} s of {len(ups)}")
    print(f"  lab down: median {statistics.median(downs):.2f} s")


BLACKHOLE = """table inet silence {
  chain input { type filter hook input priority -300; policy drop; }
  chain output { type filter hook output priority -300; policy drop; }
}
"""


def silent_failure(plan: LabPlan, d: Path, site: str, interval: float) -> tuple[float | None, int]:
    """The site goes silent (every packet in and out dropped, as when a machine hangs):
    its routers only notice when the hold timer expires.  Time its client's move, then
    bring the site back and let BGP settle."""
    node = plan.site_node(site)
    client = next(
        c.name for c in plan.of_kind(NodeKind.CLIENT) if c.ports[0].peer == node.bgp_ports[0].peer
    )
    watch = subprocess.Popen(
        [*probe_argv(plan, client, "watch"), "--interval", str(interval), "--duration", "8"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    t_fail = time.time()
    nft.apply(node.namespace, BLACKHOLE)
    try:
        out = json.loads(watch.communicate(timeout=60)[0])
    finally:
        nft.apply(node.namespace, "table inet silence {}\ndelete table inet silence\n")
    seconds = None
    for t, who in out["timeline"]:
        if who is not None and who != site and out["start"] + t >= t_fail:
            seconds = out["start"] + t - t_fail
            break
    ann = Announcer(plan, d)
    ann.set(site, ann.routes(site))  # expect its routes back at its routers
    ann.settle(timeout=60)
    return seconds, int(out["lost"])


def convergence(rounds: int = 3) -> None:
    print("== convergence after a withdrawal, per speaker (tests/data/lab4.yaml) ==")
    topo = ROOT / "tests" / "data" / "lab4.yaml"
    world = load_world(topo)
    plan = make_plan(world, f"bc{TAG}")
    d = lab_dir()
    interval = 0.01
    try:
        build.up(world, plan, d)
        for node in plan.sites:
            site = str(node.site)
            w = [measure(plan, d, site, interval=interval)[0] for _ in range(rounds)]
            c = [silent_failure(plan, d, site, interval) for _ in range(rounds)]
            ws = statistics.median(m.seconds for m in w if m.seconds is not None)
            cs = statistics.median(t for t, _ in c if t is not None)
            print(
                f"  {site} ({node.speaker}): withdrawal {ws:.2f} s, "
                f"lost {statistics.median(m.lost for m in w):.0f} probes; "
                f"silent failure {cs:.2f} s, lost {statistics.median(n for _, n in c):.0f} "
                f"(x{cs / ws:.0f} slower without the withdrawal)"
            )
    finally:
        build.down(d, plan.name)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench_lab needs root (network namespaces)")
    up_and_down()
    convergence()
