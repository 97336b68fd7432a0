"""User-space ESP: AES-GCM packets against the published ESP test vectors, the 64-packet
anti-replay window, and the endpoint's routing, counters and per-server partition of
outbound sequence numbers."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anyedge.proto.esp import (
    EspEndpoint,
    EspError,
    GcmKey,
    ReplayWindow,
    classify,
    open_packet,
    seal,
)
from anyedge.proto.ike import ChildSA
from ike_support import child, ip4, mirror

H = bytes.fromhex

# draft-mcgrew-gcm-test-01 ("GCM Test Vectors for IPsec"), whole ESP packets: the
# "plaintext" there includes the ESP trailer (padding, pad length, next header).
VECTORS = [
    {  # test case 2: AES-128
        "key": "feffe9928665731c6d6a8f9467308308cafebabe",
        "spi": 0x0000A5F8,
        "seq": 0x0A,
        "iv": "facedbaddecaf888",
        "plain": "4500003e698f000080114dccc0a80102c0a801010a980035002a2343b2d00100"
        "00010000000000000373697009637962"
        "65726369747902646b00000100010001",
        "packet": "0000a5f80000000afacedbaddecaf888"
        "deb22cd9b07c72c16e3a65beeb8df304a5a5897d33ae530f1ba76d5d114d2a5c"
        "3de81827c10e9a4f51330d0eec416642cfbb85a5b47e48a4ec3b9ba95d918bd1"
        "83b70d3aa8bc6ee4c309e9d85a41ad4a",
    },
    {  # test case 3: AES-256
        "key": "abbccddef00112233445566778899aababbccddef00112233445566778899aab11223344",
        "spi": 0x4A2CBFE3,
        "seq": 2,
        "iv": "0102030405060708",
        "plain": "4500003069a6400080062690c0a801029389155e0a9e008b2dc57ee000000000"
        "7002400020bf0000020405b40101040201020201",
        "packet": "4a2cbfe3000000020102030405060708"
        "ff425c9b724599df7a3bcd510194e00d6a78107f1b0b1cbf06efae9d65a5d763"
        "748a637985771d347f0545659f14e99def842d8e"
        "b335f4eecfdbf831824b4c4915956c96",
    },
]


@pytest.mark.parametrize("v", VECTORS, ids=["case2-aes128", "case3-aes256"])
def test_published_esp_vectors(v: dict) -> None:  # type: ignore[type-arg]
    key = GcmKey(H(v["key"]))
    plain = H(v["plain"])
    pad_len, nh = plain[-2], plain[-1]
    inner = plain[: -2 - pad_len]
    assert seal(key, v["spi"], v["seq"], inner, next_header=nh, iv=H(v["iv"])) == H(v["packet"])
    assert open_packet(key, H(v["packet"])) == (inner, nh)
    tampered = bytearray(H(v["packet"]))
    tampered[20] ^= 0x80
    with pytest.raises(EspError):
        open_packet(key, bytes(tampered))


@given(st.binary(min_size=20, max_size=300), st.integers(1, 2**32 - 1))
def test_seal_open_roundtrip(inner: bytes, seq: int) -> None:
    key = GcmKey(bytes(range(36)))
    packet = seal(key, 0x1234, seq, inner)
    assert open_packet(key, packet)[0] == inner
    assert (len(packet) - 16 - 16) % 4 == 0  # payload, padding and trailer fill 4-byte words


def test_port_4500_demultiplexing() -> None:
    assert classify(b"\x00\x00\x00\x00" + b"ike") == "ike"
    assert classify(b"\xff") == "keepalive"
    assert classify(b"\x00\x00\x01\x00rest") == "esp"


def test_replay_window_rfc4303() -> None:
    w = ReplayWindow()
    assert not w.check(0)
    for s in (1, 2, 5, 3):
        assert w.check(s)
        w.accept(s)
    assert not w.check(3)
    assert not w.check(5)
    assert w.check(4)
    w.accept(100)
    assert not w.check(36)  # 64 behind the top: left behind
    assert w.check(37)
    assert w.check(99)
    w.accept(37)
    assert not w.check(37)
    w.accept(1000)
    assert w.top == 1000
    assert not w.check(100)


def test_endpoint_routes_by_selector_and_counts_replays() -> None:
    ch = child()
    edge, peer = EspEndpoint(), EspEndpoint()
    edge.install(ch)
    peer.install(mirror(ch))
    assert edge.encrypt(ip4("198.51.100.10", "100.64.0.1"), 0.0) is None
    assert edge.counters.no_sa == 1
    used, packet = edge.encrypt(ip4("198.51.100.10", "203.0.113.10"), 0.0)  # type: ignore[misc]
    assert used is ch
    assert peer.decrypt(packet) == ip4("198.51.100.10", "203.0.113.10")
    _, up = peer.encrypt(ip4("203.0.113.10", "198.51.100.10"), 0.0)  # type: ignore[misc]
    assert edge.decrypt(up) is not None
    for _ in range(3):
        assert edge.decrypt(up) is None
    assert edge.counters.replayed == 3
    assert edge.counters.decrypted == 1
    forged = bytearray(peer.encrypt(ip4("203.0.113.10", "198.51.100.10"), 0.0)[1])  # type: ignore[index]
    forged[-1] ^= 1
    assert edge.decrypt(bytes(forged)) is None
    assert edge.counters.bad_icv == 1
    assert edge.decrypt(b"\x00\x00\x99\x99" + bytes(40)) is None
    assert edge.counters.unknown_spi == 1
    edge.remove(ch.spi_in)
    assert edge.decrypt(up) is None
    assert edge.counters.unknown_spi == 2


def test_servers_never_share_a_sequence_number() -> None:
    ch = child()
    servers = [EspEndpoint(k, 3) for k in range(3)]
    seen: set[int] = set()
    for ep in servers:
        ep.install(ch)
        for _ in range(50):
            _, packet = ep.encrypt(ip4("198.51.100.10", "203.0.113.10"), 0.0)  # type: ignore[misc]
            seq = int.from_bytes(packet[4:8], "big")
            assert seq not in seen
            assert seq % 3 == (ep.index + 1) % 3
            seen.add(seq)
    assert len(seen) == 150
    with pytest.raises(ValueError, match="server index 3 of 3"):
        EspEndpoint(3, 3)


def test_a_server_taking_over_starts_ahead_of_the_one_before() -> None:
    """Time-anchored counters: server 1 takes over at t = 2 s after server 0 sent 500
    packets in the first second; its first number is above all of server 0's, so the
    peer's replay window takes it.  Numbers never wrap."""
    ch = child()
    a, b, peer = EspEndpoint(0, 2), EspEndpoint(1, 2), EspEndpoint()
    for ep in (a, b):
        ep.install(ch)
    peer.install(mirror(ch))
    sent = [a.encrypt(ip4("198.51.100.10", "203.0.113.10"), k / 500)[1] for k in range(500)]  # type: ignore[index]
    assert all(peer.decrypt(p) for p in sent)
    _, first_b = b.encrypt(ip4("198.51.100.10", "203.0.113.10"), 2.0)  # type: ignore[misc]
    assert int.from_bytes(first_b[4:8], "big") > max(int.from_bytes(p[4:8], "big") for p in sent)
    assert peer.decrypt(first_b) is not None
    assert peer.counters.replayed == 0
    assert a.encrypt(ip4("198.51.100.10", "203.0.113.10"), 2.0**32) is None
    assert a.counters.exhausted == 1


def test_rekeyed_sa_takes_over_sending() -> None:
    old = child(0x1001, 0x2002)
    new = ChildSA(
        0x3003,
        0x4004,
        os.urandom(36),
        os.urandom(36),
        old.ts_remote,
        old.ts_local,
        old.peer,
        old.ike_spi,
        1.0,
        replaces=old.spi_in,
    )
    edge = EspEndpoint()
    edge.install(old)
    edge.install(new)
    used, packet = edge.encrypt(ip4("198.51.100.10", "203.0.113.10"), 0.0)  # type: ignore[misc]
    assert used is new
    assert packet[:4] == (0x4004).to_bytes(4, "big")
    assert set(edge.inbound) == {0x1001, 0x3003}  # the old SA still decrypts until it is deleted


def test_child_record_roundtrip() -> None:
    ch = child()
    assert ChildSA.from_dict(ch.to_dict()) == ch
