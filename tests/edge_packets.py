"""Hand-built packets for the edge's BPF tests: Ethernet, IPv4, IPv6, TCP and UDP with
correct lengths and checksums, from :mod:`struct` and the RFC 1071 checksum alone
(bytes in, verdict out)."""

from __future__ import annotations

import ipaddress
import struct

from anyedge.proto.inet import checksum

ETH_IP, ETH_IPV6, ETH_VLAN = 0x0800, 0x86DD, 0x8100
TCP, UDP, ICMP = 6, 17, 1
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def _pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if a.version == 4:
        return a.packed + b.packed + struct.pack("!BBH", 0, proto, length)
    return a.packed + b.packed + struct.pack("!I3xB", length, proto)


def tcp(src: str, dst: str, sport: int, dport: int, flags: int, payload: bytes = b"") -> bytes:
    head = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)
    seg = head + payload
    csum = checksum(_pseudo(src, dst, TCP, len(seg)) + seg)
    return seg[:16] + struct.pack("!H", csum) + seg[18:]


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"") -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    csum = checksum(_pseudo(src, dst, UDP, len(seg)) + seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", csum) + seg[8:]


def ipv4(src: str, dst: str, proto: int, payload: bytes, frag: int = 0, ttl: int = 64) -> bytes:
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, frag, ttl, proto, 0, s, d)
    return head[:10] + struct.pack("!H", checksum(head)) + head[12:] + payload


def ipv6(src: str, dst: str, nexthdr: int, payload: bytes) -> bytes:
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nexthdr, 64, s, d) + payload


def hop_by_hop(nexthdr: int, payload: bytes) -> bytes:
    """An IPv6 hop-by-hop options header (8 bytes, PadN) in front of ``payload``."""
    return struct.pack("!BB", nexthdr, 0) + bytes([1, 4, 0, 0, 0, 0]) + payload


def fragment(nexthdr: int, payload: bytes, offset: int = 0, more: bool = False) -> bytes:
    """An IPv6 fragment header (offset in 8-byte units) in front of ``payload``."""
    return struct.pack("!BBHI", nexthdr, 0, offset << 3 | int(more), 0x4145) + payload


def eth(l3: bytes, ethertype: int = ETH_IP, vlan: int | None = None) -> bytes:
    tag = struct.pack("!HH", ETH_VLAN, vlan) if vlan is not None else b""
    return MAC_B + MAC_A + tag + struct.pack("!H", ethertype) + l3


def tcp4(src: str, dst: str, sport: int, dport: int, flags: int, payload: bytes = b"") -> bytes:
    return eth(ipv4(src, dst, TCP, tcp(src, dst, sport, dport, flags, payload)))


def udp4(src: str, dst: str, sport: int, dport: int, payload: bytes = b"") -> bytes:
    return eth(ipv4(src, dst, UDP, udp(src, dst, sport, dport, payload)))


def tcp6(src: str, dst: str, sport: int, dport: int, flags: int, payload: bytes = b"") -> bytes:
    return eth(ipv6(src, dst, TCP, tcp(src, dst, sport, dport, flags, payload)), ETH_IPV6)


def udp6(src: str, dst: str, sport: int, dport: int, payload: bytes = b"") -> bytes:
    return eth(ipv6(src, dst, UDP, udp(src, dst, sport, dport, payload)), ETH_IPV6)
