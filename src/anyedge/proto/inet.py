"""The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum
of 16-bit words, as IPv4 headers, ICMP, and TCP/UDP over a pseudo-header carry it.

The lab's packet builders (Verfploeter's echo requests, the Packet Too Big generator)
and the tests' packets share this one.
"""

from __future__ import annotations

import struct


def checksum(data: bytes) -> int:
    """RFC 1071 over ``data`` (an odd length is padded with a zero byte)."""
    if len(data) % 2:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
