"""STUN messages (RFC 8489) with TURN's attributes (RFC 8656), and ChannelData framing.

A STUN message is a 20-byte header -- message type (a 12-bit method and a 2-bit class,
interleaved), body length, the magic cookie 0x2112A442 and a 96-bit transaction id --
then type-length-value attributes, each value padded to a multiple of 4 bytes.  Data
flows through this module like this::

    bytes --decode()--> Message(method, cls, transaction_id, attributes)
            attributes are the raw (type, value) pairs in wire order; padding is
            dropped (it may be any bytes); attributes after MESSAGE-INTEGRITY other
            than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are ignored (RFC 8489 §14.5)
    bytes + Message --check_integrity(key), check_fingerprint()--> bool
    raw value --unpack(attr) or a typed helper (unpack_xor_address, ...)--> Python value
    Message --encode(key, integrity, fingerprint)--> bytes
            MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are computed
            here and always written last; copies of them in Message.attributes (as
            decode() leaves them) are skipped, so decode-then-encode with the same key
            gives the same bytes back.

Attribute types are one table, :class:`Attr`: each member is the wire code, its RFC name
(``Attr.XOR_PEER_ADDRESS.rfc_name == "XOR-PEER-ADDRESS"``) and the :class:`Kind` of value
it holds; :data:`CODECS` maps each kind to its packer and unpacker, and :func:`pack` /
:func:`unpack` go through the two.  Values are plain Python data: addresses are
``(host, port)`` with ``host`` as :mod:`ipaddress` prints it, error codes are
``(code, reason)``.

Padding: RFC 8489 pads with zero bytes "or any value"; :func:`decode` accepts any value
and :func:`encode` writes the byte ``pad`` (0 by default).  The RFC 5769 test vectors pad
with spaces (0x20) in §2.1-2.3 and zeros in §2.4, so ``encode(..., pad=0x20)`` reproduces
the first three byte for byte.

Long-term credentials (RFC 8489 §9.2): the key is MD5(username ":" realm ":" password)
with the password through :func:`saslprep`, or SHA-256 of the same string when the
PASSWORD-ALGORITHM is SHA-256.

ChannelData (RFC 8656 §12.4) shares the client's 5-tuple with STUN; the first byte tells
them apart: 0x00-0x3F STUN (first two bits 00), 0x40-0x7F ChannelData on a channel
0x4000-0x7FFF (RFC 8656 allots 0x4000-0x4FFF; RFC 5766's clients use the rest),
anything else is neither.  Over UDP one datagram is one message; over TCP
and TLS :class:`StreamFramer` cuts the byte stream into messages, ChannelData padded to
4 bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import stringprep
import struct
import unicodedata
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, Literal

MAGIC_COOKIE = 0x2112A442
HEADER_SIZE = 20
FINGERPRINT_XOR = 0x5354554E
CHANNEL_MIN = 0x4000
CHANNEL_MAX = 0x4FFF
# RFC 5766 allowed 0x4000-0x7FFF and its clients (coturn's turnutils_uclient among them)
# still use the upper part; RFC 8656 reserves 0x5000-0x7FFF only to keep ChannelData apart
# from DTLS-SRTP on a client's port.  Frames carry either: the first two bits are 01.
LEGACY_CHANNEL_MAX = 0x7FFF

_COOKIE = MAGIC_COOKIE.to_bytes(4, "big")
_HEAD = struct.Struct("!HHI")
_TL = struct.Struct("!HH")

Addr = tuple[str, int]
Integrity = Literal["sha1", "sha256", "both"]


class StunError(ValueError):
    """Bytes that are not a well-formed STUN message, ChannelData frame or attribute."""


class Class(IntEnum):
    """The class of a STUN message: bits C1 C0 of the message type."""

    REQUEST = 0
    INDICATION = 1
    SUCCESS = 2
    ERROR = 3


class Method(IntEnum):
    """STUN and TURN methods (RFC 8489 §18.2, RFC 8656 §17)."""

    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009
    CONNECT = 0x00A  # RFC 6062: TCP relay allocations
    CONNECTION_BIND = 0x00B
    CONNECTION_ATTEMPT = 0x00C


class PasswordAlgorithm(IntEnum):
    """PASSWORD-ALGORITHM values (RFC 8489 §18.5)."""

    MD5 = 0x0001
    SHA256 = 0x0002


class Kind(StrEnum):
    """What an attribute's value holds; :data:`CODECS` packs and unpacks each kind."""

    ADDRESS = "address"  # (host, port)
    XOR_ADDRESS = "xor-address"  # (host, port), XOR'ed with cookie (and id for IPv6)
    STRING = "string"  # str, UTF-8
    BYTES = "bytes"  # bytes, as they are
    EMPTY = "empty"  # None: a flag with no value
    UINT32 = "uint32"  # int
    UINT64 = "uint64"  # int
    BYTE_RFFU = "byte-rffu"  # int: one byte then 3 reserved (family, protocol)
    CHANNEL = "channel"  # int: 16-bit channel number then 2 reserved
    EVEN_PORT = "even-port"  # bool: the R bit of one byte
    ERROR_CODE = "error-code"  # (code, reason)
    ADDRESS_ERROR_CODE = "address-error-code"  # (family, code, reason)
    ATTR_LIST = "attr-list"  # tuple of 16-bit attribute types
    ALGORITHMS = "algorithms"  # tuple of (algorithm, parameters)
    ALGORITHM = "algorithm"  # (algorithm, parameters)
    ICMP = "icmp"  # (type, code, error data)


class Attr(IntEnum):
    """Every attribute type anyedge knows: wire code and kind of value, in one table.

    Codes below 0x8000 are comprehension-required: a request carrying one the server
    does not understand gets 420 (Unknown Attribute).
    """

    kind: Kind

    def __new__(cls, code: int, kind: Kind) -> Attr:
        member = int.__new__(cls, code)
        member._value_ = code
        member.kind = kind
        return member

    @property
    def rfc_name(self) -> str:
        return self.name.replace("_", "-")

    # RFC 8489 §18.3, comprehension-required
    MAPPED_ADDRESS = (0x0001, Kind.ADDRESS)
    USERNAME = (0x0006, Kind.STRING)
    MESSAGE_INTEGRITY = (0x0008, Kind.BYTES)
    ERROR_CODE = (0x0009, Kind.ERROR_CODE)
    UNKNOWN_ATTRIBUTES = (0x000A, Kind.ATTR_LIST)
    REALM = (0x0014, Kind.STRING)
    NONCE = (0x0015, Kind.STRING)
    MESSAGE_INTEGRITY_SHA256 = (0x001C, Kind.BYTES)
    PASSWORD_ALGORITHM = (0x001D, Kind.ALGORITHM)
    USERHASH = (0x001E, Kind.BYTES)
    XOR_MAPPED_ADDRESS = (0x0020, Kind.XOR_ADDRESS)
    # RFC 8656 §18, comprehension-required
    CHANNEL_NUMBER = (0x000C, Kind.CHANNEL)
    LIFETIME = (0x000D, Kind.UINT32)
    XOR_PEER_ADDRESS = (0x0012, Kind.XOR_ADDRESS)
    DATA = (0x0013, Kind.BYTES)
    XOR_RELAYED_ADDRESS = (0x0016, Kind.XOR_ADDRESS)
    REQUESTED_ADDRESS_FAMILY = (0x0017, Kind.BYTE_RFFU)
    EVEN_PORT = (0x0018, Kind.EVEN_PORT)
    REQUESTED_TRANSPORT = (0x0019, Kind.BYTE_RFFU)
    DONT_FRAGMENT = (0x001A, Kind.EMPTY)
    RESERVATION_TOKEN = (0x0022, Kind.BYTES)
    CONNECTION_ID = (0x002A, Kind.UINT32)  # RFC 6062
    # RFC 5780 (NAT behaviour discovery), comprehension-required
    CHANGE_REQUEST = (0x0003, Kind.UINT32)  # flags: 0x4 change IP, 0x2 change port
    PADDING = (0x0026, Kind.BYTES)
    RESPONSE_PORT = (0x0027, Kind.UINT32)  # the port in the top 16 bits, then 2 RFFU
    # RFC 8445 (ICE), comprehension-required
    PRIORITY = (0x0024, Kind.UINT32)
    USE_CANDIDATE = (0x0025, Kind.EMPTY)
    # comprehension-optional
    ADDITIONAL_ADDRESS_FAMILY = (0x8000, Kind.BYTE_RFFU)
    ADDRESS_ERROR_CODE = (0x8001, Kind.ADDRESS_ERROR_CODE)
    PASSWORD_ALGORITHMS = (0x8002, Kind.ALGORITHMS)
    ALTERNATE_DOMAIN = (0x8003, Kind.STRING)
    ICMP = (0x8004, Kind.ICMP)
    SOFTWARE = (0x8022, Kind.STRING)
    ALTERNATE_SERVER = (0x8023, Kind.ADDRESS)
    FINGERPRINT = (0x8028, Kind.UINT32)
    RESPONSE_ORIGIN = (0x802B, Kind.ADDRESS)  # RFC 5780: where the response left from
    OTHER_ADDRESS = (0x802C, Kind.ADDRESS)  # RFC 5780: the server's other IP and port
    ICE_CONTROLLED = (0x8029, Kind.UINT64)
    ICE_CONTROLLING = (0x802A, Kind.UINT64)


ATTRIBUTES: dict[int, Attr] = {int(a): a for a in Attr}
"""Attribute type code -> :class:`Attr`, for the codes this module knows."""

_MI = int(Attr.MESSAGE_INTEGRITY)
_MI256 = int(Attr.MESSAGE_INTEGRITY_SHA256)
_FP = int(Attr.FINGERPRINT)
_TRAILER = frozenset((_MI, _MI256, _FP))


@dataclass(frozen=True, slots=True)
class Message:
    """One STUN message: method, class, transaction id and raw attributes in order."""

    method: int
    cls: int
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...] = ()

    def get(self, attr: int) -> bytes | None:
        """The value of the first attribute of type ``attr``, or None."""
        for t, v in self.attributes:
            if t == attr:
                return v
        return None

    def get_all(self, attr: int) -> list[bytes]:
        """The values of every attribute of type ``attr``, in order."""
        return [v for t, v in self.attributes if t == attr]

    def has(self, attr: int) -> bool:
        return any(t == attr for t, _ in self.attributes)


def message_type(method: int, cls: int) -> int:
    """The 14-bit message type: method bits M11..M0 with class bits C1 C0 in between."""
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((cls & 1) << 4)
        | ((cls & 2) << 7)
    )


def split_type(mtype: int) -> tuple[int, int]:
    """(method, class) of a message type."""
    method = (mtype & 0x000F) | ((mtype >> 1) & 0x0070) | ((mtype >> 2) & 0x0F80)
    return method, ((mtype >> 4) & 1) | ((mtype >> 7) & 2)


# --- decode and encode ------------------------------------------------------------


MAX_ATTRIBUTES = 64  # no real message has more; many more is work for an attacker only


def decode(data: bytes) -> Message:
    """Parse one STUN message; raise :class:`StunError` if it is not well formed or
    carries more than :data:`MAX_ATTRIBUTES` attributes."""
    n = len(data)
    if n < HEADER_SIZE:
        raise StunError(f"{n} bytes is shorter than a STUN header")
    mtype, length, cookie = _HEAD.unpack_from(data)
    if mtype & 0xC000:
        raise StunError("the first two bits of a STUN message must be zero")
    if cookie != MAGIC_COOKIE:
        raise StunError(f"magic cookie is {cookie:#010x}, not {MAGIC_COOKIE:#010x}")
    if length & 3:
        raise StunError(f"message length {length} is not a multiple of 4")
    if HEADER_SIZE + length != n:
        raise StunError(f"message length says {length} bytes of attributes, {n - 20} follow")
    attrs: list[tuple[int, bytes]] = []
    pos = HEADER_SIZE
    after = 0  # 0: before MESSAGE-INTEGRITY, 1: after it, 2: after -SHA256, 3: after FP
    while pos < n:
        if pos + 4 > n:
            raise StunError(f"attribute header truncated at byte {pos}")
        atype, alen = _TL.unpack_from(data, pos)
        end = pos + 4 + alen
        if end > n:
            raise StunError(f"attribute {atype:#06x} at byte {pos} runs past the end")
        if after == 0 or (after == 1 and atype in (_MI256, _FP)) or (after == 2 and atype == _FP):
            if len(attrs) == MAX_ATTRIBUTES:
                raise StunError(f"more than {MAX_ATTRIBUTES} attributes")
            attrs.append((atype, data[pos + 4 : end]))
            if atype == _MI:
                after = 1
            elif atype == _MI256:
                after = 2
            elif atype == _FP:
                after = 3
        pos = end + (-alen & 3)
    method, cls = split_type(mtype)
    return Message(method, cls, data[8:20], tuple(attrs))


def encode(
    msg: Message,
    key: bytes | None = None,
    integrity: Integrity | None = None,
    fingerprint: bool = False,
    pad: int = 0,
) -> bytes:
    """The wire bytes of ``msg``, with integrity (default SHA-1 if ``key``) and fingerprint.

    ``integrity`` is "sha1" (MESSAGE-INTEGRITY), "sha256" (MESSAGE-INTEGRITY-SHA256) or
    "both" (SHA-1 first, RFC 8489 §14.6); ``pad`` is the byte padding values to 4.
    """
    if len(msg.transaction_id) != 12:
        raise ValueError("a transaction id is 12 bytes")
    if not 0 <= msg.method <= 0xFFF or not 0 <= msg.cls <= 3:
        raise ValueError(f"method {msg.method:#x} or class {msg.cls} out of range")
    if integrity is None and key is not None:
        integrity = "sha1"
    if integrity is not None and key is None:
        raise ValueError("message integrity needs a key")
    out = bytearray(HEADER_SIZE)
    out[8:20] = msg.transaction_id
    padding = bytes((pad,)) * 3
    for atype, value in msg.attributes:
        if atype in _TRAILER:
            continue
        if len(value) > 0xFFFF:
            raise ValueError(f"attribute {atype:#06x} is longer than 65535 bytes")
        out += _TL.pack(atype, len(value))
        out += value
        out += padding[: -len(value) & 3]
    mtype = message_type(msg.method, msg.cls)
    if key is not None and integrity in ("sha1", "both"):
        _HEAD.pack_into(out, 0, mtype, len(out) - HEADER_SIZE + 24, MAGIC_COOKIE)
        out += _TL.pack(_MI, 20) + hmac.digest(key, out, "sha1")
    if key is not None and integrity in ("sha256", "both"):
        _HEAD.pack_into(out, 0, mtype, len(out) - HEADER_SIZE + 36, MAGIC_COOKIE)
        out += _TL.pack(_MI256, 32) + hmac.digest(key, out, "sha256")
    if fingerprint:
        _HEAD.pack_into(out, 0, mtype, len(out) - HEADER_SIZE + 8, MAGIC_COOKIE)
        out += _TL.pack(_FP, 4) + (zlib.crc32(out) ^ FINGERPRINT_XOR).to_bytes(4, "big")
    if len(out) - HEADER_SIZE > 0xFFFF:
        raise ValueError("a STUN message body is at most 65535 bytes")
    _HEAD.pack_into(out, 0, mtype, len(out) - HEADER_SIZE, MAGIC_COOKIE)
    return bytes(out)


def _find(data: bytes, wanted: int) -> int:
    """Offset of the first attribute of type ``wanted`` in ``data``, or -1."""
    pos, n = HEADER_SIZE, len(data)
    while pos + 4 <= n:
        atype, alen = _TL.unpack_from(data, pos)
        if atype == wanted:
            return pos if pos + 4 + alen <= n else -1
        pos += 4 + alen + (-alen & 3)
    return -1


def integrity_of(msg: Message) -> Literal["sha1", "sha256"] | None:
    """Which integrity :func:`check_integrity` checks on ``msg``: the strongest present."""
    if msg.has(_MI256):
        return "sha256"
    if msg.has(_MI):
        return "sha1"
    return None


def check_integrity(data: bytes, msg: Message, key: bytes) -> bool:
    """Whether ``data`` (decoded as ``msg``) carries a valid HMAC under ``key``.

    MESSAGE-INTEGRITY-SHA256 is checked when present (it may be truncated to 16..32
    bytes, a multiple of 4), else MESSAGE-INTEGRITY (20 bytes).  The HMAC covers the
    message up to the attribute, with the header's length field set to end just after
    it (RFC 8489 §14.5, §14.6).  False when neither attribute is present.
    """
    kind = integrity_of(msg)
    if kind is None:
        return False
    off = _find(data, _MI256 if kind == "sha256" else _MI)
    if off < 0:
        return False
    alen = (data[off + 2] << 8) | data[off + 3]
    if kind == "sha256":
        if alen < 16 or alen > 32 or alen & 3:
            return False
    elif alen != 20:
        return False
    covered = bytearray(data[:off])
    struct.pack_into("!H", covered, 2, off - HEADER_SIZE + 4 + alen)
    mac = hmac.digest(key, covered, "sha256" if kind == "sha256" else "sha1")
    return hmac.compare_digest(mac[:alen], data[off + 4 : off + 4 + alen])


def check_fingerprint(data: bytes) -> bool:
    """Whether ``data`` ends with a FINGERPRINT attribute holding its CRC-32 XOR 0x5354554e."""
    if len(data) < HEADER_SIZE + 8 or data[-8:-4] != b"\x80\x28\x00\x04":
        return False
    return zlib.crc32(data[:-8]) ^ FINGERPRINT_XOR == int.from_bytes(data[-4:], "big")


# --- attribute values ------------------------------------------------------------


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None


def _port(port: int) -> int:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    return port


def pack_address(addr: Addr) -> bytes:
    """MAPPED-ADDRESS form: 0, family (1 IPv4, 2 IPv6), port, address."""
    ip = _ip(addr[0])
    return struct.pack("!BBH", 0, 1 if ip.version == 4 else 2, _port(addr[1])) + ip.packed


def unpack_address(raw: bytes) -> Addr:
    if len(raw) == 8 and raw[1] == 1:
        return str(ipaddress.IPv4Address(raw[4:])), (raw[2] << 8) | raw[3]
    if len(raw) == 20 and raw[1] == 2:
        return str(ipaddress.IPv6Address(raw[4:])), (raw[2] << 8) | raw[3]
    raise StunError(f"bad address value ({len(raw)} bytes)")


def pack_xor_address(addr: Addr, transaction_id: bytes) -> bytes:
    """XOR-MAPPED-ADDRESS form: port XOR 0x2112, address XOR cookie (|| id for IPv6)."""
    ip = _ip(addr[0])
    port = _port(addr[1]) ^ 0x2112
    if ip.version == 4:
        return struct.pack("!BBHI", 0, 1, port, int(ip) ^ MAGIC_COOKIE)
    mask = int.from_bytes(_COOKIE + transaction_id, "big")
    return struct.pack("!BBH", 0, 2, port) + (int(ip) ^ mask).to_bytes(16, "big")


def unpack_xor_address(raw: bytes, transaction_id: bytes) -> Addr:
    if len(raw) == 8 and raw[1] == 1:
        value = int.from_bytes(raw[4:], "big") ^ MAGIC_COOKIE
        return str(ipaddress.IPv4Address(value)), ((raw[2] << 8) | raw[3]) ^ 0x2112
    if len(raw) == 20 and raw[1] == 2 and len(transaction_id) == 12:
        mask = int.from_bytes(_COOKIE + transaction_id, "big")
        value = int.from_bytes(raw[4:], "big") ^ mask
        return str(ipaddress.IPv6Address(value)), ((raw[2] << 8) | raw[3]) ^ 0x2112
    raise StunError(f"bad XOR address value ({len(raw)} bytes)")


def pack_string(text: str) -> bytes:
    return text.encode()


def unpack_string(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise StunError("attribute text is not UTF-8") from None


def pack_uint32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def unpack_uint32(raw: bytes) -> int:
    if len(raw) != 4:
        raise StunError(f"a 32-bit value is 4 bytes, not {len(raw)}")
    return int.from_bytes(raw, "big")


def pack_uint64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def unpack_uint64(raw: bytes) -> int:
    if len(raw) != 8:
        raise StunError(f"a 64-bit value is 8 bytes, not {len(raw)}")
    return int.from_bytes(raw, "big")


def pack_byte_rffu(value: int) -> bytes:
    """One byte then three reserved: REQUESTED-TRANSPORT, *-ADDRESS-FAMILY."""
    return bytes((value, 0, 0, 0))


def unpack_byte_rffu(raw: bytes) -> int:
    if len(raw) != 4:
        raise StunError(f"this attribute is 4 bytes, not {len(raw)}")
    return raw[0]


def pack_channel(number: int) -> bytes:
    return number.to_bytes(2, "big") + b"\x00\x00"


def unpack_channel(raw: bytes) -> int:
    if len(raw) != 4:
        raise StunError(f"CHANNEL-NUMBER is 4 bytes, not {len(raw)}")
    return (raw[0] << 8) | raw[1]


def pack_even_port(reserve: bool) -> bytes:
    return b"\x80" if reserve else b"\x00"


def unpack_even_port(raw: bytes) -> bool:
    if len(raw) != 1:
        raise StunError(f"EVEN-PORT is 1 byte, not {len(raw)}")
    return bool(raw[0] & 0x80)


def pack_empty(_: None) -> bytes:
    return b""


def unpack_empty(raw: bytes) -> None:
    if raw:
        raise StunError("this attribute has no value")


def pack_error(code: int, reason: str) -> bytes:
    """ERROR-CODE: class (hundreds, 3-6) and number (0-99), then the reason phrase."""
    if not 300 <= code <= 699:
        raise ValueError(f"error code {code} out of range 300-699")
    return bytes((0, 0, code // 100, code % 100)) + reason.encode()


def unpack_error(raw: bytes) -> tuple[int, str]:
    if len(raw) < 4:
        raise StunError("ERROR-CODE is at least 4 bytes")
    cls, number = raw[2] & 7, raw[3]
    if not 3 <= cls <= 6 or number > 99:
        raise StunError(f"bad error class {cls} or number {number}")
    return cls * 100 + number, unpack_string(raw[4:])


def pack_address_error(family: int, code: int, reason: str) -> bytes:
    """ADDRESS-ERROR-CODE (RFC 8656 §18.13): ERROR-CODE with the family in byte 0."""
    return bytes((family,)) + pack_error(code, reason)[1:]


def unpack_address_error(raw: bytes) -> tuple[int, int, str]:
    code, reason = unpack_error(raw)
    return raw[0], code, reason


def pack_attr_list(types: tuple[int, ...]) -> bytes:
    return b"".join(t.to_bytes(2, "big") for t in types)


def unpack_attr_list(raw: bytes) -> tuple[int, ...]:
    if len(raw) & 1:
        raise StunError("UNKNOWN-ATTRIBUTES has an odd length")
    return tuple((raw[i] << 8) | raw[i + 1] for i in range(0, len(raw), 2))


def pack_algorithm(algorithm: tuple[int, bytes]) -> bytes:
    number, params = algorithm
    return struct.pack("!HH", number, len(params)) + params + bytes(-len(params) & 3)


def _algorithms(raw: bytes) -> tuple[tuple[int, bytes], ...]:
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise StunError("password algorithm truncated")
        number, plen = _TL.unpack_from(raw, pos)
        end = pos + 4 + plen
        if end > len(raw):
            raise StunError("password algorithm parameters truncated")
        out.append((number, raw[pos + 4 : end]))
        pos = end + (-plen & 3)
    return tuple(out)


def unpack_algorithm(raw: bytes) -> tuple[int, bytes]:
    found = _algorithms(raw)
    if len(found) != 1:
        raise StunError("PASSWORD-ALGORITHM holds exactly one algorithm")
    return found[0]


def pack_algorithms(algorithms: tuple[tuple[int, bytes], ...]) -> bytes:
    return b"".join(pack_algorithm(a) for a in algorithms)


def unpack_algorithms(raw: bytes) -> tuple[tuple[int, bytes], ...]:
    return _algorithms(raw)


def pack_icmp(value: tuple[int, int, int]) -> bytes:
    icmp_type, icmp_code, error_data = value
    return struct.pack("!HBBI", 0, icmp_type, icmp_code, error_data)


def unpack_icmp(raw: bytes) -> tuple[int, int, int]:
    if len(raw) != 8:
        raise StunError(f"ICMP is 8 bytes, not {len(raw)}")
    _, icmp_type, icmp_code, error_data = struct.unpack("!HBBI", raw)
    return icmp_type, icmp_code, error_data


def _no_tid(f: Callable[[Any], Any]) -> Callable[[Any, bytes], Any]:
    return lambda value, _tid: f(value)


CODECS: dict[Kind, tuple[Callable[[Any, bytes], bytes], Callable[[bytes, bytes], Any]]] = {
    Kind.ADDRESS: (_no_tid(pack_address), _no_tid(unpack_address)),
    Kind.XOR_ADDRESS: (pack_xor_address, unpack_xor_address),
    Kind.STRING: (_no_tid(pack_string), _no_tid(unpack_string)),
    Kind.BYTES: (_no_tid(bytes), _no_tid(bytes)),
    Kind.EMPTY: (_no_tid(pack_empty), _no_tid(unpack_empty)),
    Kind.UINT32: (_no_tid(pack_uint32), _no_tid(unpack_uint32)),
    Kind.UINT64: (_no_tid(pack_uint64), _no_tid(unpack_uint64)),
    Kind.BYTE_RFFU: (_no_tid(pack_byte_rffu), _no_tid(unpack_byte_rffu)),
    Kind.CHANNEL: (_no_tid(pack_channel), _no_tid(unpack_channel)),
    Kind.EVEN_PORT: (_no_tid(pack_even_port), _no_tid(unpack_even_port)),
    Kind.ERROR_CODE: (_no_tid(lambda v: pack_error(*v)), _no_tid(unpack_error)),
    Kind.ADDRESS_ERROR_CODE: (
        _no_tid(lambda v: pack_address_error(*v)),
        _no_tid(unpack_address_error),
    ),
    Kind.ATTR_LIST: (_no_tid(pack_attr_list), _no_tid(unpack_attr_list)),
    Kind.ALGORITHMS: (_no_tid(pack_algorithms), _no_tid(unpack_algorithms)),
    Kind.ALGORITHM: (_no_tid(pack_algorithm), _no_tid(unpack_algorithm)),
    Kind.ICMP: (_no_tid(pack_icmp), _no_tid(unpack_icmp)),
}
"""Kind -> (pack(value, transaction_id), unpack(raw, transaction_id))."""


def pack(attr: Attr, value: Any, transaction_id: bytes = bytes(12)) -> bytes:
    """The raw value of ``attr`` holding ``value`` (see :class:`Kind` for the types)."""
    return CODECS[attr.kind][0](value, transaction_id)


def unpack(attr: Attr, raw: bytes, transaction_id: bytes = bytes(12)) -> Any:
    """The Python value of a raw ``attr`` value; :class:`StunError` if malformed."""
    return CODECS[attr.kind][1](raw, transaction_id)


# --- long-term credentials ------------------------------------------------------------


def saslprep(text: str) -> str:
    """SASLprep (RFC 4013) of a password, as STUN's long-term key needs it.

    Map: characters "commonly mapped to nothing" (RFC 3454 B.1, e.g. U+00AD soft hyphen)
    are dropped and non-ASCII spaces (C.1.2) become U+0020.  Normalise: NFKC with
    Unicode 3.2 tables.  Prohibit (``ValueError``): control characters (C.2.1, C.2.2),
    private use (C.3), non-characters (C.4), surrogates (C.5), characters inappropriate
    for plain text or canonical form (C.6, C.7), display-changing and deprecated
    characters (C.8) and tags (C.9).  Bidirectional text: a string with right-to-left
    characters must hold no left-to-right ones and must start and end with one.
    Unassigned code points are let through, as for a "query" string: this only derives
    keys, it never stores names.
    """
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    out = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    for c in out:
        if (
            stringprep.in_table_c12(c)
            or stringprep.in_table_c21_c22(c)
            or stringprep.in_table_c3(c)
            or stringprep.in_table_c4(c)
            or stringprep.in_table_c5(c)
            or stringprep.in_table_c6(c)
            or stringprep.in_table_c7(c)
            or stringprep.in_table_c8(c)
            or stringprep.in_table_c9(c)
        ):
            raise ValueError(f"SASLprep prohibits U+{ord(c):04X}")
    if any(stringprep.in_table_d1(c) for c in out):
        if any(stringprep.in_table_d2(c) for c in out):
            raise ValueError("SASLprep: mixed right-to-left and left-to-right text")
        if not (stringprep.in_table_d1(out[0]) and stringprep.in_table_d1(out[-1])):
            raise ValueError("SASLprep: right-to-left text must start and end with it")
    return out


def long_term_key(
    username: str,
    realm: str,
    password: str,
    algorithm: int = PasswordAlgorithm.MD5,
) -> bytes:
    """The long-term credential key: MD5 (or SHA-256) of username:realm:SASLprep(password)."""
    text = f"{username}:{realm}:{saslprep(password)}".encode()
    if algorithm == PasswordAlgorithm.MD5:
        return hashlib.md5(text, usedforsecurity=False).digest()
    if algorithm == PasswordAlgorithm.SHA256:
        return hashlib.sha256(text).digest()
    raise ValueError(f"unknown password algorithm {algorithm}")


def userhash(username: str, realm: str) -> bytes:
    """USERHASH (RFC 8489 §14.4): SHA-256 of username:realm."""
    return hashlib.sha256(f"{username}:{realm}".encode()).digest()


# --- ChannelData and the demultiplexer ------------------------------------------------


def is_stun(first_byte: int) -> bool:
    """Whether a message starting with this byte is STUN (first two bits 00)."""
    return first_byte < 0x40


def is_channel_data(first_byte: int) -> bool:
    """Whether a message starting with this byte is ChannelData (channel 0x4000-0x7FFF:
    RFC 8656's 0x4000-0x4FFF and the rest of RFC 5766's range)."""
    return 0x40 <= first_byte <= 0x7F


def encode_channel_data(channel: int, data: bytes, pad: bool = False) -> bytes:
    """A ChannelData message; ``pad`` rounds it up to 4 bytes, as TCP and TLS need."""
    if not CHANNEL_MIN <= channel <= LEGACY_CHANNEL_MAX:
        raise ValueError(f"channel {channel:#06x} is outside 0x4000-0x7FFF")
    if len(data) > 0xFFFF:
        raise ValueError("ChannelData holds at most 65535 bytes")
    head = _TL.pack(channel, len(data))
    return head + data + bytes(-len(data) & 3) if pad else head + data


def decode_channel_data(frame: bytes) -> tuple[int, bytes]:
    """(channel, data) of a ChannelData message; bytes past the length are padding."""
    if len(frame) < 4:
        raise StunError("ChannelData is at least 4 bytes")
    channel, length = _TL.unpack_from(frame)
    if not CHANNEL_MIN <= channel <= LEGACY_CHANNEL_MAX:
        raise StunError(f"channel {channel:#06x} is outside 0x4000-0x7FFF")
    if 4 + length > len(frame):
        raise StunError(f"ChannelData says {length} bytes, {len(frame) - 4} follow")
    return channel, frame[4 : 4 + length]


class StreamFramer:
    """Cuts a TCP or TLS byte stream into whole STUN and ChannelData messages.

    ``feed(bytes)`` returns the messages completed so far, ChannelData with its padding
    to 4 bytes; :class:`StunError` when the stream holds neither (the connection should
    be closed).  A message is at most 20 + 65535 bytes, so the buffer stays bounded.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos, n = 0, len(buf)
        while n - pos >= 4:
            first = buf[pos]
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            if first < 0x40:
                size = HEADER_SIZE + length
            elif first <= 0x7F:
                size = 4 + length + (-length & 3)
            else:
                raise StunError(f"byte {first:#04x} starts neither STUN nor ChannelData")
            if n - pos < size:
                break
            frames.append(bytes(buf[pos : pos + size]))
            pos += size
        if pos:
            del buf[:pos]
        return frames

    @property
    def buffered(self) -> int:
        """Bytes held back, waiting for the rest of a message."""
        return len(self._buf)

    def rest(self) -> bytes:
        """The bytes held back, handed over and forgotten (the stream stops being
        STUN: an RFC 6062 data connection after its ConnectionBind)."""
        out = bytes(self._buf)
        self._buf.clear()
        return out
