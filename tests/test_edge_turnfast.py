"""TURN's kernel fast path (``bpf/turn_fast.bpf.c``) on crafted frames, with
``BPF_PROG_TEST_RUN``: ChannelData from a client leaves as a plain datagram from the
relayed address to the peer, a peer's datagram leaves as ChannelData to the client,
and everything the maps do not name passes to the stack.  Each frame that comes out is
rebuilt by scapy with its checksums recomputed, and must be the same bytes.

The program asks the kernel's FIB for the next hop, so it runs in a namespace of two
(``tests/edge_netns.py``): the relay is 192.0.2.1 on ``eth0``, the client and the peer
are reached through 192.0.2.2 (a permanent neighbour entry), and the frames arrive on
``eth0`` (the test run's ``ingress_ifindex``): what leaves by the same interface is
``XDP_TX``.
"""

from __future__ import annotations

import ctypes
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from anyedge.adapters import netns
from anyedge.edge import build
from anyedge.edge.libbpf import XDP_PASS, XDP_TX
from anyedge.edge.turnfast import (
    ClientKey,
    ClientKey6,
    ClientValue,
    ClientValue6,
    PeerKey,
    PeerKey6,
    PeerValue,
    PeerValue6,
    RelayedChannel,
    TurnFast,
    Usage,
)
from edge_netns import ADDR_A, ADDR_B, veth_pair
from edge_packets import udp4, udp6

pytestmark = pytest.mark.lab

RELAY = ADDR_A
CLIENT, PEER = ("198.51.100.10", 40000), ("203.0.113.5", 6000)
LISTENER, RELAYED = (RELAY, 3478), (RELAY, 50000)
CH = RelayedChannel(client=CLIENT, server=LISTENER, channel=0x4001, relay=RELAYED, peer=PEER)
RELAY6 = "2001:db8::1"
CLIENT6, PEER6 = ("2001:db8:1::10", 40000), ("2001:db8:2::5", 6000)
CH6 = RelayedChannel(CLIENT6, (RELAY6, 3478), 0x4002, (RELAY6, 50000), PEER6)
HOUR_NS = 3600 * 10**9
Lab = tuple[TurnFast, int, tuple[str, str]]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "BPF programs need root (CAP_BPF and CAP_NET_ADMIN)"
    lacking = build.missing_tools()
    return "cannot build BPF programs, missing: " + ", ".join(lacking) if lacking else None


@contextmanager
def relay_program(name: str) -> Iterator[Lab]:
    """The loaded program inside the relay's namespace (a veth pair named from
    ``name``), the ifindex of its ``eth0`` and the MACs a frame leaving by it has: its
    own and the next hop's (192.0.2.2's).  Skips the test where BPF cannot run."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    with veth_pair(name) as (a, b):
        gw_mac = netns.run(b, ["cat", "/sys/class/net/eth0/address"]).strip()
        own_mac = netns.run(a, ["cat", "/sys/class/net/eth0/address"]).strip()
        netns.batch(
            a,
            [
                f"route add 198.51.100.0/24 via {ADDR_B}",
                f"route add 203.0.113.0/24 via {ADDR_B}",
                f"neigh add {ADDR_B} lladdr {gw_mac} dev eth0 nud permanent",
                f"addr add {RELAY6}/64 dev eth0 nodad",
                "route add 2001:db8:1::/48 via 2001:db8::2",
                "route add 2001:db8:2::/48 via 2001:db8::2",
                f"neigh add 2001:db8::2 lladdr {gw_mac} dev eth0 nud permanent",
            ],
        )
        with netns.entered(a), TurnFast() as fast:
            yield fast, socket.if_nametoindex("eth0"), (own_mac, gw_mac)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with relay_program(f"aetf{os.getpid()}") as it:
        yield it


def run(fast: TurnFast, ifindex: int, frame: bytes) -> tuple[int, bytes]:
    r = fast.program.test_run(frame, ingress_ifindex=ifindex)
    return r.retval, r.data


def rebuilt(frame: bytes) -> bytes:
    """``frame`` as scapy builds it again with its own IP and UDP checksums."""
    pkt = Ether(frame)
    if IP in pkt:
        del pkt[IP].chksum
    if pkt[UDP].chksum != 0:
        del pkt[UDP].chksum
    return bytes(pkt.__class__(bytes(pkt)))


def channel_data(number: int, payload: bytes) -> bytes:
    return number.to_bytes(2, "big") + len(payload).to_bytes(2, "big") + payload


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
        ("tf_client_key", ClientKey),
        ("tf_client_val", ClientValue),
        ("tf_peer_key", PeerKey),
        ("tf_peer_val", PeerValue),
        ("tf_client6_key", ClientKey6),
        ("tf_client6_val", ClientValue6),
        ("tf_peer6_key", PeerKey6),
        ("tf_peer6_val", PeerValue6),
    )
    for name, record in records:
        size = ctypes.sizeof(record)
        block = dump.split(f"STRUCT '{name}' size={size}")[1].split("\n[")[0]
        members = dict(re.findall(r"'(\w+)' type_id=\d+ bits_offset=(\d+)", block))
        assert {n: int(b) // 8 for n, b in members.items()} == {
            f: getattr(record, f).offset for f, _ in record._fields_
        }


@pytest.mark.parametrize("size", [0, 1, 3, 100, 1200])
def test_channel_data_leaves_for_the_peer(lab: Lab, size: int) -> None:
    fast, ifindex, gw = lab
    payload = bytes(range(256)) * 5
    payload = payload[:size]
    fast.install(CH, time.monotonic_ns() + HOUR_NS)
    try:
        frame = udp4(CLIENT[0], RELAY, CLIENT[1], 3478, channel_data(0x4001, payload))
        verdict, out = run(fast, ifindex, frame)
        assert verdict == XDP_TX
        pkt = Ether(out)
        assert (pkt.src, pkt.dst) == gw
        assert (pkt[IP].src, pkt[IP].dst, pkt[IP].ttl) == (RELAY, PEER[0], 64)
        assert (pkt[UDP].sport, pkt[UDP].dport) == (RELAYED[1], PEER[1])
        assert bytes(pkt[UDP].payload) == payload
        assert out == rebuilt(out)
        assert fast.usage(CH).to_peer_packets == 1
        assert fast.usage(CH).to_peer_bytes == size
    finally:
        fast.remove(CH)


@pytest.mark.parametrize("size", [0, 1, 3, 100, 1200])
def test_a_peers_datagram_leaves_as_channel_data(lab: Lab, size: int) -> None:
    fast, ifindex, gw = lab
    payload = bytes(range(255, -1, -1)) * 5
    payload = payload[:size]
    fast.install(CH, time.monotonic_ns() + HOUR_NS)
    try:
        frame = udp4(PEER[0], RELAY, PEER[1], RELAYED[1], payload)
        verdict, out = run(fast, ifindex, frame)
        assert verdict == XDP_TX
        pkt = Ether(out)
        assert (pkt.src, pkt.dst) == gw
        assert (pkt[IP].src, pkt[IP].dst) == (RELAY, CLIENT[0])
        assert (pkt[UDP].sport, pkt[UDP].dport) == (LISTENER[1], CLIENT[1])
        assert bytes(pkt[UDP].payload) == channel_data(0x4001, payload)
        assert out == rebuilt(out)
        used = fast.usage(CH)
        assert (used.to_client_packets, used.to_client_bytes) == (1, size)
    finally:
        fast.remove(CH)


def test_no_udp_checksum_stays_none(lab: Lab) -> None:
    fast, ifindex, _ = lab
    fast.install(CH, time.monotonic_ns() + HOUR_NS)
    try:
        frame = bytearray(udp4(PEER[0], RELAY, PEER[1], RELAYED[1], b"hello"))
        frame[40:42] = b"\0\0"  # IPv4: no UDP checksum
        verdict, out = run(fast, ifindex, bytes(frame))
        assert verdict == XDP_TX
        assert Ether(out)[UDP].chksum == 0
    finally:
        fast.remove(CH)


def test_what_the_maps_do_not_name_passes(lab: Lab) -> None:
    fast, ifindex, _ = lab
    fast.install(CH, time.monotonic_ns() + HOUR_NS)
    try:
        cases = [
            udp4(CLIENT[0], RELAY, CLIENT[1], 3478, channel_data(0x4002, b"x")),  # other channel
            udp4(CLIENT[0], RELAY, CLIENT[1] + 1, 3478, channel_data(0x4001, b"x")),  # other port
            udp4(CLIENT[0], RELAY, CLIENT[1], 3478, channel_data(0x4001, b"xy") + b"\0\0"),  # pad
            udp4(CLIENT[0], RELAY, CLIENT[1], 3478, b"\x00\x01\x00\x00" + bytes(16)),  # STUN
            udp4("203.0.113.6", RELAY, PEER[1], RELAYED[1], b"no permission"),  # another peer
            udp4(PEER[0], RELAY, PEER[1] + 1, RELAYED[1], b"no channel"),  # another port
        ]
        for frame in cases:
            assert run(fast, ifindex, frame) == (XDP_PASS, frame)
        assert fast.usage(CH) == fast.usage(CH).__class__()
    finally:
        fast.remove(CH)


def test_past_its_deadline_a_channel_passes_to_user_space(
    lab: Lab,
) -> None:
    fast, ifindex, _ = lab
    fast.install(CH, time.monotonic_ns() - 1)
    try:
        frame = udp4(PEER[0], RELAY, PEER[1], RELAYED[1], b"late")
        before = fast.counters()["expired"]
        assert run(fast, ifindex, frame) == (XDP_PASS, frame)
        assert fast.counters()["expired"] == before + 1
        fast.install(CH, time.monotonic_ns() + HOUR_NS)  # refreshed: relayed again
        assert run(fast, ifindex, frame)[0] == XDP_TX
    finally:
        fast.remove(CH)
    assert run(fast, ifindex, frame) == (XDP_PASS, frame)  # removed


def test_a_peer_the_fib_cannot_reach_passes(lab: Lab) -> None:
    fast, ifindex, _ = lab
    local = RelayedChannel(CLIENT, LISTENER, 0x4003, RELAYED, (RELAY, 50002))  # the relay itself
    fast.install(local, time.monotonic_ns() + HOUR_NS)
    try:
        frame = udp4(CLIENT[0], RELAY, CLIENT[1], 3478, channel_data(0x4003, b"x"))
        assert run(fast, ifindex, frame) == (XDP_PASS, frame)
        assert fast.counters()["no_route"] >= 1
    finally:
        fast.remove(local)


@pytest.mark.parametrize("size", [0, 1, 3, 1200])
def test_ipv6_both_ways(lab: Lab, size: int) -> None:
    fast, ifindex, gw = lab
    payload = bytes(range(256)) * 5
    payload = payload[:size]
    fast.install(CH6, time.monotonic_ns() + HOUR_NS)
    try:
        cd = channel_data(0x4002, payload)
        verdict, out = run(fast, ifindex, udp6(CLIENT6[0], RELAY6, CLIENT6[1], 3478, cd))
        assert verdict == XDP_TX
        pkt = Ether(out)
        assert (pkt.src, pkt.dst) == gw
        assert (pkt[IPv6].src, pkt[IPv6].dst, pkt[IPv6].hlim) == (RELAY6, PEER6[0], 64)
        assert (pkt[UDP].sport, pkt[UDP].dport) == (50000, PEER6[1])
        assert bytes(pkt[UDP].payload) == payload
        assert out == rebuilt(out)

        verdict, out = run(fast, ifindex, udp6(PEER6[0], RELAY6, PEER6[1], 50000, payload))
        assert verdict == XDP_TX
        pkt = Ether(out)
        assert (pkt[IPv6].src, pkt[IPv6].dst) == (RELAY6, CLIENT6[0])
        assert (pkt[UDP].sport, pkt[UDP].dport) == (3478, CLIENT6[1])
        assert bytes(pkt[UDP].payload) == cd
        assert out == rebuilt(out)
        assert fast.usage(CH6) == Usage(1, size, 1, size)
    finally:
        fast.remove(CH6)


def test_ipv6_what_the_maps_do_not_name_passes(lab: Lab) -> None:
    fast, ifindex, _ = lab
    fast.install(CH6, time.monotonic_ns() + HOUR_NS)
    try:
        other = udp6("2001:db8:2::6", RELAY6, PEER6[1], 50000, b"no permission")
        no_sum = bytearray(udp6(PEER6[0], RELAY6, PEER6[1], 50000, b"no checksum"))
        no_sum[60:62] = b"\0\0"  # invalid in IPv6: the stack decides
        v4 = udp4(CLIENT[0], RELAY, CLIENT[1], 3478, channel_data(0x4002, b"x"))  # its v4 twin
        for frame in (other, bytes(no_sum), v4):
            assert run(fast, ifindex, frame) == (XDP_PASS, frame)
    finally:
        fast.remove(CH6)


def test_a_channel_across_families_is_refused(lab: Lab) -> None:
    """A client on IPv4 with an IPv6 relayed address (ADDITIONAL-ADDRESS-FAMILY) is not
    the program's: the service leaves such channels to user space."""
    fast, _, _ = lab
    with pytest.raises(ValueError, match="one family"):
        fast.install(RelayedChannel(CLIENT, LISTENER, 0x4001, (RELAY6, 50000), PEER6), 1)


def test_a_snapshot_reads_every_channels_counters_at_once(lab: Lab) -> None:
    fast, ifindex, _ = lab
    chans = [CH, CH6] + [
        RelayedChannel((CLIENT[0], 41000 + i), LISTENER, 0x4000, RELAYED, (PEER[0], 7000 + i))
        for i in range(50)
    ]
    for ch in chans:
        fast.install(ch, time.monotonic_ns() + HOUR_NS)
    try:
        run(fast, ifindex, udp4(CLIENT[0], RELAY, CLIENT[1], 3478, channel_data(0x4001, b"abc")))
        run(fast, ifindex, udp6(PEER6[0], RELAY6, PEER6[1], 50000, b"hello"))
        run(fast, ifindex, udp4(PEER[0], RELAY, 7007, RELAYED[1], b"x" * 10))
        snap = fast.snapshot()
        for ch in chans:
            assert snap.usage(fast.keys(ch)) == fast.usage(ch)
        assert snap.usage(fast.keys(CH)) == Usage(1, 3, 0, 0)
        assert snap.usage(fast.keys(CH6)) == Usage(0, 0, 1, 5)
        assert snap.usage(fast.keys(chans[9])) == Usage(0, 0, 1, 10)
        assert fast.installed() == len(chans)
    finally:
        for ch in chans:
            fast.remove(ch)
    assert fast.snapshot().usage(fast.keys(CH)) == Usage()
