"""IKEv2 messages on the wire (RFC 7296 §3): the header, the payload chain and the
payloads a PSK responder meets, each with its encoder and decoder.

A message is :class:`Message` (the 28-byte header's fields) plus a list of payloads.
Each payload kind is a frozen dataclass with ``encode() -> bytes`` (the body, without
the 4-byte generic header) and a ``decode(body)`` class method; :data:`PAYLOADS` maps
the wire type to the class.  :func:`encode_message` chains the generic headers
(next-payload, critical bit, length) and :func:`decode_message` walks them back.  A
payload type this module does not know is kept as :class:`Unknown` (the responder
rejects it only if its critical bit is set, RFC 7296 §2.5).

The encrypted payload (SK, type 46) is decoded here only as far as its ciphertext:
:class:`Encrypted` holds ``first`` (the type of the first inner payload) and the raw
``data`` (IV, ciphertext, ICV); :mod:`.crypto` opens and seals it and the inner
payloads go through :func:`decode_chain` again.

Every malformed input raises :class:`IkeDecodeError` and nothing else: a length that
does not add up, a field out of range, a truncated header.  The fuzz test holds the
decoders to that.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, TypeVar

HEADER = struct.Struct("!8s8sBBBBII")
HEADER_LEN = 28

# exchange types (§3.1)
IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL = 34, 35, 36, 37
# header flags
FLAG_INITIATOR, FLAG_VERSION, FLAG_RESPONSE = 0x08, 0x10, 0x20

# payload types (§3.2)
PT_NONE, PT_SA, PT_KE, PT_IDI, PT_IDR, PT_CERT, PT_CERTREQ, PT_AUTH = 0, 33, 34, 35, 36, 37, 38, 39
PT_NONCE, PT_NOTIFY, PT_DELETE, PT_VENDOR, PT_TSI, PT_TSR, PT_SK, PT_CP = (
    40,
    41,
    42,
    43,
    44,
    45,
    46,
    47,
)

# protocol ids (§3.3.1)
PROTO_IKE, PROTO_AH, PROTO_ESP = 1, 2, 3
# transform types (§3.3.2)
T_ENCR, T_PRF, T_INTEG, T_DH, T_ESN = 1, 2, 3, 4, 5
ATTR_KEY_LENGTH = 14

# notify message types (§3.10.1)
UNSUPPORTED_CRITICAL_PAYLOAD, INVALID_IKE_SPI, INVALID_SYNTAX = 1, 4, 7
INVALID_MESSAGE_ID, INVALID_SPI, NO_PROPOSAL_CHOSEN, INVALID_KE_PAYLOAD = 9, 11, 14, 17
AUTHENTICATION_FAILED, TS_UNACCEPTABLE, TEMPORARY_FAILURE = 24, 38, 43
CHILD_SA_NOT_FOUND = 44
INITIAL_CONTACT, NAT_DETECTION_SOURCE_IP, NAT_DETECTION_DESTINATION_IP = 16384, 16388, 16389
COOKIE, USE_TRANSPORT_MODE, REKEY_SA = 16390, 16391, 16393

# identification types (§3.5) and the one authentication method here (§3.8)
ID_IPV4_ADDR, ID_FQDN, ID_RFC822_ADDR, ID_IPV6_ADDR, ID_KEY_ID = 1, 2, 3, 5, 11
AUTH_SHARED_KEY, AUTH_ECDSA_SHA256_P256 = 2, 9  # RFC 7296 §3.8, RFC 4754
CERT_X509_SIGNATURE = 4  # certificate encoding (§3.6)
# traffic selector types (§3.13.1)
TS_IPV4_ADDR_RANGE, TS_IPV6_ADDR_RANGE = 7, 8


P = TypeVar("P")


class IkeDecodeError(ValueError):
    """The bytes are not a well-formed IKEv2 message (or payload)."""


class Payload(Protocol):
    TYPE: ClassVar[int]

    def encode(self) -> bytes: ...


def _need(body: bytes, n: int, what: str) -> None:
    if len(body) < n:
        raise IkeDecodeError(f"{what}: {len(body)} bytes, need {n}")


@dataclass(frozen=True, slots=True)
class Transform:
    type: int
    id: int
    key_length: int | None = None

    def encode(self, last: bool) -> bytes:
        attrs = (
            b""
            if self.key_length is None
            else struct.pack("!HH", 0x8000 | ATTR_KEY_LENGTH, self.key_length)
        )
        return (
            struct.pack("!BBHBBH", 0 if last else 3, 0, 8 + len(attrs), self.type, 0, self.id)
            + attrs
        )


@dataclass(frozen=True, slots=True)
class Proposal:
    number: int
    protocol: int
    spi: bytes
    transforms: tuple[Transform, ...]

    def encode(self, last: bool) -> bytes:
        body = b"".join(
            t.encode(i == len(self.transforms) - 1) for i, t in enumerate(self.transforms)
        )
        head = struct.pack(
            "!BBHBBBB",
            0 if last else 2,
            0,
            8 + len(self.spi) + len(body),
            self.number,
            self.protocol,
            len(self.spi),
            len(self.transforms),
        )
        return head + self.spi + body

    def ids(self, ttype: int) -> list[tuple[int, int | None]]:
        return [(t.id, t.key_length) for t in self.transforms if t.type == ttype]


def _decode_transforms(data: bytes, count: int) -> tuple[Transform, ...]:
    out: list[Transform] = []
    pos = 0
    while pos < len(data):
        _need(data[pos:], 8, "transform")
        more, _, length, ttype, _, tid = struct.unpack_from("!BBHBBH", data, pos)
        if length < 8 or pos + length > len(data) or more not in (0, 3):
            raise IkeDecodeError(f"transform: bad length {length} or marker {more}")
        key_length = None
        apos = pos + 8
        while apos < pos + length:
            _need(data[apos : pos + length], 4, "transform attribute")
            atype, aval = struct.unpack_from("!HH", data, apos)
            if atype & 0x8000:
                if atype & 0x7FFF == ATTR_KEY_LENGTH:
                    key_length = aval
                apos += 4
            else:
                apos += 4 + aval
        if apos != pos + length:
            raise IkeDecodeError("transform attributes overrun")
        out.append(Transform(ttype, tid, key_length))
        pos += length
        if more == 0 and pos != len(data):
            raise IkeDecodeError("data after the last transform")
    if len(out) != count:
        raise IkeDecodeError(f"proposal says {count} transforms, has {len(out)}")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class SA:
    TYPE: ClassVar[int] = PT_SA
    proposals: tuple[Proposal, ...]

    def encode(self) -> bytes:
        return b"".join(
            p.encode(i == len(self.proposals) - 1) for i, p in enumerate(self.proposals)
        )

    @classmethod
    def decode(cls, body: bytes) -> SA:
        props: list[Proposal] = []
        pos = 0
        while pos < len(body):
            _need(body[pos:], 8, "proposal")
            more, _, length, num, proto, spi_size, count = struct.unpack_from("!BBHBBBB", body, pos)
            if length < 8 + spi_size or pos + length > len(body) or more not in (0, 2):
                raise IkeDecodeError(f"proposal: bad length {length} or marker {more}")
            spi = body[pos + 8 : pos + 8 + spi_size]
            transforms = _decode_transforms(body[pos + 8 + spi_size : pos + length], count)
            props.append(Proposal(num, proto, spi, transforms))
            pos += length
            if more == 0 and pos != len(body):
                raise IkeDecodeError("data after the last proposal")
        if not props:
            raise IkeDecodeError("SA payload without proposals")
        return cls(tuple(props))


@dataclass(frozen=True, slots=True)
class KE:
    TYPE: ClassVar[int] = PT_KE
    group: int
    data: bytes

    def encode(self) -> bytes:
        return struct.pack("!HH", self.group, 0) + self.data

    @classmethod
    def decode(cls, body: bytes) -> KE:
        _need(body, 4, "KE payload")
        return cls(struct.unpack_from("!H", body)[0], body[4:])


@dataclass(frozen=True, slots=True)
class Identification:
    """IDi or IDr (``initiator`` tells which); the body is what AUTH signs (§2.15)."""

    TYPE: ClassVar[int] = PT_IDI
    id_type: int
    data: bytes
    initiator: bool = True

    def encode(self) -> bytes:
        return struct.pack("!B3x", self.id_type) + self.data

    @classmethod
    def decode(cls, body: bytes, initiator: bool = True) -> Identification:
        _need(body, 4, "ID payload")
        return cls(body[0], body[4:], initiator)


@dataclass(frozen=True, slots=True)
class Auth:
    TYPE: ClassVar[int] = PT_AUTH
    method: int
    data: bytes

    def encode(self) -> bytes:
        return struct.pack("!B3x", self.method) + self.data

    @classmethod
    def decode(cls, body: bytes) -> Auth:
        _need(body, 4, "AUTH payload")
        return cls(body[0], body[4:])


@dataclass(frozen=True, slots=True)
class Nonce:
    TYPE: ClassVar[int] = PT_NONCE
    data: bytes

    def encode(self) -> bytes:
        return self.data

    @classmethod
    def decode(cls, body: bytes) -> Nonce:
        return cls(body)


@dataclass(frozen=True, slots=True)
class Notify:
    TYPE: ClassVar[int] = PT_NOTIFY
    type: int
    data: bytes = b""
    protocol: int = 0
    spi: bytes = b""

    def encode(self) -> bytes:
        return struct.pack("!BBH", self.protocol, len(self.spi), self.type) + self.spi + self.data

    @classmethod
    def decode(cls, body: bytes) -> Notify:
        _need(body, 4, "Notify payload")
        proto, spi_size, ntype = struct.unpack_from("!BBH", body)
        _need(body, 4 + spi_size, "Notify SPI")
        return cls(ntype, body[4 + spi_size :], proto, body[4 : 4 + spi_size])


@dataclass(frozen=True, slots=True)
class Delete:
    TYPE: ClassVar[int] = PT_DELETE
    protocol: int
    spis: tuple[bytes, ...] = ()

    def encode(self) -> bytes:
        size = len(self.spis[0]) if self.spis else 0
        return struct.pack("!BBH", self.protocol, size, len(self.spis)) + b"".join(self.spis)

    @classmethod
    def decode(cls, body: bytes) -> Delete:
        _need(body, 4, "Delete payload")
        proto, size, count = struct.unpack_from("!BBH", body)
        if len(body) != 4 + size * count or (size == 0 and count):
            raise IkeDecodeError(f"Delete payload: {count} SPIs of {size} bytes in {len(body) - 4}")
        return cls(proto, tuple(body[4 + i * size : 4 + (i + 1) * size] for i in range(count)))


@dataclass(frozen=True, slots=True)
class Cert:
    """CERT (``request`` False) or CERTREQ (True): an encoding and its data (a DER
    certificate; for CERTREQ, SHA-1 hashes of trusted CAs' public keys)."""

    TYPE: ClassVar[int] = PT_CERT
    encoding: int
    data: bytes
    request: bool = False

    def encode(self) -> bytes:
        return bytes([self.encoding]) + self.data

    @classmethod
    def decode(cls, body: bytes, request: bool = False) -> Cert:
        _need(body, 1, "CERT payload")
        return cls(body[0], body[1:], request)


@dataclass(frozen=True, slots=True)
class VendorID:
    TYPE: ClassVar[int] = PT_VENDOR
    data: bytes

    def encode(self) -> bytes:
        return self.data

    @classmethod
    def decode(cls, body: bytes) -> VendorID:
        return cls(body)


@dataclass(frozen=True, slots=True)
class Selector:
    """One traffic selector: an address range (packed, 4 or 16 bytes) and a port range."""

    start: bytes
    end: bytes
    protocol: int = 0
    start_port: int = 0
    end_port: int = 65535

    @property
    def ts_type(self) -> int:
        return TS_IPV4_ADDR_RANGE if len(self.start) == 4 else TS_IPV6_ADDR_RANGE

    def encode(self) -> bytes:
        return (
            struct.pack(
                "!BBHHH",
                self.ts_type,
                self.protocol,
                8 + 2 * len(self.start),
                self.start_port,
                self.end_port,
            )
            + self.start
            + self.end
        )


@dataclass(frozen=True, slots=True)
class TrafficSelectors:
    """TSi or TSr (``initiator`` tells which)."""

    TYPE: ClassVar[int] = PT_TSI
    selectors: tuple[Selector, ...]
    initiator: bool = True

    def encode(self) -> bytes:
        return struct.pack("!B3x", len(self.selectors)) + b"".join(
            s.encode() for s in self.selectors
        )

    @classmethod
    def decode(cls, body: bytes, initiator: bool = True) -> TrafficSelectors:
        _need(body, 4, "TS payload")
        count = body[0]
        out: list[Selector] = []
        pos = 4
        for _ in range(count):
            _need(body[pos:], 8, "traffic selector")
            ts_type, proto, length, sport, eport = struct.unpack_from("!BBHHH", body, pos)
            size = {TS_IPV4_ADDR_RANGE: 4, TS_IPV6_ADDR_RANGE: 16}.get(ts_type)
            if size is None or length != 8 + 2 * size or pos + length > len(body):
                raise IkeDecodeError(f"traffic selector: type {ts_type}, length {length}")
            out.append(
                Selector(
                    body[pos + 8 : pos + 8 + size],
                    body[pos + 8 + size : pos + length],
                    proto,
                    sport,
                    eport,
                )
            )
            pos += length
        if pos != len(body):
            raise IkeDecodeError("TS payload: bytes after the last selector")
        return cls(tuple(out), initiator)


@dataclass(frozen=True, slots=True)
class Encrypted:
    """The SK payload: ``first`` inner payload type and IV | ciphertext | ICV."""

    TYPE: ClassVar[int] = PT_SK
    first: int
    data: bytes

    def encode(self) -> bytes:
        return self.data


@dataclass(frozen=True, slots=True)
class Unknown:
    """A payload type this codec does not decode (kept with its critical bit)."""

    type: int
    data: bytes
    critical: bool = False

    @property
    def TYPE(self) -> int:
        return self.type

    def encode(self) -> bytes:
        return self.data


def payload_type(p: object) -> int:
    if isinstance(p, Identification):
        return PT_IDI if p.initiator else PT_IDR
    if isinstance(p, TrafficSelectors):
        return PT_TSI if p.initiator else PT_TSR
    if isinstance(p, Cert):
        return PT_CERTREQ if p.request else PT_CERT
    return int(p.TYPE)  # type: ignore[attr-defined]


def _decode_one(ptype: int, body: bytes, critical: bool) -> object:
    if ptype == PT_SA:
        return SA.decode(body)
    if ptype == PT_KE:
        return KE.decode(body)
    if ptype in (PT_IDI, PT_IDR):
        return Identification.decode(body, ptype == PT_IDI)
    if ptype == PT_AUTH:
        return Auth.decode(body)
    if ptype == PT_NONCE:
        return Nonce.decode(body)
    if ptype == PT_NOTIFY:
        return Notify.decode(body)
    if ptype == PT_DELETE:
        return Delete.decode(body)
    if ptype == PT_VENDOR:
        return VendorID.decode(body)
    if ptype in (PT_CERT, PT_CERTREQ):
        return Cert.decode(body, ptype == PT_CERTREQ)
    if ptype in (PT_TSI, PT_TSR):
        return TrafficSelectors.decode(body, ptype == PT_TSI)
    return Unknown(ptype, body, critical)


def encode_chain(payloads: list[object]) -> tuple[int, bytes]:
    """The payloads with their generic headers; returns (first type, bytes).  An
    :class:`Encrypted` payload must be last: its next-payload field is its first inner
    payload's type."""
    parts: list[bytes] = []
    types = [payload_type(p) for p in payloads]
    for i, p in enumerate(payloads):
        body = p.encode()  # type: ignore[attr-defined]
        nxt = (
            p.first
            if isinstance(p, Encrypted)
            else (types[i + 1] if i + 1 < len(types) else PT_NONE)
        )
        crit = 0x80 if isinstance(p, Unknown) and p.critical else 0
        parts.append(struct.pack("!BBH", nxt, crit, 4 + len(body)) + body)
    return (types[0] if types else PT_NONE), b"".join(parts)


def decode_chain(first: int, data: bytes) -> list[object]:
    """Walk the generic payload headers from ``first``; an SK payload ends the walk."""
    out: list[object] = []
    ptype, pos = first, 0
    while ptype != PT_NONE:
        if len(data) - pos < 4:
            raise IkeDecodeError(f"payload {ptype}: truncated header at offset {pos}")
        nxt, flags, length = struct.unpack_from("!BBH", data, pos)
        if length < 4 or pos + length > len(data):
            raise IkeDecodeError(f"payload {ptype}: length {length} at offset {pos}")
        body = data[pos + 4 : pos + length]
        if ptype == PT_SK:
            if pos + length != len(data):
                raise IkeDecodeError("SK payload is not the last payload")
            out.append(Encrypted(nxt, body))
            return out
        out.append(_decode_one(ptype, body, bool(flags & 0x80)))
        pos += length
        ptype = nxt
    if pos != len(data):
        raise IkeDecodeError(f"{len(data) - pos} bytes after the last payload")
    return out


@dataclass(slots=True)
class Message:
    spi_i: bytes
    spi_r: bytes
    exchange: int
    flags: int
    message_id: int
    payloads: list[object] = field(default_factory=list)

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)

    def find(self, kind: type[P], ntype: int | None = None) -> list[P]:
        """The payloads of class ``kind`` (of notify or payload type ``ntype``)."""
        found = [p for p in self.payloads if isinstance(p, kind)]
        if ntype is not None:
            found = [p for p in found if getattr(p, "type", None) == ntype]
        return found


def encode_header(m: Message, first: int, length: int) -> bytes:
    return HEADER.pack(m.spi_i, m.spi_r, first, 0x20, m.exchange, m.flags, m.message_id, length)


def encode_message(m: Message) -> bytes:
    """The whole message (an :class:`Encrypted` payload must already be sealed)."""
    first, body = encode_chain(m.payloads)
    return encode_header(m, first, HEADER_LEN + len(body)) + body


def decode_header(data: bytes) -> tuple[Message, int]:
    """The header's fields and the first payload type; checks version and length."""
    if len(data) < HEADER_LEN:
        raise IkeDecodeError(f"message of {len(data)} bytes, shorter than the header")
    spi_i, spi_r, first, version, exchange, flags, mid, length = HEADER.unpack_from(data)
    if version >> 4 != 2:
        raise IkeDecodeError(f"IKE major version {version >> 4}")
    if length != len(data):
        raise IkeDecodeError(f"header length {length}, datagram {len(data)}")
    return Message(spi_i, spi_r, exchange, flags, mid), first


def decode_message(data: bytes) -> Message:
    m, first = decode_header(data)
    m.payloads = decode_chain(first, data[HEADER_LEN:])
    return m
