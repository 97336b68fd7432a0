"""Packet Too Big messages built by hand, and a flood of spoofed ones, for the lab.

:func:`ptb4` and :func:`ptb6` build an ICMPv4 frag-needed / ICMPv6 Packet Too Big (IP
header on, checksums right) from ``source`` (the router that would send it) to the
anycast address, quoting a server → client TCP or UDP packet of the given flow.

``python -m anyedge.lab.ptbgen --iface eth0 --dst-mac MAC --count N --sources K``
sends ``N`` of them in Ethernet frames on an ``AF_PACKET`` socket, from ``K`` spoofed
source addresses in turn (``100.65.0.0/16``, ``2001:db8:f::/48``), each quoting a
different client port, as fast as it can; it prints JSON with what it sent and how long
it took.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..edge.pmtud import TCP
from ..proto.inet import checksum


def _quoted(family: int, server: str, client: str, sport: int, dport: int, proto: int) -> bytes:
    """The head of the server → client packet the router could not forward."""
    l4 = (
        struct.pack("!HHII", sport, dport, 1, 0)
        if proto == TCP
        else struct.pack("!HHHH", sport, dport, 1408, 0)
    )
    s, d = ipaddress.ip_address(server).packed, ipaddress.ip_address(client).packed
    if family == 4:
        head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 1452, 0, 0x4000, 63, proto, 0, s, d)
        head = head[:10] + struct.pack("!H", checksum(head)) + head[12:]
        return head + l4
    return struct.pack("!IHBB16s16s", 6 << 28, 1412, proto, 63, s, d) + l4 + b"\0" * 1192


def ptb4(
    source: str,
    anycast: str,
    client: str,
    sport: int,
    dport: int,
    proto: int = TCP,
    mtu: int = 1280,
) -> bytes:
    """ICMPv4 type 3 code 4 from ``source`` to ``anycast`` about the flow
    ``anycast:sport → client:dport``."""
    body = _quoted(4, anycast, client, sport, dport, proto)
    icmp = struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + body
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    s, d = ipaddress.ip_address(source).packed, ipaddress.ip_address(anycast).packed
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0, s, d)
    return head[:10] + struct.pack("!H", checksum(head)) + head[12:] + icmp


def ptb6(
    source: str,
    anycast: str,
    client: str,
    sport: int,
    dport: int,
    proto: int = TCP,
    mtu: int = 1280,
) -> bytes:
    """ICMPv6 Packet Too Big from ``source`` to ``anycast`` (as much of the quoted packet
    as keeps it within 1,280 bytes)."""
    body = _quoted(6, anycast, client, sport, dport, proto)[: 1280 - 48]
    icmp = struct.pack("!BBHI", 2, 0, 0, mtu) + body
    s, d = ipaddress.ip_address(source).packed, ipaddress.ip_address(anycast).packed
    pseudo = s + d + struct.pack("!I3xB", len(icmp), 58)
    icmp = icmp[:2] + struct.pack("!H", checksum(pseudo + icmp)) + icmp[4:]
    return struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, 64, s, d) + icmp


def spoofed(family: int, index: int, sources: int) -> str:
    k = index % sources
    return f"100.65.{k >> 8}.{k & 0xFF}" if family == 4 else f"2001:db8:f::{k:x}"


def flood(
    iface: str,
    dst_mac: bytes,
    family: int,
    anycast: str,
    count: int,
    sources: int,
    client: str,
    port: int,
) -> dict[str, float]:
    src_mac = bytes.fromhex(Path(f"/sys/class/net/{iface}/address").read_text().replace(":", ""))
    ethertype = b"\x08\x00" if family == 4 else b"\x86\xdd"
    build = ptb4 if family == 4 else ptb6
    frames = [
        dst_mac
        + src_mac
        + ethertype
        + build(spoofed(family, i, sources), anycast, client, port, 10000 + i % 50000)
        for i in range(count)
    ]
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as s:
        s.bind((iface, 0))
        t0 = time.monotonic()
        for f in frames:
            s.send(f)
        elapsed = time.monotonic() - t0
    return {"sent": count, "sources": sources, "seconds": elapsed}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anyedge.lab.ptbgen")
    ap.add_argument("--iface", required=True)
    ap.add_argument("--dst-mac", required=True)
    ap.add_argument("--family", type=int, choices=(4, 6), default=4)
    ap.add_argument("--anycast", required=True)
    ap.add_argument("--client", required=True)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--sources", type=int, default=1)
    a = ap.parse_args(argv)
    mac = bytes.fromhex(a.dst_mac.replace(":", ""))
    out = flood(a.iface, mac, a.family, a.anycast, a.count, a.sources, a.client, a.port)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
