"""ESP packets with AES-GCM (RFC 4303, RFC 4106), and their UDP encapsulation
(RFC 3948).

An ESP packet is SPI (4) | sequence number (4) | IV (8) | ciphertext | ICV (16).  The
plaintext is the inner IP packet, padding 1, 2, 3, ... to a multiple of 4 with the two
trailer bytes, the pad length and the next header (4 for IPv4, 41 for IPv6, tunnel
mode).  The associated data is SPI | sequence number (no extended sequence numbers);
the GCM nonce is the key's 4-byte salt followed by the IV, and the IV is the 64-bit
sequence number, which never repeats under one key (RFC 4106 §3.1).

On UDP port 4500 an ESP packet is the whole datagram; an IKE message there starts with
four zero bytes (the non-ESP marker), which no SPI can be.  :func:`classify` tells them
apart; a lone 0xff byte is a NAT keepalive.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

IV_LEN, ICV_LEN, SALT_LEN = 8, 16, 4
HEAD = struct.Struct("!II")
NEXT_IPV4, NEXT_IPV6 = 4, 41
NON_ESP_MARKER = b"\x00\x00\x00\x00"


class EspError(ValueError):
    """The bytes are not an ESP packet this SA can open."""


def next_header_for(packet: bytes) -> int:
    return NEXT_IPV6 if packet and packet[0] >> 4 == 6 else NEXT_IPV4


def padding(payload_len: int) -> bytes:
    n = -(payload_len + 2) % 4
    return bytes(range(1, n + 1))


class GcmKey:
    """One direction's AES-GCM key (``key`` is the AES key followed by the salt)."""

    __slots__ = ("aead", "salt")

    def __init__(self, key: bytes) -> None:
        if len(key) not in (20, 28, 36):
            raise ValueError(f"AES-GCM ESP key of {len(key)} bytes (key | 4-byte salt)")
        self.aead = AESGCM(key[:-SALT_LEN])
        self.salt = key[-SALT_LEN:]


def seal(
    key: GcmKey,
    spi: int,
    seq: int,
    payload: bytes,
    next_header: int | None = None,
    iv: bytes | None = None,
) -> bytes:
    """The ESP packet carrying ``payload``; the IV is the sequence number unless given."""
    nh = next_header_for(payload) if next_header is None else next_header
    pad = padding(len(payload))
    head = HEAD.pack(spi, seq & 0xFFFFFFFF)
    iv = struct.pack("!Q", seq) if iv is None else iv
    plain = payload + pad + bytes((len(pad), nh))
    return head + iv + key.aead.encrypt(key.salt + iv, plain, head)


def peek(packet: bytes) -> tuple[int, int]:
    """(SPI, sequence number) of an ESP packet, unauthenticated."""
    if len(packet) < HEAD.size + IV_LEN + ICV_LEN + 2:
        raise EspError(f"ESP packet of {len(packet)} bytes")
    spi, seq = HEAD.unpack_from(packet)
    return spi, seq


def open_packet(key: GcmKey, packet: bytes) -> tuple[bytes, int]:
    """(inner packet, next header); :class:`EspError` if it does not authenticate."""
    peek(packet)
    iv = packet[HEAD.size : HEAD.size + IV_LEN]
    try:
        plain = key.aead.decrypt(key.salt + iv, packet[HEAD.size + IV_LEN :], packet[: HEAD.size])
    except InvalidTag:
        raise EspError("ESP packet does not authenticate") from None
    pad_len, nh = plain[-2], plain[-1]
    if pad_len + 2 > len(plain):
        raise EspError("ESP pad length past the start")
    return plain[: -2 - pad_len], nh


def classify(datagram: bytes) -> str:
    """What a UDP datagram on port 4500 holds: ``"ike"``, ``"esp"`` or ``"keepalive"``."""
    if datagram == b"\xff":
        return "keepalive"
    if datagram[:4] == NON_ESP_MARKER:
        return "ike"
    return "esp"
