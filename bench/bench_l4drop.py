"""Benchmark: what L4Drop's rules cost a packet, in the kernel.

A UDP packet that no rule matches goes past every rule, so its time grows with the
rules in force.  Each row runs the program 200,000 times on it with
``BPF_PROG_TEST_RUN`` (the kernel's own timing, best of five) for 1, 8 and 64 rules of
two kinds — prefix-only rules and memcached-signature rules (protocol, port, payload)
— and prints the ratio to the empty rule set, the cost of parsing the packet alone.
A packet dropped by the first rule is timed too.

Needs root, clang and bpftool.  Run: ``python bench/bench_l4drop.py``.
"""

from __future__ import annotations

import ipaddress
import struct

from anyedge.edge.l4drop import L4Drop
from anyedge.edge.rules import parse_rules


def udp4(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """An Ethernet frame of a UDP datagram (checksums left zero: XDP does not look)."""
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, s, d)
    return bytes(6) + bytes(6) + b"\x08\x00" + ip + udp


REPEAT, ROUNDS = 200_000, 5
PASSING = udp4("192.0.2.1", "192.0.2.10", 40000, 53, b"q" * 40)
DROPPED = udp4("100.64.0.1", "192.0.2.10", 40000, 53, b"q" * 40)


def rules(kind: str, n: int) -> str:
    if kind == "prefix":
        rows = [f"  - {{name: r{i}, source: 100.64.{i}.0/24}}" for i in range(n)]
    else:
        sig = "protocol: udp, source_ports: 11211, payload: {offset: 8, text: 'VALUE '}"
        rows = [f"  - {{name: r{i}, {sig}}}" for i in range(n)]
    return "rules:\n" + "\n".join(rows) + "\n" if n else "rules: []\n"


def best_ns(l4: L4Drop, frame: bytes) -> int:
    return min(l4.program.test_run(frame, repeat=REPEAT).duration_ns for _ in range(ROUNDS))


def main() -> None:
    with L4Drop() as l4:
        l4.replace(parse_rules(rules("prefix", 0)))
        base = best_ns(l4, PASSING)
        print(f"no rules: {base} ns per packet (parsing alone)")
        print(f"{'rules':>5}  {'kind':<10} {'ns/packet':>9}  {'× no rules':>10}")
        for kind in ("prefix", "signature"):
            for n in (1, 8, 64):
                l4.replace(parse_rules(rules(kind, n)))
                t = best_ns(l4, PASSING)
                print(f"{n:>5}  {kind:<10} {t:>9}  {t / base:>10.1f}")
        l4.replace(parse_rules(rules("prefix", 64)))
        t = best_ns(l4, DROPPED)
        print(f"dropped by the first of 64 prefix rules: {t} ns ({t / base:.1f} × no rules)")


if __name__ == "__main__":
    main()
