"""The STUN codec: RFC 5769 and RFC 8489 test vectors byte for byte, round trips, fuzzing.

The fuzz tests feed the decoders at least 100,000 inputs in all, every one of which must
come back as a message or a :class:`StunError`, nothing else:

- ``test_fuzz_random_bytes``: 1,500 examples x 30 inputs = 45,000 (bare random bytes and
  random attributes behind a valid header);
- ``test_fuzz_mutated_messages``: 1,500 x 30 = 45,000 mutations (flips, cuts, inserts,
  length rewrites) of the test vectors and of generated messages;
- ``test_fuzz_truncations``: every prefix of every vector, 600 or so;
- ``test_fuzz_stream_and_channel_data``: 600 x 20 = 12,000 streams through the
  ``StreamFramer`` in random chunks, each frame through the ChannelData/STUN decoders.

``tests/test_turn_server.py`` adds 12,000 more against the whole server.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import random
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anyedge.proto.stun import (
    ATTRIBUTES,
    CHANNEL_MAX,
    CHANNEL_MIN,
    LEGACY_CHANNEL_MAX,
    Attr,
    Class,
    Kind,
    Message,
    Method,
    PasswordAlgorithm,
    StreamFramer,
    StunError,
    check_fingerprint,
    check_integrity,
    decode,
    decode_channel_data,
    encode,
    encode_channel_data,
    integrity_of,
    is_channel_data,
    is_stun,
    long_term_key,
    message_type,
    pack,
    saslprep,
    split_type,
    unpack,
    unpack_xor_address,
    userhash,
)


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# RFC 5769 §2.1: SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME (padded with spaces),
# MESSAGE-INTEGRITY, FINGERPRINT.  Short-term password "VOkJxbRl1RmTxUk/WvJxBt".
SAMPLE_REQUEST = _hex("""
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf
""")
# RFC 5769 §2.2: SOFTWARE "test vector" (padded with a space), XOR-MAPPED-ADDRESS
# 192.0.2.1:32853, MESSAGE-INTEGRITY, FINGERPRINT.
SAMPLE_IPV4_RESPONSE = _hex("""
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96
""")
# RFC 5769 §2.3: as §2.2 with XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853.
SAMPLE_IPV6_RESPONSE = _hex("""
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c
""")
# RFC 5769 §2.4: USERNAME (zero padding), NONCE, REALM "example.org", MESSAGE-INTEGRITY
# under the long-term key; no FINGERPRINT.
SAMPLE_LONG_TERM_REQUEST = _hex("""
    00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
    00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46
                53 54 76 79 36 34 73 41
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66
""")
# RFC 8489 Appendix B.1 as corrected by erratum 6268: USERHASH, NONCE (with the
# "obMatJos2" security-feature cookie), REALM, PASSWORD-ALGORITHM SHA-256,
# MESSAGE-INTEGRITY-SHA256 under SHA-256(username:realm:password).
SAMPLE_SHA256_REQUEST = _hex("""
    00 01 00 90 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 1e 00 20 4a 3c f3 8f ef 69 92 bd a9 52 c6 78 04 17 da 0f
                24 81 94 15 56 9e 60 b2 05 c4 6e 41 40 7f 17 04
    00 15 00 29 6f 62 4d 61 74 4a 6f 73 32 41 41 41 43 66 2f 2f 34 39 39 6b
                39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73
                41 00 00 00
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 1d 00 04 00 02 00 00
    00 1c 00 20 b5 c7 bf 00 5b 6c 52 a2 1c 51 c5 e8 92 f8 19 24 13 62 96 cb
                92 7c 43 14 93 09 27 8c c6 51 8e 65
""")

SHORT_TERM_KEY = b"VOkJxbRl1RmTxUk/WvJxBt"
LT_USERNAME = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
LT_PASSWORD = "The\u00adM\u00aatr\u2168"
LT_REALM = "example.org"
VECTORS = [
    SAMPLE_REQUEST,
    SAMPLE_IPV4_RESPONSE,
    SAMPLE_IPV6_RESPONSE,
    SAMPLE_LONG_TERM_REQUEST,
    SAMPLE_SHA256_REQUEST,
]


# --- the published vectors ---------------------------------------------------------


def test_rfc5769_sample_request() -> None:
    msg = decode(SAMPLE_REQUEST)
    assert (msg.method, msg.cls) == (Method.BINDING, Class.REQUEST)
    assert msg.transaction_id == bytes.fromhex("b7e7a701bc34d686fa87dfae")
    assert [ATTRIBUTES[t] for t, _ in msg.attributes] == [
        Attr.SOFTWARE,
        Attr.PRIORITY,
        Attr.ICE_CONTROLLED,
        Attr.USERNAME,
        Attr.MESSAGE_INTEGRITY,
        Attr.FINGERPRINT,
    ]
    assert msg.get(Attr.SOFTWARE) == b"STUN test client"
    assert unpack(Attr.PRIORITY, msg.get(Attr.PRIORITY) or b"") == 0x6E0001FF
    assert unpack(Attr.ICE_CONTROLLED, msg.get(Attr.ICE_CONTROLLED) or b"") == 0x932FF9B151263B36
    assert msg.get(Attr.USERNAME) == b"evtj:h6vY"
    assert check_integrity(SAMPLE_REQUEST, msg, SHORT_TERM_KEY)
    assert not check_integrity(SAMPLE_REQUEST, msg, b"VOkJxbRl1RmTxUk/WvJxBT")
    assert check_fingerprint(SAMPLE_REQUEST)
    # the vector pads USERNAME with spaces; the encoder's pad byte reproduces it
    assert encode(msg, SHORT_TERM_KEY, "sha1", fingerprint=True, pad=0x20) == SAMPLE_REQUEST


@pytest.mark.parametrize(
    ("vector", "address"),
    [
        (SAMPLE_IPV4_RESPONSE, ("192.0.2.1", 32853)),
        (SAMPLE_IPV6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ],
)
def test_rfc5769_sample_responses(vector: bytes, address: tuple[str, int]) -> None:
    msg = decode(vector)
    assert (msg.method, msg.cls) == (Method.BINDING, Class.SUCCESS)
    assert msg.get(Attr.SOFTWARE) == b"test vector"
    raw = msg.get(Attr.XOR_MAPPED_ADDRESS)
    assert raw is not None
    assert unpack_xor_address(raw, msg.transaction_id) == address
    assert check_integrity(vector, msg, SHORT_TERM_KEY)
    assert check_fingerprint(vector)
    assert encode(msg, SHORT_TERM_KEY, "sha1", fingerprint=True, pad=0x20) == vector
    # and built from scratch, from the typed values alone
    built = Message(
        Method.BINDING,
        Class.SUCCESS,
        msg.transaction_id,
        (
            (Attr.SOFTWARE, pack(Attr.SOFTWARE, "test vector")),
            (Attr.XOR_MAPPED_ADDRESS, pack(Attr.XOR_MAPPED_ADDRESS, address, msg.transaction_id)),
        ),
    )
    assert encode(built, SHORT_TERM_KEY, fingerprint=True, pad=0x20) == vector


def test_rfc5769_long_term_request_needs_saslprep() -> None:
    msg = decode(SAMPLE_LONG_TERM_REQUEST)
    assert unpack(Attr.USERNAME, msg.get(Attr.USERNAME) or b"") == LT_USERNAME
    assert msg.get(Attr.NONCE) == b"f//499k954d6OL34oL9FSTvy64sA"
    assert msg.get(Attr.REALM) == b"example.org"
    assert saslprep(LT_PASSWORD) == "TheMatrIX"
    key = long_term_key(LT_USERNAME, LT_REALM, LT_PASSWORD)
    assert key == long_term_key(LT_USERNAME, LT_REALM, "TheMatrIX")
    assert check_integrity(SAMPLE_LONG_TERM_REQUEST, msg, key)
    # without SASLprep the key is wrong
    raw_key = hashlib.md5(f"{LT_USERNAME}:{LT_REALM}:{LT_PASSWORD}".encode()).digest()
    assert not check_integrity(SAMPLE_LONG_TERM_REQUEST, msg, raw_key)
    assert not check_fingerprint(SAMPLE_LONG_TERM_REQUEST)
    assert encode(msg, key) == SAMPLE_LONG_TERM_REQUEST


def test_rfc8489_sha256_request_with_userhash() -> None:
    msg = decode(SAMPLE_SHA256_REQUEST)
    assert msg.get(Attr.USERHASH) == userhash(LT_USERNAME, LT_REALM)
    assert unpack(Attr.PASSWORD_ALGORITHM, msg.get(Attr.PASSWORD_ALGORITHM) or b"") == (
        PasswordAlgorithm.SHA256,
        b"",
    )
    assert integrity_of(msg) == "sha256"
    key = long_term_key(LT_USERNAME, LT_REALM, LT_PASSWORD, PasswordAlgorithm.SHA256)
    assert check_integrity(SAMPLE_SHA256_REQUEST, msg, key)
    assert not check_integrity(
        SAMPLE_SHA256_REQUEST, msg, long_term_key(LT_USERNAME, LT_REALM, LT_PASSWORD)
    )
    assert encode(msg, key, "sha256") == SAMPLE_SHA256_REQUEST


# --- header and attribute rules ----------------------------------------------------


def test_message_type_interleaves_method_and_class() -> None:
    assert message_type(Method.BINDING, Class.REQUEST) == 0x0001
    assert message_type(Method.BINDING, Class.SUCCESS) == 0x0101
    assert message_type(Method.BINDING, Class.ERROR) == 0x0111
    assert message_type(Method.ALLOCATE, Class.ERROR) == 0x0113
    assert message_type(Method.SEND, Class.INDICATION) == 0x0016
    assert message_type(Method.DATA, Class.INDICATION) == 0x0017
    assert message_type(Method.CHANNEL_BIND, Class.SUCCESS) == 0x0109


@given(st.integers(0, 0xFFF), st.integers(0, 3))
def test_message_type_round_trip(method: int, cls: int) -> None:
    mtype = message_type(method, cls)
    assert mtype < 0x4000
    assert split_type(mtype) == (method, cls)


def _header(length: int, mtype: int = 0x0001) -> bytes:
    return mtype.to_bytes(2, "big") + length.to_bytes(2, "big") + b"\x21\x12\xa4\x42" + bytes(12)


BAD_MESSAGES = [
    (b"", "shorter"),
    (SAMPLE_REQUEST[:19], "shorter"),
    (b"\x40" + SAMPLE_REQUEST[1:], "first two bits"),
    (b"\x80" + SAMPLE_REQUEST[1:], "first two bits"),
    (SAMPLE_REQUEST[:4] + b"\x21\x12\xa4\x43" + SAMPLE_REQUEST[8:], "magic cookie"),
    (SAMPLE_REQUEST[:3] + b"\x57" + SAMPLE_REQUEST[4:], "multiple of 4"),
    (SAMPLE_REQUEST[:3] + b"\x5c" + SAMPLE_REQUEST[4:], "length says"),
    (SAMPLE_REQUEST + b"\x00\x00\x00\x00", "length says"),
    (SAMPLE_REQUEST[:-4], "length says"),
    (_header(4) + b"\x80\x22\x00\x08", "runs past the end"),
    (_header(8) + b"\x80\x22\x00\x05abcd", "runs past the end"),
    (_header(8) + b"\x80\x22\x00\x00\x80\x22\x00\x04", "runs past the end"),
]


@pytest.mark.parametrize(("data", "why"), BAD_MESSAGES)
def test_decode_rejects_malformed(data: bytes, why: str) -> None:
    with pytest.raises(StunError, match=why):
        decode(data)
    assert isinstance(StunError(), ValueError)


def test_padding_may_be_any_byte() -> None:
    msg = decode(SAMPLE_REQUEST)
    for pad in (0x00, 0xFF, 0x5A):
        data = encode(msg, SHORT_TERM_KEY, fingerprint=True, pad=pad)
        again = decode(data)
        assert again.attributes == msg.attributes[:4] + again.attributes[4:]
        assert again.get(Attr.USERNAME) == b"evtj:h6vY"
        assert check_integrity(data, again, SHORT_TERM_KEY)
        assert check_fingerprint(data)


def _attr(atype: int, value: bytes) -> bytes:
    return atype.to_bytes(2, "big") + len(value).to_bytes(2, "big") + value + bytes(-len(value) & 3)


def _message(*attrs: bytes) -> bytes:
    body = b"".join(attrs)
    return _header(len(body)) + body


def test_attributes_after_message_integrity_are_ignored() -> None:
    mi = _attr(Attr.MESSAGE_INTEGRITY, bytes(20))
    mi256 = _attr(Attr.MESSAGE_INTEGRITY_SHA256, bytes(32))
    fp = _attr(Attr.FINGERPRINT, bytes(4))
    soft = _attr(Attr.SOFTWARE, b"late")
    types = [t for t, _ in decode(_message(mi, soft, mi256, soft, fp, soft)).attributes]
    assert types == [Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256, Attr.FINGERPRINT]
    types = [t for t, _ in decode(_message(mi256, mi, soft, fp)).attributes]
    assert types == [Attr.MESSAGE_INTEGRITY_SHA256, Attr.FINGERPRINT]
    # a truncated attribute after them is still an error: the message is malformed
    with pytest.raises(StunError):
        decode(_message(mi, b"\x80\x22\x00\x08abcd"))


def test_integrity_over_a_prefix_and_truncated_sha256() -> None:
    key = b"secret"
    msg = Message(Method.ALLOCATE, Class.REQUEST, bytes(range(12)), ((Attr.SOFTWARE, b"abc"),))
    both = encode(msg, key, "both", fingerprint=True)
    decoded = decode(both)
    assert [ATTRIBUTES[t] for t, _ in decoded.attributes][-3:] == [
        Attr.MESSAGE_INTEGRITY,
        Attr.MESSAGE_INTEGRITY_SHA256,
        Attr.FINGERPRINT,
    ]
    assert check_integrity(both, decoded, key)
    assert not check_integrity(both, decoded, b"other")
    sha1_only = encode(msg, key, "sha1")
    assert check_integrity(sha1_only, decode(sha1_only), key)
    assert not check_integrity(encode(msg), decode(encode(msg)), key)
    # MESSAGE-INTEGRITY-SHA256 truncated to 16 bytes (RFC 8489 §14.6)
    body = _attr(Attr.SOFTWARE, b"abc")
    head = _header(len(body) + 4 + 16, 0x0003)
    covered = head + body
    mac = hmac.digest(key, covered, "sha256")[:16]
    short = covered + _attr(Attr.MESSAGE_INTEGRITY_SHA256, mac)
    assert check_integrity(short, decode(short), key)
    for bad_len in (12, 18, 36):
        bad = _message(body, _attr(Attr.MESSAGE_INTEGRITY_SHA256, bytes(bad_len)))
        assert not check_integrity(bad, decode(bad), key)
    assert not check_integrity(
        _message(_attr(Attr.MESSAGE_INTEGRITY, bytes(16))),
        decode(_message(_attr(Attr.MESSAGE_INTEGRITY, bytes(16)))),
        key,
    )


def test_fingerprint_is_crc32_xor_stun() -> None:
    data = encode(Message(Method.BINDING, Class.REQUEST, bytes(12)), fingerprint=True)
    assert int.from_bytes(data[-4:], "big") == zlib.crc32(data[:-8]) ^ 0x5354554E
    assert check_fingerprint(data)
    assert not check_fingerprint(data[:-1] + bytes([data[-1] ^ 1]))
    assert not check_fingerprint(encode(Message(Method.BINDING, Class.REQUEST, bytes(12))))


def test_encode_refuses_what_cannot_be_sent() -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        encode(Message(1, 0, bytes(11)))
    with pytest.raises(ValueError, match="out of range"):
        encode(Message(0x1000, 0, bytes(12)))
    with pytest.raises(ValueError, match="needs a key"):
        encode(Message(1, 0, bytes(12)), integrity="sha256")
    with pytest.raises(ValueError, match="65535"):
        encode(Message(1, 0, bytes(12), ((Attr.DATA, bytes(70000)),)))


# --- every attribute kind, round trip ------------------------------------------------

_ADDRESSES = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
_PORTS = st.integers(0, 65535)
_TEXT = st.text(max_size=60)
KIND_VALUES: dict[Kind, st.SearchStrategy[object]] = {
    Kind.ADDRESS: st.tuples(_ADDRESSES, _PORTS),
    Kind.XOR_ADDRESS: st.tuples(_ADDRESSES, _PORTS),
    Kind.STRING: _TEXT,
    Kind.BYTES: st.binary(max_size=300),
    Kind.EMPTY: st.none(),
    Kind.UINT32: st.integers(0, 2**32 - 1),
    Kind.UINT64: st.integers(0, 2**64 - 1),
    Kind.BYTE_RFFU: st.integers(0, 255),
    Kind.CHANNEL: st.integers(0, 65535),
    Kind.EVEN_PORT: st.booleans(),
    Kind.ERROR_CODE: st.tuples(st.integers(300, 699), _TEXT),
    Kind.ADDRESS_ERROR_CODE: st.tuples(st.integers(0, 255), st.integers(300, 699), _TEXT),
    Kind.ATTR_LIST: st.lists(st.integers(0, 65535), max_size=10).map(tuple),
    Kind.ALGORITHMS: st.lists(
        st.tuples(st.integers(0, 65535), st.binary(max_size=9)), max_size=4
    ).map(tuple),
    Kind.ALGORITHM: st.tuples(st.integers(0, 65535), st.binary(max_size=9)),
    Kind.ICMP: st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 2**32 - 1)),
}


def test_every_kind_has_a_strategy() -> None:
    assert set(KIND_VALUES) == set(Kind)
    names = {a.rfc_name for a in Attr}
    listed = (
        "MAPPED-ADDRESS XOR-MAPPED-ADDRESS USERNAME USERHASH MESSAGE-INTEGRITY "
        "MESSAGE-INTEGRITY-SHA256 FINGERPRINT ERROR-CODE REALM NONCE PASSWORD-ALGORITHMS "
        "PASSWORD-ALGORITHM UNKNOWN-ATTRIBUTES SOFTWARE ALTERNATE-SERVER ALTERNATE-DOMAIN "
        "PRIORITY USE-CANDIDATE ICE-CONTROLLED ICE-CONTROLLING CHANNEL-NUMBER LIFETIME "
        "XOR-PEER-ADDRESS DATA XOR-RELAYED-ADDRESS REQUESTED-ADDRESS-FAMILY EVEN-PORT "
        "REQUESTED-TRANSPORT DONT-FRAGMENT RESERVATION-TOKEN ADDITIONAL-ADDRESS-FAMILY "
        "ADDRESS-ERROR-CODE ICMP"
    )
    assert set(listed.split()) <= names


@pytest.mark.parametrize("attr", list(Attr), ids=lambda a: a.rfc_name)
@settings(max_examples=60)
@given(data=st.data(), tid=st.binary(min_size=12, max_size=12))
def test_attribute_round_trip(attr: Attr, data: st.DataObject, tid: bytes) -> None:
    value = data.draw(KIND_VALUES[attr.kind])
    raw = pack(attr, value, tid)
    assert unpack(attr, raw, tid) == value
    # and through a whole message, padded with junk
    msg = Message(Method.BINDING, Class.INDICATION, tid, ((attr, raw),))
    wire = encode(msg, pad=0xA5)
    assert len(wire) % 4 == 0
    if attr not in (Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256, Attr.FINGERPRINT):
        assert unpack(attr, decode(wire).attributes[0][1], tid) == value


def test_xor_address_depends_on_transaction_id_only_for_ipv6() -> None:
    v4, v6 = ("192.0.2.1", 32853), ("2001:db8::1", 9)
    assert pack(Attr.XOR_PEER_ADDRESS, v4, bytes(12)) == pack(Attr.XOR_PEER_ADDRESS, v4, b"x" * 12)
    assert pack(Attr.XOR_PEER_ADDRESS, v6, bytes(12)) != pack(Attr.XOR_PEER_ADDRESS, v6, b"x" * 12)
    with pytest.raises(ValueError, match="not an IP"):
        pack(Attr.XOR_PEER_ADDRESS, ("example.org", 1))
    with pytest.raises(ValueError, match="port"):
        pack(Attr.MAPPED_ADDRESS, ("192.0.2.1", 70000))


@pytest.mark.parametrize(
    ("attr", "raw"),
    [
        (Attr.MAPPED_ADDRESS, b"\x00\x01\x00\x01\x01\x02\x03"),
        (Attr.MAPPED_ADDRESS, b"\x00\x03\x00\x01\x01\x02\x03\x04"),
        (Attr.XOR_MAPPED_ADDRESS, b"\x00\x02\x00\x01" + bytes(4)),
        (Attr.USERNAME, b"\xff\xfe"),
        (Attr.LIFETIME, b"\x00\x00\x02"),
        (Attr.ICE_CONTROLLED, bytes(7)),
        (Attr.REQUESTED_TRANSPORT, b"\x11"),
        (Attr.CHANNEL_NUMBER, b"\x40\x00"),
        (Attr.EVEN_PORT, b"\x80\x00"),
        (Attr.USE_CANDIDATE, b"\x00"),
        (Attr.ERROR_CODE, b"\x00\x00\x04"),
        (Attr.ERROR_CODE, b"\x00\x00\x02\x00"),
        (Attr.ERROR_CODE, b"\x00\x00\x04\x64"),
        (Attr.UNKNOWN_ATTRIBUTES, b"\x00\x01\x00"),
        (Attr.PASSWORD_ALGORITHM, b"\x00\x01\x00\x04\x00"),
        (Attr.PASSWORD_ALGORITHM, b""),
        (Attr.PASSWORD_ALGORITHMS, b"\x00\x01"),
        (Attr.ICMP, bytes(4)),
    ],
)
def test_malformed_values_raise_stun_error(attr: Attr, raw: bytes) -> None:
    with pytest.raises(StunError):
        unpack(attr, raw, bytes(12))


_TRAILER = (Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256, Attr.FINGERPRINT)
_ATTR_TYPES = st.integers(0, 0xFFFF).filter(lambda t: t not in _TRAILER)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    attrs = draw(st.lists(st.tuples(_ATTR_TYPES, st.binary(max_size=40)), max_size=8))
    return Message(
        draw(st.integers(0, 0xFFF)),
        draw(st.integers(0, 3)),
        draw(st.binary(min_size=12, max_size=12)),
        tuple(attrs),
    )


@settings(max_examples=300)
@given(
    msg=messages(),
    key=st.binary(min_size=1, max_size=40),
    integrity=st.sampled_from([None, "sha1", "sha256", "both"]),
    fingerprint=st.booleans(),
    pad=st.integers(0, 255),
)
def test_message_round_trip(
    msg: Message, key: bytes, integrity: str | None, fingerprint: bool, pad: int
) -> None:
    wire = encode(msg, key if integrity else None, integrity, fingerprint, pad)  # type: ignore[arg-type]
    back = decode(wire)
    assert (back.method, back.cls, back.transaction_id) == (
        msg.method,
        msg.cls,
        msg.transaction_id,
    )
    assert back.attributes[: len(msg.attributes)] == msg.attributes
    assert check_fingerprint(wire) == fingerprint
    assert check_integrity(wire, back, key) == (integrity is not None)
    assert encode(back, key if integrity else None, integrity, fingerprint, pad) == wire  # type: ignore[arg-type]
    if integrity is not None:
        tampered = bytearray(wire)
        tampered[8] ^= 0x01  # the transaction id is covered by the HMAC
        assert not check_integrity(bytes(tampered), decode(bytes(tampered)), key)


# --- SASLprep --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_", "expected"),
    [
        ("user", "user"),
        ("I\u00adX", "IX"),  # soft hyphen maps to nothing
        ("\u00aa", "a"),  # NFKC
        ("\u2168", "IX"),  # NFKC
        ("a\u00a0b", "a b"),  # non-ASCII space maps to space
        ("a\u200bb", "ab"),  # zero width space maps to nothing
        ("\u0627\u0628", "\u0627\u0628"),  # right-to-left only
        ("", ""),
    ],
)
def test_saslprep_maps_and_normalises(given_: str, expected: str) -> None:
    assert saslprep(given_) == expected


@pytest.mark.parametrize(
    "bad",
    ["a\u0007b", "\u007f", "a\u0085", "\ue000", "\ufdd0", "\u200e", "\U000e0001", "\u0627a"],
)
def test_saslprep_prohibits(bad: str) -> None:
    with pytest.raises(ValueError, match="SASLprep"):
        saslprep(bad)


def test_long_term_key_algorithms() -> None:
    assert long_term_key("u", "r", "p") == hashlib.md5(b"u:r:p").digest()
    assert (
        long_term_key("u", "r", "p", PasswordAlgorithm.SHA256) == hashlib.sha256(b"u:r:p").digest()
    )
    with pytest.raises(ValueError, match="algorithm"):
        long_term_key("u", "r", "p", 3)


# --- ChannelData and the demultiplexer ------------------------------------------------


def test_demultiplex_by_first_byte() -> None:
    assert is_stun(SAMPLE_REQUEST[0])
    assert not is_channel_data(SAMPLE_REQUEST[0])
    assert all(is_stun(b) for b in range(0x40))
    assert all(is_channel_data(b) and not is_stun(b) for b in range(0x40, 0x80))
    assert not any(is_stun(b) or is_channel_data(b) for b in range(0x80, 0x100))


def test_channel_data_framing() -> None:
    udp = encode_channel_data(0x4000, b"\x09\x08\x07\x06\x05")
    assert udp == bytes.fromhex("40000005") + b"\x09\x08\x07\x06\x05"
    tcp = encode_channel_data(0x4FFF, b"\x09\x08\x07\x06\x05", pad=True)
    assert tcp == bytes.fromhex("4fff0005") + b"\x09\x08\x07\x06\x05" + bytes(3)
    assert decode_channel_data(udp) == (0x4000, b"\x09\x08\x07\x06\x05")
    assert decode_channel_data(tcp) == (0x4FFF, b"\x09\x08\x07\x06\x05")
    assert decode_channel_data(bytes.fromhex("40010000")) == (0x4001, b"")
    # RFC 5766's upper channels (coturn's turnutils_uclient uses them) are still ChannelData
    assert decode_channel_data(bytes.fromhex("7fff 0001 aa")) == (0x7FFF, b"\xaa")
    for bad in (
        b"\x40\x00\x00",
        bytes.fromhex("8000 0000"),
        bytes.fromhex("3fff 0000"),
        bytes.fromhex("4000 0005") + b"abcd",
    ):
        with pytest.raises(StunError):
            decode_channel_data(bad)
    for channel in (CHANNEL_MIN - 1, LEGACY_CHANNEL_MAX + 1):
        with pytest.raises(ValueError, match="outside"):
            encode_channel_data(channel, b"")


def test_stream_framer_cuts_stun_and_padded_channel_data() -> None:
    cd = encode_channel_data(0x4001, b"hello", pad=True)
    stream = SAMPLE_REQUEST + cd + SAMPLE_IPV4_RESPONSE + encode_channel_data(0x4002, b"", pad=True)
    framer = StreamFramer()
    frames = []
    for i in range(0, len(stream), 7):
        frames += framer.feed(stream[i : i + 7])
    assert frames == [SAMPLE_REQUEST, cd, SAMPLE_IPV4_RESPONSE, bytes.fromhex("40020000")]
    assert framer.buffered == 0
    assert framer.feed(SAMPLE_REQUEST[:30]) == []
    assert framer.buffered == 30
    with pytest.raises(StunError, match="neither"):
        StreamFramer().feed(b"\x80\x00\x00\x00")


# --- fuzzing: 100,000+ inputs, each a Message or a StunError ---------------------------


SEEDS = st.integers(0, 2**64 - 1)
"""Each fuzz example is a seed for a fast ``random.Random``; a failure names its seed."""


def _decode_all_the_way(data: bytes) -> None:
    """Decode, check and unpack everything; only StunError may escape."""
    try:
        msg = decode(data)
    except StunError:
        return
    assert isinstance(msg, Message)
    assert isinstance(check_integrity(data, msg, b"key"), bool)
    assert isinstance(check_fingerprint(data), bool)
    for atype, raw in msg.attributes:
        attr = ATTRIBUTES.get(atype)
        if attr is not None:
            with contextlib.suppress(StunError):
                unpack(attr, raw, msg.transaction_id)


def _random_input(rng: random.Random) -> bytes:
    if rng.random() < 0.3:
        return rng.randbytes(rng.randrange(0, 120))
    attrs = []
    for _ in range(rng.randrange(0, 6)):
        atype = rng.choice(list(ATTRIBUTES)) if rng.random() < 0.8 else rng.randrange(65536)
        attrs.append(_attr(atype, rng.randbytes(rng.randrange(0, 30))))
    body = b"".join(attrs)
    mtype = rng.randrange(0x4000) if rng.random() < 0.9 else rng.randrange(0x10000)
    return _header(len(body), mtype)[:8] + rng.randbytes(12) + body


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=SEEDS)
def test_fuzz_random_bytes(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(30):
        _decode_all_the_way(_random_input(rng))


def _generated(rng: random.Random) -> bytes:
    attrs = tuple(
        (rng.choice(list(ATTRIBUTES)), rng.randbytes(rng.randrange(0, 24)))
        for _ in range(rng.randrange(0, 5))
    )
    msg = Message(rng.randrange(0x1000), rng.randrange(4), rng.randbytes(12), attrs)
    return encode(msg, b"key" if rng.random() < 0.5 else None, fingerprint=rng.random() < 0.5)


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(6)
        if op == 0 and out:  # flip bits
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif op == 1 and out:  # cut
            del out[rng.randrange(len(out)) :]
        elif op == 2:  # insert
            at = rng.randrange(len(out) + 1)
            out[at:at] = rng.randbytes(rng.randrange(1, 9))
        elif op == 3 and len(out) >= 4:  # rewrite the message length
            out[2:4] = rng.randrange(0, 0x10000).to_bytes(2, "big")
        elif op == 4 and len(out) > 24:  # rewrite an attribute length
            at = 20 + 4 * rng.randrange((len(out) - 20) // 4)
            out[at + 2 : at + 4] = rng.randrange(0, 0x100).to_bytes(2, "big")
        elif op == 5 and out:  # a random byte
            out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=SEEDS)
def test_fuzz_mutated_messages(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(30):
        base = rng.choice(VECTORS) if rng.random() < 0.5 else _generated(rng)
        _decode_all_the_way(mutate(rng, base))


def test_fuzz_truncations() -> None:
    for vector in VECTORS:
        for end in range(len(vector)):
            with pytest.raises(StunError):
                decode(vector[:end])
            _decode_all_the_way(vector[:end])
        assert decode(vector).transaction_id == vector[8:20]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=SEEDS)
def test_fuzz_stream_and_channel_data(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(20):
        parts = []
        for _ in range(rng.randrange(1, 5)):
            roll = rng.random()
            if roll < 0.4:
                parts.append(
                    encode_channel_data(
                        rng.randrange(CHANNEL_MIN, CHANNEL_MAX + 1),
                        rng.randbytes(rng.randrange(0, 40)),
                        pad=True,
                    )
                )
            elif roll < 0.8:
                parts.append(rng.choice(VECTORS))
            else:
                parts.append(rng.randbytes(rng.randrange(0, 30)))
        stream = b"".join(parts)
        if rng.random() < 0.5:
            stream = mutate(rng, stream)
        framer = StreamFramer()
        try:
            pos = 0
            while pos < len(stream):
                step = rng.randrange(1, 64)
                for frame in framer.feed(stream[pos : pos + step]):
                    if is_channel_data(frame[0]):
                        try:
                            channel, payload = decode_channel_data(frame)
                        except StunError:
                            continue
                        assert CHANNEL_MIN <= channel <= LEGACY_CHANNEL_MAX
                        assert len(payload) <= len(frame) - 4
                    else:
                        assert is_stun(frame[0])
                        _decode_all_the_way(frame)
                pos += step
        except StunError:
            pass
        assert framer.buffered < 20 + 65536
