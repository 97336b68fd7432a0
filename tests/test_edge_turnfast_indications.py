"""Send and Data indications in TURN's kernel fast path (``bpf/turn_indications.h``) on
crafted frames, with ``BPF_PROG_TEST_RUN``, in the namespace of two that
``test_edge_turnfast.py`` uses (the relay 192.0.2.1 on ``eth0``, everything else through
192.0.2.2).

A Send indication -- built by the project's STUN encoder, its attributes in several
orders, with DONT-FRAGMENT and comprehension-optional attributes among them -- must leave
from the relayed address to the peer as exactly its DATA; a permitted peer's datagram
must leave for the client as a Data indication that the project's STUN decoder reads
back (XOR-PEER-ADDRESS, DATA, zero padding) and whose bytes are those the core would
have sent but for the random transaction id.  Every frame that comes out is rebuilt by
scapy with its checksums recomputed and must be the same bytes.  Whatever the maps do
not permit, and every truncated or malformed Send indication, must pass to the stack
unchanged; mutated messages either pass unchanged or are relayed as the core would
relay them, never otherwise.  FINGERPRINT is checked in the program (CRC-32, as the
core checks it): a message with a right one is relayed, with a wrong one passed.
"""

from __future__ import annotations

import ctypes
import os
import random
import re
import subprocess
import time
import zlib
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from anyedge.edge import build
from anyedge.edge.libbpf import XDP_PASS, XDP_TX
from anyedge.edge.turnfast import (
    DataKey,
    DataKey6,
    DataValue,
    DataValue6,
    RelayedChannel,
    RelayedPermission,
    SendKey,
    SendKey6,
    SendValue,
    SendValue6,
    Usage,
)
from anyedge.proto.stun import (
    MAGIC_COOKIE,
    Attr,
    Class,
    Message,
    Method,
    check_fingerprint,
    decode,
    encode,
    pack_xor_address,
    unpack_xor_address,
)
from edge_netns import ADDR_A
from edge_packets import udp4, udp6
from test_edge_turnfast import Lab, relay_program

pytestmark = pytest.mark.lab

RELAY = ADDR_A
CLIENT, PEER = ("198.51.100.10", 40000), ("203.0.113.5", 6000)
LISTENER, RELAYED = (RELAY, 3478), (RELAY, 50000)
PERM = RelayedPermission(client=CLIENT, server=LISTENER, relay=RELAYED, peer=PEER[0])
RELAY6 = "2001:db8::1"
CLIENT6, PEER6 = ("2001:db8:1::10", 40000), ("2001:db8:2::5", 6000)
PERM6 = RelayedPermission(CLIENT6, (RELAY6, 3478), (RELAY6, 50000), PEER6[0])
HOUR_NS = 3600 * 10**9
SOFTWARE = (int(Attr.SOFTWARE), b"anyedge test")
DONT_FRAGMENT = (int(Attr.DONT_FRAGMENT), b"")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with relay_program(f"aetfi{os.getpid()}") as it:
        yield it


@pytest.fixture
def permitted(lab: Lab) -> Iterator[Lab]:
    fast = lab[0]
    fast.permit(PERM, time.monotonic_ns() + HOUR_NS)
    fast.permit(PERM6, time.monotonic_ns() + HOUR_NS)
    try:
        yield lab
    finally:
        fast.unpermit(PERM)
        fast.unpermit(PERM6)


def run(lab: Lab, frame: bytes) -> tuple[int, bytes]:
    r = lab[0].program.test_run(frame, ingress_ifindex=lab[1])
    return r.retval, r.data


def rebuilt(frame: bytes) -> bytes:
    """``frame`` as scapy builds it again with its own IP and UDP checksums."""
    pkt = Ether(frame)
    if IP in pkt:
        del pkt[IP].chksum
    if pkt[UDP].chksum != 0:
        del pkt[UDP].chksum
    return bytes(pkt.__class__(bytes(pkt)))


def send_indication(
    peer: tuple[str, int],
    data: bytes,
    order: str = "pd",
    tid: bytes = b"\x5a" * 12,
    fingerprint: bool = False,
) -> bytes:
    """A Send indication whose attributes come in ``order``: p XOR-PEER-ADDRESS, d DATA,
    f DONT-FRAGMENT, s SOFTWARE; FINGERPRINT last if ``fingerprint``."""
    parts = {
        "p": (int(Attr.XOR_PEER_ADDRESS), pack_xor_address(peer, tid)),
        "d": (int(Attr.DATA), data),
        "f": DONT_FRAGMENT,
        "s": SOFTWARE,
    }
    msg = Message(Method.SEND, Class.INDICATION, tid, tuple(parts[c] for c in order))
    return encode(msg, fingerprint=fingerprint)


def expected_data_indication(tid: bytes, peer: tuple[str, int], data: bytes) -> bytes:
    """The bytes the core's ``_data_indication`` writes for ``data`` from ``peer``."""
    attr = pack_xor_address(peer, tid)
    pad = -len(data) & 3
    body = b"".join(
        (
            int(Attr.XOR_PEER_ADDRESS).to_bytes(2, "big") + len(attr).to_bytes(2, "big") + attr,
            int(Attr.DATA).to_bytes(2, "big") + len(data).to_bytes(2, "big") + data + bytes(pad),
        )
    )
    head = (0x0017).to_bytes(2, "big") + len(body).to_bytes(2, "big")
    return head + MAGIC_COOKIE.to_bytes(4, "big") + tid + body


def test_object_matches_the_python_records() -> None:
    lacking = build.missing_tools()
    if lacking:
        pytest.skip("cannot build BPF programs, missing: " + ", ".join(lacking))
    dump = subprocess.run(
        ["bpftool", "btf", "dump", "file", str(build.object_path("turn_fast")), "format", "raw"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    records = (
        ("tf_send_key", SendKey),
        ("tf_send_val", SendValue),
        ("tf_data_key", DataKey),
        ("tf_data_val", DataValue),
        ("tf_send6_key", SendKey6),
        ("tf_send6_val", SendValue6),
        ("tf_data6_key", DataKey6),
        ("tf_data6_val", DataValue6),
    )
    for name, record in records:
        size = ctypes.sizeof(record)
        block = dump.split(f"STRUCT '{name}' size={size}")[1].split("\n[")[0]
        members = dict(re.findall(r"'(\w+)' type_id=\d+ bits_offset=(\d+)", block))
        assert {n: int(b) // 8 for n, b in members.items()} == {
            f: getattr(record, f).offset for f, _ in record._fields_
        }


ORDERS = ["pd", "dp", "fpd", "pfd", "dsp", "spdf", "pds", "pd+fp", "sfdp+fp"]


@pytest.mark.parametrize("size", [0, 1, 2, 3, 100, 1200])
@pytest.mark.parametrize("order", ORDERS)
def test_a_send_indication_leaves_for_the_peer_as_its_data(
    permitted: Lab, order: str, size: int
) -> None:
    """``+fp``: with FINGERPRINT, whose CRC-32 the program checks as the core does."""
    fast, _, gw = permitted
    payload = (bytes(range(256)) * 5)[:size]
    before = fast.permission_usage(PERM)
    attrs, _, fp = order.partition("+")
    send = send_indication(PEER, payload, attrs, fingerprint=bool(fp))
    frame = udp4(CLIENT[0], RELAY, CLIENT[1], 3478, send)
    verdict, out = run(permitted, frame)
    assert verdict == XDP_TX
    pkt = Ether(out)
    assert (pkt.src, pkt.dst) == gw
    assert (pkt[IP].src, pkt[IP].dst, pkt[IP].ttl) == (RELAY, PEER[0], 64)
    assert (pkt[UDP].sport, pkt[UDP].dport) == (RELAYED[1], PEER[1])
    assert bytes(pkt[UDP].payload) == payload
    assert out == rebuilt(out)
    used = fast.permission_usage(PERM)
    assert used.to_peer_packets == before.to_peer_packets + 1
    assert used.to_peer_bytes == before.to_peer_bytes + size


@pytest.mark.parametrize("size", [0, 1, 2, 3, 100, 1200])
def test_a_permitted_peers_datagram_leaves_as_a_data_indication(permitted: Lab, size: int) -> None:
    fast, _, gw = permitted
    payload = (bytes(range(255, -1, -1)) * 5)[:size]
    frame = udp4(PEER[0], RELAY, PEER[1], RELAYED[1], payload)
    verdict, out = run(permitted, frame)
    assert verdict == XDP_TX
    pkt = Ether(out)
    assert (pkt.src, pkt.dst) == gw
    assert (pkt[IP].src, pkt[IP].dst) == (RELAY, CLIENT[0])
    assert (pkt[UDP].sport, pkt[UDP].dport) == (LISTENER[1], CLIENT[1])
    stun = bytes(pkt[UDP].payload)
    msg = decode(stun)
    assert (msg.method, msg.cls) == (Method.DATA, Class.INDICATION)
    assert unpack_xor_address(msg.get(Attr.XOR_PEER_ADDRESS) or b"", msg.transaction_id) == PEER
    assert msg.get(Attr.DATA) == payload
    assert stun == expected_data_indication(msg.transaction_id, PEER, payload)
    assert out == rebuilt(out)
    assert fast.permission_usage(PERM).to_client_bytes >= size


def test_data_indications_get_fresh_transaction_ids(permitted: Lab) -> None:
    frame = udp4(PEER[0], RELAY, PEER[1], RELAYED[1], b"hello")
    ids = {decode(bytes(Ether(run(permitted, frame)[1])[UDP].payload)).transaction_id}
    for _ in range(20):
        ids.add(decode(bytes(Ether(run(permitted, frame)[1])[UDP].payload)).transaction_id)
    assert len(ids) == 21


def test_ethernet_padding_after_a_short_datagram_is_not_taken_for_data(permitted: Lab) -> None:
    frame = udp4(PEER[0], RELAY, PEER[1], RELAYED[1], b"hi") + b"\xee" * 16  # 60-byte frame
    verdict, out = run(permitted, frame)
    assert verdict == XDP_TX
    assert len(out) == 14 + 20 + 8 + 36 + 4
    assert decode(bytes(Ether(out)[UDP].payload)).get(Attr.DATA) == b"hi"
    assert out == rebuilt(out)


def test_no_udp_checksum_stays_none_both_ways(permitted: Lab) -> None:
    """IPv4 without a UDP checksum (0): the datagram that leaves has none either."""
    for frame in (
        udp4(CLIENT[0], RELAY, CLIENT[1], 3478, send_indication(PEER, b"abcde", "dfp")),
        udp4(PEER[0], RELAY, PEER[1], RELAYED[1], b"abcde"),
    ):
        unsummed = bytearray(frame)
        unsummed[40:42] = b"\0\0"
        verdict, out = run(permitted, bytes(unsummed))
        assert verdict == XDP_TX
        assert Ether(out)[UDP].chksum == 0
        assert out == rebuilt(out)


@pytest.mark.parametrize("size", [0, 3, 1200])
def test_ipv6_both_ways(permitted: Lab, size: int) -> None:
    fast, _, gw = permitted
    payload = (bytes(range(256)) * 5)[:size]
    before = fast.permission_usage(PERM6)
    send = send_indication(PEER6, payload, "fpds", tid=bytes(range(12)), fingerprint=True)
    verdict, out = run(permitted, udp6(CLIENT6[0], RELAY6, CLIENT6[1], 3478, send))
    assert verdict == XDP_TX
    pkt = Ether(out)
    assert (pkt[IPv6].src, pkt[IPv6].dst, pkt[IPv6].hlim) == (RELAY6, PEER6[0], 64)
    assert (pkt[UDP].sport, pkt[UDP].dport) == (50000, PEER6[1])
    assert bytes(pkt[UDP].payload) == payload
    assert out == rebuilt(out)

    verdict, out = run(permitted, udp6(PEER6[0], RELAY6, PEER6[1], 50000, payload))
    assert verdict == XDP_TX
    pkt = Ether(out)
    assert (pkt.src, pkt.dst) == gw
    assert (pkt[IPv6].src, pkt[IPv6].dst) == (RELAY6, CLIENT6[0])
    assert (pkt[UDP].sport, pkt[UDP].dport) == (3478, CLIENT6[1])
    stun = bytes(pkt[UDP].payload)
    msg = decode(stun)
    assert unpack_xor_address(msg.get(Attr.XOR_PEER_ADDRESS) or b"", msg.transaction_id) == PEER6
    assert stun == expected_data_indication(msg.transaction_id, PEER6, payload)
    assert out == rebuilt(out)
    used = fast.permission_usage(PERM6)
    assert used.to_peer_bytes - before.to_peer_bytes == size
    assert used.to_client_bytes - before.to_client_bytes == size


def test_what_is_not_permitted_passes(permitted: Lab) -> None:
    stranger = ("203.0.113.6", 6000)
    cases = [
        udp4(stranger[0], RELAY, stranger[1], RELAYED[1], b"no permission"),
        udp4(PEER[0], RELAY, PEER[1], RELAYED[1] + 1, b"another relayed port"),
        udp4(CLIENT[0], RELAY, CLIENT[1], 3478, send_indication(stranger, b"x")),
        udp4(CLIENT[0], RELAY, CLIENT[1] + 1, 3478, send_indication(PEER, b"x")),  # other client
        udp4(CLIENT[0], RELAY, CLIENT[1], 3478, send_indication(PEER6, b"x")),  # other family
        udp6(CLIENT6[0], RELAY6, CLIENT6[1], 3478, send_indication(PEER, b"x")),
    ]
    before = permitted[0].counters()
    for frame in cases:
        assert run(permitted, frame) == (XDP_PASS, frame)
    after = permitted[0].counters()
    assert after["send_to_peer"] == before["send_to_peer"]
    assert after["data_to_client"] == before["data_to_client"]


def test_a_bound_channel_wins_over_the_permission(permitted: Lab) -> None:
    """The core sends ChannelData to a peer with a channel, Data indications otherwise."""
    fast = permitted[0]
    ch = RelayedChannel(CLIENT, LISTENER, 0x4001, RELAYED, PEER)
    fast.install(ch, time.monotonic_ns() + HOUR_NS)
    try:
        out = run(permitted, udp4(PEER[0], RELAY, PEER[1], RELAYED[1], b"abc"))[1]
        assert bytes(Ether(out)[UDP].payload) == b"\x40\x01\x00\x03abc"
        other_port = run(permitted, udp4(PEER[0], RELAY, PEER[1] + 1, RELAYED[1], b"abc"))[1]
        assert decode(bytes(Ether(other_port)[UDP].payload)).get(Attr.DATA) == b"abc"
    finally:
        fast.remove(ch)


def test_past_its_deadline_a_permission_passes(lab: Lab) -> None:
    fast = lab[0]
    fast.permit(PERM, time.monotonic_ns() - 1)
    try:
        frames = [
            udp4(PEER[0], RELAY, PEER[1], RELAYED[1], b"late"),
            udp4(CLIENT[0], RELAY, CLIENT[1], 3478, send_indication(PEER, b"late")),
        ]
        before = fast.counters()["expired"]
        for frame in frames:
            assert run(lab, frame) == (XDP_PASS, frame)
        assert fast.counters()["expired"] == before + 2
        fast.permit(PERM, time.monotonic_ns() + HOUR_NS)  # refreshed
        assert [run(lab, f)[0] for f in frames] == [XDP_TX, XDP_TX]
    finally:
        assert fast.unpermit(PERM) == Usage(1, 4, 1, 4)
    assert run(lab, frames[0]) == (XDP_PASS, frames[0])


def test_a_data_indication_over_the_mtu_is_left_to_user_space(permitted: Lab) -> None:
    frame = udp4(PEER[0], RELAY, PEER[1], RELAYED[1], bytes(1450))  # 1478 + 36 > 1500
    assert run(permitted, frame) == (XDP_PASS, frame)
    frame = udp4(PEER[0], RELAY, PEER[1], RELAYED[1], bytes(1436))  # 1500 exactly
    assert run(permitted, frame)[0] == XDP_TX


def _message(body: bytes, mtype: int = 0x0016, cookie: int = MAGIC_COOKIE) -> bytes:
    head = mtype.to_bytes(2, "big") + len(body).to_bytes(2, "big") + cookie.to_bytes(4, "big")
    return head + b"\x5a" * 12 + body


def _attr(t: int, value: bytes) -> bytes:
    return t.to_bytes(2, "big") + len(value).to_bytes(2, "big") + value + bytes(-len(value) & 3)


def _with_bad_fingerprint(msg: bytes) -> bytes:
    signed = bytearray(encode(decode(msg), fingerprint=True))
    signed[-1] ^= 1
    return bytes(signed)


def _fingerprint_then(msg: bytes, attr: bytes) -> bytes:
    """``msg`` signed, then ``attr`` after FINGERPRINT (the length fixed, the CRC not)."""
    signed = bytearray(encode(decode(msg), fingerprint=True) + attr)
    signed[2:4] = (len(signed) - 20).to_bytes(2, "big")
    return bytes(signed)


PEER_ATTR = _attr(0x0012, pack_xor_address(PEER, b"\x5a" * 12))
DATA_ATTR = _attr(0x0013, b"payload")


def malformed() -> list[tuple[str, bytes]]:
    good = _message(PEER_ATTR + DATA_ATTR)
    return [
        ("truncated header", good[:19]),
        ("length longer than the datagram", good[:-4]),
        ("length not a multiple of 4", good[:3] + bytes([good[3] + 1]) + good[4:] + b"\0"),
        ("bad cookie", _message(PEER_ATTR + DATA_ATTR, cookie=0x2112A443)),
        ("a Send request", _message(PEER_ATTR + DATA_ATTR, mtype=0x0006)),
        ("no DATA", _message(PEER_ATTR + _attr(0x8022, b"soft"))),
        ("no XOR-PEER-ADDRESS", _message(DATA_ATTR)),
        ("two XOR-PEER-ADDRESS", _message(PEER_ATTR + PEER_ATTR + DATA_ATTR)),
        ("two DATA", _message(PEER_ATTR + DATA_ATTR + DATA_ATTR)),
        ("attribute past the end", _message(PEER_ATTR + b"\x00\x13\x00\x10" + b"pay!")),
        ("XOR-PEER-ADDRESS of 12 bytes", _message(_attr(0x0012, bytes(12)) + DATA_ATTR)),
        ("XOR-PEER-ADDRESS family 3", _message(_attr(0x0012, b"\x00\x03" + bytes(6)) + DATA_ATTR)),
        ("FINGERPRINT wrong", _with_bad_fingerprint(good)),
        ("FINGERPRINT not last", _fingerprint_then(good, _attr(0x8022, b"late"))),
        ("FINGERPRINT of 8 bytes", _message(PEER_ATTR + DATA_ATTR + _attr(0x8028, bytes(8)))),
        ("MESSAGE-INTEGRITY", _message(PEER_ATTR + DATA_ATTR + _attr(0x0008, bytes(20)))),
        ("comprehension-required", _message(_attr(0x0024, bytes(4)) + PEER_ATTR + DATA_ATTR)),
        ("nine attributes", _message(_attr(0x8022, b"s") * 7 + PEER_ATTR + DATA_ATTR)),
        ("over 64 bytes before DATA", _message(_attr(0x8022, bytes(40)) + PEER_ATTR + DATA_ATTR)),
        ("over 64 bytes after DATA", _message(PEER_ATTR + DATA_ATTR + _attr(0x8022, bytes(64)))),
    ]


@pytest.mark.parametrize("case", malformed(), ids=lambda c: c[0])
def test_a_malformed_send_indication_passes_unchanged(
    permitted: Lab, case: tuple[str, bytes]
) -> None:
    frame = udp4(CLIENT[0], RELAY, CLIENT[1], 3478, case[1])
    assert run(permitted, frame) == (XDP_PASS, frame)


def test_mutated_send_indications_pass_or_are_relayed_as_the_core_reads_them(
    permitted: Lab,
) -> None:
    """Random truncations and byte flips of good messages (half of the signed ones signed
    again after): each frame either passes unchanged or leaves for the peer the core's
    decoder names, carrying exactly the DATA it reads."""
    rng = random.Random(21)
    cases = ((0, "pd", False), (5, "dp", True), (33, "fpds", False), (200, "spdf", True))
    goods = [
        send_indication(PEER, bytes(rng.randrange(256) for _ in range(n)), o, fingerprint=f)
        for n, o, f in cases
    ]
    relayed = signed = 0
    for _ in range(600):
        msg = bytearray(rng.choice(goods))
        if rng.random() < 0.3:
            del msg[rng.randrange(len(msg)) :]
        for _ in range(rng.randrange(1, 4)):
            if msg:
                msg[rng.randrange(min(len(msg), 48))] ^= 1 << rng.randrange(8)
        if len(msg) >= 28 and msg[-8:-4] == b"\x80\x28\x00\x04" and rng.random() < 0.5:
            msg[-4:] = (zlib.crc32(msg[:-8]) ^ 0x5354554E).to_bytes(4, "big")  # signed again
        frame = udp4(CLIENT[0], RELAY, CLIENT[1], 3478, bytes(msg))
        verdict, out = run(permitted, frame)
        if verdict == XDP_PASS:
            assert out == frame
            continue
        assert verdict == XDP_TX
        relayed += 1
        core = decode(bytes(msg))
        if core.has(Attr.FINGERPRINT):
            assert check_fingerprint(bytes(msg))
            signed += 1
        to = unpack_xor_address(core.get(Attr.XOR_PEER_ADDRESS) or b"", core.transaction_id)
        pkt = Ether(out)
        assert (pkt[IP].dst, pkt[UDP].dport) == to
        assert to[0] == PEER[0]  # the only peer permitted
        assert bytes(pkt[UDP].payload) == core.get(Attr.DATA)
        assert out == rebuilt(out)
    assert relayed > 0  # flips in the transaction id or the peer's port still relay
    assert signed > 0
