"""pmtud's decisions on hand-built Packet Too Big messages, with time passed in: what is
parsed from ICMPv4 frag-needed and ICMPv6 PTB, where each goes in broadcast and flow
mode, the rate limits, loop prevention, and NFLOG messages decoded from their bytes."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anyedge.balance import Table, flow_hash, fold6
from anyedge.edge import nflog
from anyedge.edge.pmtud import BROADCAST, UDP, Pmtud, Site, flow_of, parse_ptb
from anyedge.lab.ptbgen import ptb4, ptb6

ROOT = Path(__file__).resolve().parent.parent
ANY4, ANY6 = "203.0.113.10", "2001:db8:a::10"
MACS = [bytes([2, 0, 0, 0, 0, i]) for i in range(4)]
TABLE = Table.build([1.0] * 4)


def _int(a: str) -> int:
    return int(ipaddress.ip_address(a))


def _words(a: str) -> np.ndarray:
    n = _int(a)
    return np.array([[(n >> s) & 0xFFFF_FFFF for s in (96, 64, 32, 0)]], dtype=np.uint32)


def test_parses_ipv4_frag_needed() -> None:
    p = parse_ptb(ptb4("198.51.100.2", ANY4, "100.64.1.7", 8080, 40000, mtu=1280))
    assert p is not None
    assert (p.family, p.mtu, p.proto) == (4, 1280, 6)
    assert (p.source, p.client, p.server) == (
        _int("198.51.100.2"),
        _int("100.64.1.7"),
        _int(ANY4),
    )
    assert (p.client_port, p.server_port) == (40000, 8080)


def test_parses_ipv6_packet_too_big_over_udp() -> None:
    p = parse_ptb(ptb6("2001:db8:1::2", ANY6, "2001:db8:c::7", 53, 5353, proto=UDP))
    assert p is not None
    assert (p.family, p.mtu, p.proto, p.client_port, p.server_port) == (6, 1280, UDP, 5353, 53)
    assert p.client == _int("2001:db8:c::7")


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x45" + b"\0" * 30,  # IPv4, not ICMP
        ptb4("198.51.100.2", ANY4, "100.64.1.7", 80, 4000)[:28],  # no quoted packet
    ],
)
def test_other_packets_are_not_ptbs(packet: bytes) -> None:
    assert parse_ptb(packet) is None
    assert Pmtud("broadcast", Site(MACS[0])).decide(packet, 0.0).reason == "not_ptb"


def test_broadcast_sends_to_every_server() -> None:
    core = Pmtud("broadcast", Site(MACS[0]))
    d = core.decide(ptb4("198.51.100.2", ANY4, "100.64.1.7", 80, 4000), 0.0)
    assert (d.reason, d.macs) == ("sent", (BROADCAST,))


def test_flow_mode_sends_one_copy_to_the_table_owner_only() -> None:
    seen = dict.fromkeys(range(4), 0)
    for port in range(30000, 30400):
        pkt = ptb4("198.51.100.2", ANY4, "100.64.1.7", 80, port)
        ptb = parse_ptb(pkt)
        assert ptb is not None
        owner = int(TABLE.lookup(np.array([flow_of(ptb)], dtype=np.uint32))[0][0])
        seen[owner] += 1
        for me in range(4):
            core = Pmtud("flow", Site(MACS[me], MACS, TABLE), src_rate=1e9, iface_rate=1e9)
            d = core.decide(pkt, 0.0)
            if me == owner:
                assert (d.reason, d.macs) == ("local", ())
            else:
                assert (d.reason, d.macs) == ("sent", (MACS[owner],))
    assert all(n > 50 for n in seen.values())  # every server owns some flows


def test_flow_hash_is_the_balancers_for_the_client_to_server_flow() -> None:
    rng = np.random.default_rng(7)
    for i in range(300):
        port, seed = int(rng.integers(1024, 65536)), int(rng.integers(0, 1 << 32))
        if i % 2:
            client = f"100.64.{rng.integers(256)}.{rng.integers(256)}"
            ptb = parse_ptb(ptb4("198.51.100.2", ANY4, client, 80, port, proto=UDP))
            a, b = np.array([_int(client)]), np.array([_int(ANY4)])
        else:
            client = f"2001:db8:c::{rng.integers(1 << 16):x}:{rng.integers(1 << 16):x}"
            ptb = parse_ptb(ptb6("2001:db8:1::2", ANY6, client, 80, port))
            a, b = fold6(_words(client)), fold6(_words(ANY6))
        assert ptb is not None
        expected = flow_hash(a, b, port, 80, ptb.proto, seed)  # the balancer's own
        assert flow_of(ptb, seed) == int(expected[0])


def test_a_copy_from_another_server_is_never_sent_on() -> None:
    pkt = ptb6("2001:db8:1::2", ANY6, "2001:db8:c::7", 80, 4000)
    for mode in ("broadcast", "flow"):
        core = Pmtud(mode, Site(MACS[0], MACS, TABLE))
        assert core.decide(pkt, 0.0, source_mac=MACS[2]).reason == "relayed"


def test_source_rate_limit() -> None:
    core = Pmtud("broadcast", Site(MACS[0]), src_rate=1.1, iface_rate=1000)
    a = ptb4("198.51.100.2", ANY4, "100.64.1.7", 80, 4000)
    b = ptb4("198.51.100.3", ANY4, "100.64.1.7", 80, 4000)
    reasons = [core.decide(a, t / 100).reason for t in range(1000)]  # 100/s for 10 s
    assert reasons[0] == "sent"
    # a bucket of 1.1 tokens: the first, then 0.1 + 1.1/s over 9.99 s = 11.09 more
    assert reasons.count("sent") == 1 + 11
    assert core.decide(b, 10.0).reason == "sent"  # another source has its own bucket


def test_interface_rate_limit_over_many_sources() -> None:
    core = Pmtud("broadcast", Site(MACS[0]), src_rate=1.1, iface_rate=10)
    sent = 0
    for i in range(2000):  # 1,000/s from 2,000 different sources for 2 s
        src = f"100.65.{i >> 8}.{i & 0xFF}"
        d = core.decide(ptb4(src, ANY4, "100.64.1.7", 80, 4000), i / 1000)
        sent += d.reason == "sent"
    assert sent == 10 + 19  # a full bucket of 10, then 10/s for 1.999 s


def test_flow_mode_needs_the_table() -> None:
    with pytest.raises(ValueError, match="flow mode needs"):
        Pmtud("flow", Site(MACS[0]))
    with pytest.raises(ValueError, match="mode must be"):
        Pmtud("multicast", Site(MACS[0]))


def _nflog_packet(payload: bytes, ifindex: int, hwheader: bytes) -> bytes:
    attrs = (
        nflog.attribute(nflog.NFULA_PACKET_HDR, struct.pack("!HBx", 0x0800, 1))
        + nflog.attribute(nflog.NFULA_IFINDEX_INDEV, struct.pack("!I", ifindex))
        + nflog.attribute(nflog.NFULA_HWHEADER, hwheader)
        + nflog.attribute(nflog.NFULA_PAYLOAD, payload)
    )
    body = struct.pack("=BBH", socket.AF_INET, 0, socket.htons(33)) + attrs
    return struct.pack("=IHHII", 16 + len(body), nflog.NFNL_SUBSYS_ULOG << 8, 0, 0, 0) + body


def test_nflog_messages_decode() -> None:
    pkt = ptb4("198.51.100.2", ANY4, "100.64.1.7", 80, 4000)
    hw = MACS[1] + MACS[2] + b"\x08\x00"
    data = _nflog_packet(pkt, 7, hw) + _nflog_packet(pkt[:-1], 8, b"")
    a, b = list(nflog.parse(data))
    assert isinstance(a, nflog.Packet)
    assert isinstance(b, nflog.Packet)
    assert (a.family, a.ifindex, a.payload, a.source_mac) == (socket.AF_INET, 7, pkt, MACS[2])
    assert (b.ifindex, b.payload, b.source_mac) == (8, pkt[:-1], b"")


def test_nflog_acks_and_errors_decode() -> None:
    ack = struct.pack("=IHHII", 36, nflog.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -16)
    ack += b"\0" * 16
    assert list(nflog.parse(ack)) == [-16]
    assert list(nflog.parse(b"\x05\x00")) == []  # truncated: nothing


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "anyedge", *args], capture_output=True, text=True, env=env
    )


@pytest.mark.parametrize(
    ("site", "where"),
    [
        ("{", "not JSON"),
        ('{"servers": []}', "servers: a non-empty list"),
        ('{"servers": [{"mac": "02:00"}]}', "servers[0].mac: not a MAC address"),
        ('{"servers": [{"mac": "02:00:00:00:00:01", "weight": -1}]}', "servers[0].weight"),
        ('{"servers": [{"mac": "02:00:00:00:00:01"}]}', "lo's MAC is not one of them"),
    ],
)
def test_pmtud_run_refuses_a_bad_site_file(tmp_path: Path, site: str, where: str) -> None:
    f = tmp_path / "site.json"
    f.write_text(site)
    r = _cli("pmtud", "run", "--iface", "lo", "--mode", "flow", "--site", str(f))
    assert r.returncode == 2
    assert r.stderr.startswith(f"anyedge: error: {f}")
    assert where in r.stderr


def test_pmtud_run_refuses_a_missing_interface_or_site() -> None:
    r = _cli("pmtud", "run", "--iface", "nosuch0")
    assert r.returncode == 2
    assert "--iface: no interface 'nosuch0'" in r.stderr
    r = _cli("pmtud", "run", "--iface", "lo", "--mode", "flow")
    assert r.returncode == 2
    assert "flow mode needs the site file" in r.stderr


def test_pmtud_rules_print_the_nft_table() -> None:
    r = _cli("pmtud", "rules", "--iface", "eth7", "--group", "5")
    assert r.returncode == 0
    assert 'iifname "eth7" meta pkttype host icmpv6 type packet-too-big log group 5' in r.stdout


def test_while_a_bucket_moves_its_second_hop_gets_a_copy_too() -> None:
    moving = TABLE.change(weight=[1.0, 1.0, 1.0, 3.0])  # buckets move to server 3
    pairs = 0
    for port in range(20000, 21000):
        pkt = ptb4("198.51.100.2", ANY4, "100.64.1.7", 80, port)
        ptb = parse_ptb(pkt)
        assert ptb is not None
        b = flow_of(ptb) & (moving.buckets - 1)
        first, second = int(moving.first[b]), int(moving.second[b])
        me = next(i for i in range(4) if i not in (first, second))
        core = Pmtud("flow", Site(MACS[me], MACS, moving), src_rate=1e9, iface_rate=1e9)
        d = core.decide(pkt, 0.0)
        expected = (MACS[first],) + ((MACS[second],) if second >= 0 else ())
        assert d.macs == expected
        pairs += second >= 0
    assert pairs > 0


def test_udp_goes_to_the_first_hop_alone_while_its_bucket_moves() -> None:
    """The balancer never passes UDP on to a second hop, so no second copy."""
    moving = TABLE.change(weight=[1.0, 1.0, 1.0, 3.0])
    pairs = 0
    for port in range(20000, 21000):
        pkt = ptb4("198.51.100.2", ANY4, "100.64.1.7", 80, port, proto=UDP)
        ptb = parse_ptb(pkt)
        assert ptb is not None
        b = flow_of(ptb) & (moving.buckets - 1)
        first, second = int(moving.first[b]), int(moving.second[b])
        me = next(i for i in range(4) if i not in (first, second))
        core = Pmtud("flow", Site(MACS[me], MACS, moving), src_rate=1e9, iface_rate=1e9)
        assert core.decide(pkt, 0.0).macs == (MACS[first],)
        pairs += second >= 0
    assert pairs > 0


def test_a_table_naming_a_server_without_a_mac_is_no_flow() -> None:
    core = Pmtud("flow", Site(MACS[0], MACS[:2], TABLE))  # the table has four servers
    reasons = {
        core.decide(ptb4("198.51.100.2", ANY4, "100.64.1.7", 80, p), 0.0).reason for p in range(100)
    }
    assert "no_flow" in reasons
