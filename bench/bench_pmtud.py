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
   copy.  Medians of 200 each, and the ratio.

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


def delivery(lab: PmtudLab, mode: str) -> None:
    lab.start_pmtud(mode, src_rate=1e6, iface_rate=1e6)
    socks = _captures(lab)
    g_mac = netns.run(lab.gateway, ["cat", "/sys/class/net/eth1/address"]).strip()
    with netns.entered(lab.router):
        out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        out.bind(("eth0", 0))
    src = bytes.fromhex(
        netns.run(lab.router, ["cat", "/sys/class/net/eth0/address"]).strip().replace(":", "")
    )
    head = bytes.fromhex(g_mac.replace(":", "")) + src + b"\x08\x00"
    br0 = bytes.fromhex(
        netns.run(lab.gateway, ["cat", "/sys/class/net/br0/address"]).strip().replace(":", "")
    )
    try:
        # which server ECMP brings the router's PTBs to: the one that sees the first
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
        lander = seen[0]
        times: dict[bool, list[float]] = {True: [], False: []}
        port = 2000
        while min(len(v) for v in times.values()) < SAMPLES:
            port += 1
            pkt = ptb4(ROUTER, ANYCAST4, "100.64.1.7", 8080, port)
            ptb = parse_ptb(pkt)
            assert ptb is not None
            owner = int(lab.table.lookup(np.array([flow_of(ptb)], dtype=np.uint32))[0][0])
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
        print(f"{mode:<10} {d:>12.0f} µs {r:>12.0f} µs {r / d:>8.1f}   (lost {lost})")
    finally:
        out.close()
        for k in socks:
            k.close()
        lab.stop_pmtud()


def main() -> None:
    handling_rate()
    print()
    print(f"{'mode':<10} {'direct (ECMP)':>15} {'via pmtud':>15} {'× direct':>8}")
    with PmtudLab(f"aepmb{os.getpid()}", servers=3) as lab:
        for mode in ("flow", "broadcast"):
            delivery(lab, mode)


if __name__ == "__main__":
    main()
