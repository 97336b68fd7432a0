"""The Path MTU lab (:mod:`anyedge.lab.pmtud`) with real packets: clients behind a
1,280-byte link that advertise a larger MSS, three servers behind Linux ECMP (L4 hash)
with the XDP load balancer, 1,400-byte answers over TCP and UDP, IPv4 and IPv6.

Each measurement runs 16 concurrent flows per protocol and family, every flow from a
client address of its own.  Without pmtud a share of them is black-holed (measured and
written to the test's output); with ``anyedge pmtud`` in broadcast mode none is, and
in flow mode none is with exactly one copy per PTB that landed on a server not owning
its flow.  When a server holding flows is drained in the balancers, daemons reading
the balancer's table deliver those flows' PTBs to their new owners (one copy each),
where daemons on a stale site file lose flows.  A flood of spoofed PTBs is held to the
rate limits.  With the route MTU at the value the chooser gives for full coverage, the
clients' router sends no PTB at all.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from anyedge.adapters import netns
from anyedge.balance import Table
from anyedge.edge import build as bpf_build
from anyedge.edge.mtu import read_csv, recommend, set_route_mtu
from anyedge.edge.pmtud import UDP, Ptb, flow_of
from anyedge.lab.pmtud import ANYCAST4, ANYCAST6, PORT, PmtudLab
from test_mtu_chooser import POST

pytestmark = [pytest.mark.lab, pytest.mark.slow]

FLOWS = 16
KINDS = [(p, f) for p in ("tcp", "udp") for f in (4, 6)]
FAST: dict[str, Any] = {"src_rate": 1000.0, "iface_rate": 1000.0}  # one router sends every PTB here


@pytest.fixture(scope="module")
def lab() -> Iterator[PmtudLab]:
    lacking = bpf_build.missing_tools()
    if lacking:
        pytest.skip("cannot build BPF programs, missing: " + ", ".join(lacking))
    with PmtudLab(f"aepm{os.getpid()}", servers=3) as lab:
        yield lab
    assert not lab.servers or not os.path.exists(f"/run/netns/{lab.servers[0]}")


def _measure(lab: PmtudLab) -> dict[str, Any]:
    runs = {f"{p}{f}": lab.probe(p, f, FLOWS) for p, f in KINDS}
    flows = sum(r["flows"] for r in runs.values())
    holed = sum(len(r["blackholed"]) for r in runs.values())
    return {"flows": flows, "blackholed": holed, "share": holed / flows, "runs": runs}


def _originals(c: dict[str, int]) -> int:
    """PTBs a server's daemon read that came from outside the site."""
    return sum(c[k] for k in ("sent", "local", "rate_source", "rate_iface", "no_flow"))


def test_without_pmtud_large_replies_are_blackholed(lab: PmtudLab) -> None:
    before = lab.ptbs_sent()
    m = _measure(lab)
    print(f"\nwithout pmtud: {m['blackholed']}/{m['flows']} flows black-holed ({m['share']:.1%})")
    assert lab.ptbs_sent() > before  # the 1,280-byte link did send PTBs
    assert 0.2 < m["share"] < 1.0  # PTBs land on one server per family, flows on all three
    # flows owned by the server their PTBs land on get through
    assert sum(len(r["ok"]) for r in m["runs"].values()) > 0


def test_broadcast_delivers_every_ptb(lab: PmtudLab) -> None:
    lab.start_pmtud("broadcast", **FAST)
    try:
        m = _measure(lab)
        counts = lab.pmtud_counts()
    finally:
        lab.stop_pmtud()
    print(f"\nbroadcast: {m['blackholed']}/{m['flows']} black-holed; counters {counts}")
    for s in lab.servers:  # the daemons took their nft tables with them
        assert "anyedge_pmtud" not in netns.run(s, ["nft", "list", "tables"])
    assert m["blackholed"] == 0
    sent = [c["sent"] for c in counts]
    assert sum(sent) > 0
    for i, c in enumerate(counts):
        assert c["relayed"] == 0  # broadcast copies are not logged again: no loop
        assert c["copies"] == c["sent"]  # one broadcast frame per PTB...
        # ...that reached every other server
        assert c["arrived"] == _originals(c) + sum(sent) - sent[i]


def test_flow_directed_delivers_one_copy_to_the_owner(lab: PmtudLab) -> None:
    lab.start_pmtud("flow", **FAST)
    try:
        m = _measure(lab)
        counts = lab.pmtud_counts()
    finally:
        lab.stop_pmtud()
    print(f"\nflow: {m['blackholed']}/{m['flows']} black-holed; counters {counts}")
    assert m["blackholed"] == 0
    copies = sum(c["copies"] for c in counts)
    assert copies == sum(c["sent"] for c in counts) > 0  # exactly one copy per PTB sent on
    assert copies == sum(c["relayed"] for c in counts)  # each arrived once, not sent on
    assert sum(c["local"] for c in counts) > 0  # PTBs that landed on their owner: no copy
    for c in counts:
        assert c["arrived"] == _originals(c) + c["relayed"]


SPORT = 41000  # the drain test's flows: fixed source port, so they can be sent again


def _owned_by(lab: PmtudLab, table: Table, server: int, family: int, n: int) -> list[str]:
    """``n`` fresh client addresses whose UDP flow from SPORT ``server`` owns."""
    anycast = int(ipaddress.ip_address(ANYCAST4 if family == 4 else ANYCAST6))
    out: list[str] = []
    while len(out) < n:
        for a in lab.clients(3 * n, family):
            ptb = Ptb(family, 0, 0, int(ipaddress.ip_address(a)), anycast, SPORT, PORT, UDP)
            if table.first[flow_of(ptb) & (table.buckets - 1)] == server and len(out) < n:
                out.append(a)
    return out


def _udp_flows(lab: PmtudLab, flows: dict[int, list[str]]) -> list[str]:
    """The flows (by family) sent again from SPORT; the black-holed ones."""
    holed: list[str] = []
    for family, sources in flows.items():
        holed += lab.probe("udp", family, sources=sources, sport=SPORT)["blackholed"]
    return holed


def _delta(after: list[dict[str, int]], before: list[dict[str, int]]) -> list[dict[str, int]]:
    return [{k: a[k] - b.get(k, 0) for k in a} for a, b in zip(after, before, strict=True)]


def test_flow_mode_follows_the_balancer_when_a_server_is_drained(lab: PmtudLab) -> None:
    """Flows held by s1; s1 drained in the balancers; the same flows, now answered by
    their new owners, get their PTBs there (one copy each) — and a daemon deciding by a
    stale site file loses such flows."""
    old = lab.table
    drained = old.drain(1)
    held = {f: _owned_by(lab, old, 1, f, 6) for f in (4, 6)}
    lab.start_pmtud("flow", table="balancer", **FAST)
    try:
        assert _udp_flows(lab, held) == []  # s1 answered, learnt the path MTU
        lab.forget_path_mtus()  # (so did the servers the PTBs landed on: forget)
        c0 = lab.pmtud_counts()
        lab.set_table(drained)
        holed = _udp_flows(lab, held)  # the same flows: now to their new owners
        c1 = lab.pmtud_counts()
        tcp = lab.probe("tcp", 4, 8)  # new TCP flows, some in buckets still moving
    finally:
        lab.stop_pmtud()
    udp = _delta(c1, c0)
    print(f"\ndrain, balancer's table: UDP {udp}; TCP {tcp}")
    assert holed == []
    assert udp[1]["relayed"] == 0  # no copy to the drained server...
    copies = sum(c["copies"] for c in udp)
    assert copies == sum(c["sent"] for c in udp)  # ...one copy per PTB sent on...
    assert copies == udp[0]["relayed"] + udp[2]["relayed"]  # ...that reached s0 or s2
    assert sum(c["sent"] + c["local"] for c in udp) >= 12  # every flow needed its PTB
    assert tcp["blackholed"] == []
    assert all(c["reloads_ok"] == 1 and c["reloads_failed"] == 0 for c in c1)

    # the same change with daemons deciding by the site file written for the old table
    stale = {4: _owned_by(lab, old, 1, 4, 12)}
    lab.start_pmtud("flow", **FAST)
    try:
        holed = _udp_flows(lab, stale)
        site = lab.dir / "site.json"
        site.write_text("{not json")
        for pid in lab._pmtud:
            os.kill(pid, signal.SIGHUP)
        end = time.monotonic() + 20
        counts = lab.pmtud_counts()
        while not all(c["reloads_failed"] for c in counts) and time.monotonic() < end:
            counts = lab.pmtud_counts()
    finally:
        lab.stop_pmtud()
        lab.set_table(old)
    print(f"drain, stale site file: {len(holed)}/12 black-holed; counters {counts}")
    assert holed  # PTBs went to s1, which no longer answers these flows
    assert all(c["reloads_failed"] == 1 and c["reloads_ok"] == 0 for c in counts)


@pytest.mark.parametrize("mode", ["broadcast", "flow"])
def test_spoofed_flood_is_held_to_the_rate_limits(lab: PmtudLab, mode: str) -> None:
    lab.start_pmtud(mode)  # cloudflare/pmtud's limits: 1.1/s per source, 10/s per interface
    t0 = time.monotonic()
    try:
        one = lab.flood(4, 3000, sources=1)
        first = lab.pmtud_counts()
        t1 = time.monotonic() - t0
        many = lab.flood(6, 3000, sources=500)
        counts = lab.pmtud_counts()
        t2 = time.monotonic() - t0
        alive = lab.probe("tcp", 4, 1, timeout=5.0)  # a real flow still gets its PTB
    finally:
        lab.stop_pmtud()
    print(f"\n{mode} flood: {one}, {many}; after {t2:.1f} s: {counts}")
    n = len(counts)
    # one source: at most 1.1 + 1.1/s at each server (each keeps its own buckets); the
    # rest stopped by the source limit (part of the burst is lost on the way: the
    # veths' backlog holds 1,000 packets)
    sent1 = sum(c["sent"] for c in first)
    assert sent1 <= n * (1.1 + 1.1 * t1)
    assert sum(c["rate_source"] for c in first) > 100
    assert sum(c["rate_iface"] for c in first) == 0  # the source limit stopped it first
    cap = 10 + 10 * t2
    for c in counts:
        assert c["sent"] <= cap  # the interface limit
        if mode == "broadcast":
            assert c["relayed"] == 0
        # no server overwhelmed by the others: what they pass on is held to the limits
        copies_in = c["arrived"] - _originals(c)
        assert copies_in <= (n - 1) * cap
    assert sum(c["rate_iface"] for c in counts) > 0
    logged = sum(_originals(c) for c in counts)
    assert logged > 600
    # no loop: copies are never sent on, so what was sent is bounded by what came in
    assert sum(c["copies"] for c in counts) <= logged
    assert alive["ok"], "the daemons still deliver after the flood"


def test_route_mtu_from_the_chooser_stops_ptbs(lab: PmtudLab) -> None:
    mtu = recommend(read_csv(POST), 1.0)  # full coverage: the IPv6 minimum
    assert mtu == 1280
    for s in lab.servers:
        for family in (4, 6):
            set_route_mtu("default", mtu, family, s)
    before = lab.ptbs_sent()
    m = _measure(lab)  # no pmtud running
    assert m["blackholed"] == 0
    assert lab.ptbs_sent() == before


def test_a_second_daemon_on_the_same_group_exits_1(lab: PmtudLab) -> None:
    lab.start_pmtud("broadcast")
    try:
        r = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                lab.servers[0],
                sys.executable,
                "-m",
                "anyedge",
                "pmtud",
                "run",
                "--iface",
                "eth0",
                "--group",
                "33",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        lab.stop_pmtud()
    assert r.returncode == 1
    assert r.stderr.startswith("anyedge: error: NFLOG group 33:")
    assert "ready" not in r.stdout
