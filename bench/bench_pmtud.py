"""Benchmark: how fast pmtud handles Packet Too Big messages, and how long a PTB takes
from the router to the server that holds its flow.

1. **Handling rate**, in this process: PTBs per second through
   :meth:`~anyedge.edge.pmtud.Pmtud.decide` in broadcast and flow mode (rate limits out
   of the way), against parsing alone (:func:`~anyedge.edge.pmtud.parse_ptb`), best of
   five rounds of 20,000 distinct PTBs.
2. **Arrival to delivery**, in the lab of :mod:`anyedge.lab.pmtud` (three servers, the
   daemons in flow mode and then broadcast mode): the clients' router sends one PTB at a
   time; a packet socket on each server's ``eth0`` sees when it reaches the flow's
   owner.  PTBs whose flow is owned by the server ECMP brings them to arrive directly
   (the baseline: one hop through the site router); the others arrive as the daemon's
   copy.  Medians of 200 each, and the ratio.  ``flow+lb`` is flow mode deciding by the
   balancer's table in force (``--table balancer``: one map lookup per PTB more).
3. **Following the balancer**: in the same lab, reading the balancer's table from the
   kernel — the per-PTB look at which bucket array is in force, and the whole table, read
   after each commit — against one flow decision; then, with the daemons on
   ``--table balancer``, the table changed (one server drained, then back) 20 times and
   right after each commit a PTB sent for a flow that changed owner: its time to the new
   owner against the direct baseline (it includes the daemon's whole-table read).

Needs root, clang and bpftool (the lab runs the XDP balancer).
Run: ``python bench/bench_pmtud.py``.
"""

from __future__ import annotations

import os
import select
import socket
import statistics
import time

import numpy as np

from anyedge.adapters import netns
from anyedge.balance import Table
from anyedge.edge.balancer_view import BalancerView
from anyedge.edge.pmtud import Pmtud, Site, flow_of, parse_ptb
from anyedge.lab.pmtud import ANYCAST4, PmtudLab, server_mac
from anyedge.lab.ptbgen import ptb4

N, ROUNDS, SAMPLES = 20_000, 5, 200
ROUTER = "198.51.100.2"


def handling_rate() -> None:
    macs = [bytes.fromhex(server_mac(i).replace(":", "")) for i in range(3)]
    table = Table.build([1.0] * 3)
    pkts = [ptb4(ROUTER, ANYCAST4, "100.64.1.7", 8080, 1024 + i) for i in range(N)]

    def rate(fn: object) -> float:
        best = float("inf")
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            for i, p in enumerate(pkts):
                fn(p, i)  # type: ignore[operator]
            best = min(best, time.perf_counter() - t0)
        return N / best

    base = rate(lambda p, i: parse_ptb(p))
    print(f"parse only: {base:,.0f} PTB/s")
    print(f"{'mode':<10} {'PTB/s':>10}  {'× parse only':>12}")
    for mode in ("broadcast", "flow"):
        core = Pmtud(mode, Site(macs[0], macs, table), src_rate=1e12, iface_rate=1e12)
        r = rate(lambda p, i, c=core: c.decide(p, i * 1e-9))
        print(f"{mode:<10} {r:>10,.0f}  {r / base:>12.2f}")


def _captures(lab: PmtudLab) -> list[socket.socket]:
    socks = []
    for s in lab.servers:
        with netns.entered(s):
            k = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
            k.bind(("eth0", 0))
            k.setblocking(False)
            socks.append(k)
    return socks


def _drain(socks: list[socket.socket]) -> None:
    for k in socks:
        try:
            while True:
                k.recv(65536)
        except BlockingIOError:
            pass


def _wait(socks: list[socket.socket], port: int, want: int, timeout: float = 1.0) -> float:
    """The time the PTB quoting client port ``port`` reached server ``want``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select(socks, [], [], 0.05)
        for k in ready:
            try:
                while True:
                    frame = k.recv(65536)
                    t = time.monotonic()
                    ptb = parse_ptb(frame[14:])
                    if ptb is not None and ptb.client_port == port and socks.index(k) == want:
                        return t
            except BlockingIOError:
                pass
    return float("nan")


def _mac(lab: PmtudLab, ns: str, iface: str) -> bytes:
    text = netns.run(ns, ["cat", f"/sys/class/net/{iface}/address"]).strip()
    return bytes.fromhex(text.replace(":", ""))


def _sender(lab: PmtudLab) -> tuple[socket.socket, bytes]:
    """A packet socket on the clients' router towards the site router, and the head."""
    with netns.entered(lab.router):
        out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        out.bind(("eth0", 0))
    head = _mac(lab, lab.gateway, "eth1") + _mac(lab, lab.router, "eth0") + b"\x08\x00"
    return out, head


def _lander(lab: PmtudLab, socks: list[socket.socket], out: socket.socket, head: bytes) -> int:
    """Which server ECMP brings the router's PTBs to: the one that sees the first."""
    br0 = _mac(lab, lab.gateway, "br0")
    _drain(socks)
    out.send(head + ptb4(ROUTER, ANYCAST4, "100.64.1.7", 8080, 999))
    time.sleep(0.3)
    seen = []
    for i, k in enumerate(socks):
        try:
            while True:
                f = k.recv(65536)
                p = parse_ptb(f[14:])
                if p and p.client_port == 999 and f[6:12] == br0:
                    seen.append(i)
        except BlockingIOError:
            pass
    return seen[0]


def _owner(table: Table, port: int) -> int:
    ptb = parse_ptb(ptb4(ROUTER, ANYCAST4, "100.64.1.7", 8080, port))
    assert ptb is not None
    return int(table.lookup(np.array([flow_of(ptb)], dtype=np.uint32))[0][0])


def delivery(lab: PmtudLab, mode: str, table: str = "site") -> float:
    """The median time to the owner of a PTB ECMP brings straight to it (µs)."""
    lab.start_pmtud(mode, src_rate=1e6, iface_rate=1e6, table=table)
    socks = _captures(lab)
    out, head = _sender(lab)
    try:
        lander = _lander(lab, socks, out, head)
        times: dict[bool, list[float]] = {True: [], False: []}
        port = 2000
        while min(len(v) for v in times.values()) < SAMPLES:
            port += 1
            pkt = ptb4(ROUTER, ANYCAST4, "100.64.1.7", 8080, port)
            owner = _owner(lab.table, port)
            direct = owner == lander
            if len(times[direct]) >= SAMPLES:
                continue
            _drain(socks)
            t0 = time.monotonic()
            out.send(head + pkt)
            t = _wait(socks, port, owner)
            times[direct].append(t - t0)
        d = statistics.median(times[True]) * 1e6
        r = statistics.median(times[False]) * 1e6
        lost = sum(t != t for t in times[False])
        label = mode + ("+lb" if table == "balancer" else "")
        print(f"{label:<10} {d:>12.0f} µs {r:>12.0f} µs {r / d:>8.1f}   (lost {lost})")
        return d
    finally:
        out.close()
        for k in socks:
            k.close()
        lab.stop_pmtud()


def reading(lab: PmtudLab) -> None:
    """The balancer's table read from the kernel, against one flow decision."""
    macs = [bytes.fromhex(server_mac(i).replace(":", "")) for i in range(3)]
    core = Pmtud("flow", Site(macs[0], macs, lab.table), src_rate=1e12, iface_rate=1e12)
    pkt = ptb4(ROUTER, ANYCAST4, "100.64.1.7", 8080, 4000)
    t0 = time.perf_counter()
    for i in range(N):
        core.decide(pkt, i * 1e-9)
    decide = (time.perf_counter() - t0) / N
    with netns.entered(lab.servers[0]), BalancerView("eth0") as view:
        look = min(_timed(view.in_force, 2000) for _ in range(ROUNDS))
        whole = statistics.median(_timed(view.read, 1) for _ in range(10))
    print(f"one flow decision:            {decide * 1e6:8.1f} µs")
    print(f"which bucket array in force:  {look * 1e6:8.1f} µs ({look / decide:.2f} × a decision)")
    print(f"the whole table (median):     {whole * 1e3:8.1f} ms ({whole / decide:,.0f} ×)")


def _timed(fn: object, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()  # type: ignore[operator]
    return (time.perf_counter() - t0) / n


def follow(lab: PmtudLab, direct: float) -> None:
    """PTBs sent right after a commit reach the flow's new owner; how soon."""
    old = lab.table
    socks = _captures(lab)
    out, head = _sender(lab)
    lab.start_pmtud("flow", src_rate=1e6, iface_rate=1e6, table="balancer")
    try:
        lander = _lander(lab, socks, out, head)
        drained = old.drain((lander + 1) % lab.n)
        times: list[float] = []
        port = 20000
        for i in range(20):
            new, before = (drained, old) if i % 2 == 0 else (old, drained)
            while True:  # a flow that changes owner, to a server the PTB does not land on
                port += 1
                owner = _owner(new, port)
                if owner != _owner(before, port) and owner != lander:
                    break
            lab.set_table(new)
            _drain(socks)
            t0 = time.monotonic()
            out.send(head + ptb4(ROUTER, ANYCAST4, "100.64.1.7", 8080, port))
            times.append(_wait(socks, port, owner) - t0)
        ok = [t for t in times if t == t]
        m = statistics.median(ok) * 1e6 if ok else float("nan")
        print(
            f"first PTB after a commit, to the new owner: median {m:,.0f} µs "
            f"({m / direct:.0f} × direct), lost {len(times) - len(ok)} of {len(times)}"
        )
    finally:
        lab.set_table(old)
        out.close()
        for k in socks:
            k.close()
        lab.stop_pmtud()


def main() -> None:
    handling_rate()
    print()
    print(f"{'mode':<10} {'direct (ECMP)':>15} {'via pmtud':>15} {'× direct':>8}")
    with PmtudLab(f"aepmb{os.getpid()}", servers=3) as lab:
        direct = [delivery(lab, mode) for mode in ("flow", "broadcast")]
        direct.append(delivery(lab, "flow", table="balancer"))
        print()
        reading(lab)
        follow(lab, statistics.median(direct))


if __name__ == "__main__":
    main()
