"""Benchmark: what the load balancer's XDP program costs a packet, in the kernel.

Each row runs the program 200,000 times on one frame with ``BPF_PROG_TEST_RUN`` (the
kernel's own timing, best of five): a packet to an address that is not a service
(parsing and one hash lookup), a UDP packet this server keeps, one it sends to another
server (hash, bucket, MAC rewrite, ``XDP_TX``), a TCP SYN it keeps, and a TCP ACK of a
moved bucket with no socket here, which costs a ``bpf_skc_lookup_tcp`` and goes to the
second hop.

Needs root, clang and bpftool.  Run: ``python bench/bench_balancer.py``.
"""

from __future__ import annotations

import ipaddress
import struct

import numpy as np

from anyedge.balance import Table, flow_hash
from anyedge.edge.balancer import Balancer

REPEAT, ROUNDS = 200_000, 5
VIP, CLIENT = "203.0.113.10", "198.51.100.7"
MACS = [f"02:00:5e:00:aa:{i:02x}" for i in range(4)]


def frame(dst: str, sport: int, proto: int, flags: int = 0) -> bytes:
    """An Ethernet frame (checksums left zero: XDP does not look)."""
    s, d = ipaddress.IPv4Address(CLIENT).packed, ipaddress.IPv4Address(dst).packed
    if proto == 17:
        l4 = struct.pack("!HHHH", sport, 80, 8 + 40, 0) + b"q" * 40
    else:
        l4 = struct.pack("!HHIIBBHHH", sport, 80, 1, 0, 5 << 4, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0, s, d)
    return bytes(6) + bytes.fromhex("020000000099") + b"\x08\x00" + ip + l4


def port_where(table: Table, proto: int, first: int, second: int) -> int:
    ports = np.arange(1024, 65536)
    a, b = int(ipaddress.ip_address(CLIENT)), int(ipaddress.ip_address(VIP))
    f, s = table.lookup(flow_hash(a, b, ports, 80, proto))
    return int(ports[(f == first) & (s == second)][0])


def main() -> None:
    table = Table.build([1, 1, 1, 1]).drain(1)
    with Balancer(0) as lb:
        lb.set_servers(MACS)
        lb.set_services([VIP])
        lb.replace(table)
        rows = {
            "not a service": frame("192.0.2.1", 4000, 17),
            "UDP, kept here": frame(VIP, port_where(table, 17, 0, -1), 17),
            "UDP, to another server": frame(VIP, port_where(table, 17, 2, -1), 17),
            "TCP SYN, kept here": frame(VIP, port_where(table, 6, 0, 1), 6, 0x02),
            "TCP ACK, no socket: second hop": frame(VIP, port_where(table, 6, 0, 1), 6, 0x10),
        }
        print(f"{'packet':34} {'ns':>6}")
        for name, f in rows.items():
            best = min(lb.program.test_run(f, REPEAT).duration_ns for _ in range(ROUNDS))
            print(f"{name:34} {best:6d}")


if __name__ == "__main__":
    main()
