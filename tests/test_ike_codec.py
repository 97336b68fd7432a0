"""The IKEv2 codec: every payload round-trips (hypothesis), whole messages round-trip,
and a seeded fuzz run of random and mutated messages raises nothing but
IkeDecodeError."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from anyedge.proto.ike import codec as c
from anyedge.proto.ike.codec import IkeDecodeError

u8, u16 = st.integers(0, 255), st.integers(0, 65535)
blob = st.binary(max_size=80)

transforms = st.builds(c.Transform, u8, u16, st.one_of(st.none(), u16))
proposals = st.builds(
    c.Proposal,
    st.integers(1, 255),
    st.sampled_from([1, 2, 3]),
    st.sampled_from([b"", b"abcd", b"12345678"]),
    st.lists(transforms, max_size=6).map(tuple),
)
addr_pair = st.one_of(
    st.tuples(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4)),
    st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16)),
)
selectors = st.builds(lambda a, p, s, e: c.Selector(a[0], a[1], p, s, e), addr_pair, u8, u16, u16)
spi4 = st.binary(min_size=4, max_size=4)

PAYLOADS = {
    "SA": st.builds(c.SA, st.lists(proposals, min_size=1, max_size=4).map(tuple)),
    "KE": st.builds(c.KE, u16, blob),
    "ID": st.builds(c.Identification, u8, blob, st.booleans()),
    "AUTH": st.builds(c.Auth, u8, blob),
    "Nonce": st.builds(c.Nonce, blob),
    "Notify": st.builds(c.Notify, u16, blob, u8, st.sampled_from([b"", b"abcd", b"12345678"])),
    "Delete": st.one_of(
        st.builds(c.Delete, u8, st.lists(spi4, max_size=5).map(tuple)),
        st.builds(c.Delete, u8, st.just(())),
    ),
    "Vendor": st.builds(c.VendorID, blob),
    "CERT": st.builds(c.Cert, u8, blob, st.booleans()),
    "TS": st.builds(c.TrafficSelectors, st.lists(selectors, max_size=5).map(tuple), st.booleans()),
    "Unknown": st.builds(c.Unknown, st.integers(48, 255), blob, st.booleans()),
}
any_payload = st.one_of(*PAYLOADS.values())


def _roundtrip(p: object) -> None:
    first, data = c.encode_chain([p])
    assert c.decode_chain(first, data) == [p]


@given(PAYLOADS["SA"])
def test_sa_roundtrip(p: c.SA) -> None:
    _roundtrip(p)


@given(PAYLOADS["KE"])
def test_ke_roundtrip(p: c.KE) -> None:
    _roundtrip(p)


@given(PAYLOADS["ID"])
def test_id_roundtrip(p: c.Identification) -> None:
    _roundtrip(p)


@given(PAYLOADS["AUTH"])
def test_auth_roundtrip(p: c.Auth) -> None:
    _roundtrip(p)


@given(PAYLOADS["Nonce"])
def test_nonce_roundtrip(p: c.Nonce) -> None:
    _roundtrip(p)


@given(PAYLOADS["Notify"])
def test_notify_roundtrip(p: c.Notify) -> None:
    _roundtrip(p)


@given(PAYLOADS["Delete"])
def test_delete_roundtrip(p: c.Delete) -> None:
    _roundtrip(p)


@given(PAYLOADS["CERT"])
def test_cert_roundtrip(p: c.Cert) -> None:
    _roundtrip(p)


@given(PAYLOADS["Vendor"])
def test_vendor_roundtrip(p: c.VendorID) -> None:
    _roundtrip(p)


@given(PAYLOADS["TS"])
def test_ts_roundtrip(p: c.TrafficSelectors) -> None:
    _roundtrip(p)


@given(PAYLOADS["Unknown"])
def test_unknown_roundtrip(p: c.Unknown) -> None:
    _roundtrip(p)


@given(
    st.binary(min_size=8, max_size=8),
    st.binary(min_size=8, max_size=8),
    st.sampled_from([34, 35, 36, 37]),
    st.sampled_from([0, 8, 32, 40]),
    st.integers(0, 2**32 - 1),
    st.lists(any_payload, max_size=6),
)
def test_message_roundtrip(
    spi_i: bytes, spi_r: bytes, exchange: int, flags: int, mid: int, payloads: list[object]
) -> None:
    m = c.Message(spi_i, spi_r, exchange, flags, mid, payloads)
    back = c.decode_message(c.encode_message(m))
    assert (back.spi_i, back.spi_r, back.exchange, back.flags, back.message_id) == (
        spi_i,
        spi_r,
        exchange,
        flags,
        mid,
    )
    assert back.payloads == payloads


def test_encrypted_payload_ends_the_chain() -> None:
    m = c.Message(b"i" * 8, b"r" * 8, c.IKE_AUTH, 8, 1, [c.Encrypted(c.PT_IDI, b"\x01" * 40)])
    back = c.decode_message(c.encode_message(m))
    assert back.payloads == [c.Encrypted(c.PT_IDI, b"\x01" * 40)]


def _seeds() -> list[bytes]:
    from anyedge.proto.ike.initiator import Initiator, esp_proposal

    sel = (c.Selector(bytes(4), b"\xff" * 4),)
    i = Initiator(b"k" * 16, b"x", sel, sel)
    inner = [
        c.Identification(c.ID_FQDN, b"customer"),
        c.Auth(2, b"a" * 32),
        c.SA((esp_proposal(b"abcd"),)),
        c.TrafficSelectors(sel, True),
        c.TrafficSelectors(sel, False),
        c.Notify(c.REKEY_SA, b"", 3, b"abcd"),
        c.Delete(3, (b"abcd", b"efgh")),
        c.VendorID(b"v"),
        c.Cert(c.CERT_X509_SIGNATURE, b"0" * 40),
        c.Cert(c.CERT_X509_SIGNATURE, b"h" * 20, request=True),
        c.Unknown(99, b"zz", True),
    ]
    msgs = [i.sa_init()]
    for k in range(1, len(inner) + 1):
        msgs.append(c.encode_message(c.Message(b"i" * 8, b"r" * 8, c.IKE_AUTH, 8, 1, inner[:k])))
    return msgs


FUZZ_INPUTS = 100_000


def test_fuzz_decoder_raises_only_its_own_error() -> None:
    """100,000 inputs (seeded): a third random bytes, the rest valid messages with bytes
    flipped, inserted, deleted or truncated.  Each must decode or raise IkeDecodeError."""
    rng = random.Random(7296)
    seeds = _seeds()
    decoded = rejected = 0
    for n in range(FUZZ_INPUTS):
        if n % 3 == 0:
            data = rng.randbytes(rng.randrange(0, 120))
            if n % 2:  # keep the header plausible so the payload walk is reached
                data = (
                    bytes(16)
                    + bytes([rng.choice([33, 34, 40, 41, 44, 46]), 0x20, 34, 8])
                    + bytes(4)
                    + (28 + len(data)).to_bytes(4, "big")
                    + data
                )
        else:
            b = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(4)
                pos = rng.randrange(len(b)) if b else 0
                if op == 0 and b:
                    b[pos] = rng.randrange(256)
                elif op == 1:
                    b[pos:pos] = rng.randbytes(rng.randrange(1, 5))
                elif op == 2 and b:
                    del b[pos : pos + rng.randrange(1, 5)]
                else:
                    del b[pos:]
            if (
                n % 5 == 0 and len(b) >= c.HEADER_LEN
            ):  # fix up the length so the payloads are walked
                b[24:28] = len(b).to_bytes(4, "big")
            data = bytes(b)
        try:
            c.decode_message(data)
            decoded += 1
        except IkeDecodeError:
            rejected += 1
    assert decoded + rejected == FUZZ_INPUTS
    assert decoded > 1000
    assert rejected > 1000
