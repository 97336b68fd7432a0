"""The load balancer's data plane (``bpf/balancer.bpf.c``): the program in the kernel
against the control plane's :class:`~anyedge.balance.Table` and
:func:`~anyedge.balance.flow_hash`.

First with ``BPF_PROG_TEST_RUN`` on hand-built frames (bytes in, verdict and rewritten
bytes out), then with real packets: a router namespace sends to four server
namespaces on one bridge by ECMP, every server runs the balancer, and every flow is
answered by the server the table names.  Kernel tests need root, clang, bpftool and a
kernel with BTF; where something is missing they are skipped with the reason.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from anyedge.balance import Table, flow_hash, fold6
from anyedge.edge import build
from anyedge.edge.balancer import BUCKETS, Balancer, parse_mac
from edge_packets import (
    ACK,
    ETH_IPV6,
    FIN,
    ICMP,
    MAC_A,
    PSH,
    RST,
    SYN,
    UDP,
    eth,
    fragment,
    ipv4,
    ipv6,
    tcp4,
    tcp6,
    udp,
    udp4,
    udp6,
)

VIP, VIP6 = "203.0.113.10", "2001:db8::10"
MACS = [f"02:00:5e:00:aa:{i:02x}" for i in range(8)]
CLIENT_MAC = MAC_A  # the router's: not a server


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "BPF programs need root (CAP_BPF and CAP_NET_ADMIN)"
    lacking = build.missing_tools()
    return "cannot build BPF programs, missing: " + ", ".join(lacking) if lacking else None


@pytest.fixture(scope="module")
def lb() -> Iterator[Balancer]:
    """Server 0 of eight, in debug mode (it records each packet's hash and bucket)."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    with Balancer(0, debug=True) as loaded:
        loaded.set_servers(MACS)
        loaded.set_services([VIP, VIP6, "127.0.0.1"])
        yield loaded


@pytest.fixture
def four(lb: Balancer) -> Table:
    """A fresh table of four equal servers in force, counters zeroed."""
    table = Table.build([1, 1, 1, 1], seed=7)
    lb.replace(table)
    lb.second_hop = True
    lb.reset_counters()
    return table


def _h4(src: str, dst: str, sport: int, dport: int, proto: int) -> int:
    a, b = int(ipaddress.ip_address(src)), int(ipaddress.ip_address(dst))
    return int(flow_hash(a, b, sport, dport, proto)[0])


def _words(addr: str) -> list[int]:
    n = int(ipaddress.IPv6Address(addr))
    return [(n >> s) & 0xFFFF_FFFF for s in (96, 64, 32, 0)]


def _h6(src: str, dst: str, sport: int, dport: int, proto: int) -> int:
    a, b = fold6([_words(src)])[0], fold6([_words(dst)])[0]
    return int(flow_hash(a, b, sport, dport, proto)[0])


def _first(table: Table, hash_: int) -> int:
    return int(table.first[hash_ & (table.buckets - 1)])


def _flows_where(table: Table, want: tuple[int, int], n: int = 1) -> list[int]:
    """Source ports of UDP/TCP flows 198.51.100.7:port -> VIP:80 whose bucket is
    (first, second) = ``want`` (the same for TCP and UDP is not needed: callers say)."""
    ports = np.arange(1024, 65536)
    h = flow_hash(
        int(ipaddress.ip_address("198.51.100.7")), int(ipaddress.ip_address(VIP)), ports, 80, 6
    )
    first, second = table.lookup(h)
    hit = ports[(first == want[0]) & (second == want[1])]
    assert hit.size >= n, f"no flow for {want}"
    return [int(p) for p in hit[:n]]


# -- the hash and the bucket ------------------------------------------------------------


def test_kernel_and_python_hash_agree_on_random_tuples(lb: Balancer, four: Table) -> None:
    """2 000 random IPv4 and IPv6 TCP/UDP tuples: the program's hash is flow_hash's, its
    bucket the hash's low 16 bits, its first hop Table.lookup's."""
    rng = np.random.default_rng(14)
    for i in range(2000):
        proto = (6, 17)[i % 2]
        sport, dport = (int(x) for x in rng.integers(0, 65536, 2))
        if i % 4 < 2:
            src = str(ipaddress.IPv4Address(int(rng.integers(0, 2**32))))
            frame = (tcp4 if proto == 6 else udp4)(
                src, VIP, sport, dport, *([ACK] if proto == 6 else [])
            )
            want = _h4(src, VIP, sport, dport, proto)
        else:
            src = str(ipaddress.IPv6Address(int.from_bytes(rng.bytes(16))))
            frame = (tcp6 if proto == 6 else udp6)(
                src, VIP6, sport, dport, *([ACK] if proto == 6 else [])
            )
            want = _h6(src, VIP6, sport, dport, proto)
        v = lb.test_run(frame)
        d = lb.last()
        assert (d.hash, d.bucket) == (want, want & (BUCKETS - 1)), (src, sport, dport, proto)
        assert d.first == _first(four, want)
        assert v.verdict == ("pass" if d.first == 0 else "tx")


def test_seed_changes_the_hash_as_in_python() -> None:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    with Balancer(0, seed=0xC0FFEE, debug=True) as seeded:
        seeded.set_servers(MACS[:2])
        seeded.set_services([VIP])
        seeded.replace(Table.build([1, 1]))
        seeded.test_run(udp4("198.51.100.7", VIP, 4000, 53))
        a, b = int(ipaddress.ip_address("198.51.100.7")), int(ipaddress.ip_address(VIP))
        assert seeded.last().hash == int(flow_hash(a, b, 4000, 53, UDP, seed=0xC0FFEE)[0])


def test_a_small_table_fills_the_data_planes_buckets(lb: Balancer) -> None:
    """A table of 64 buckets is repeated over the 2^16: hash & 63 picks the same."""
    table = Table.build([1, 2, 3], buckets=64)
    lb.replace(table)
    for sport in range(1000, 1200):
        lb.test_run(udp4("198.51.100.7", VIP, sport, 53))
        d = lb.last()
        assert d.first == table.first[d.hash & 63]


# -- first hop: MAC rewrite, verdict, counters ---------------------------------------------


def test_mac_rewritten_to_the_first_hop(lb: Balancer, four: Table) -> None:
    sent = dict.fromkeys(range(4), 0)
    for sport in range(2000, 2400):
        frame = udp4("198.51.100.7", VIP, sport, 443, b"hello")
        first = _first(four, _h4("198.51.100.7", VIP, sport, 443, UDP))
        v = lb.test_run(frame)
        if first == 0:
            assert v == (("pass", frame))
        else:
            assert v.verdict == "tx"
            assert v.frame[:6] == parse_mac(MACS[first])  # to the first hop
            assert v.frame[6:12] == parse_mac(MACS[0])  # from this server
            assert v.frame[12:] == frame[12:]  # IP and above untouched
        sent[first] += 1
    assert min(sent.values()) > 60  # every server got a share
    n = len(frame)
    want = {("first_hop", s): c for s, c in sent.items() if s}
    want[("local", 0)] = sent[0]
    assert lb.packets() == want
    assert {(c.kind, c.server): c.bytes for c in lb.counters()} == {
        k: v * n for k, v in want.items()
    }


def test_ipv6_is_balanced_too(lb: Balancer, four: Table) -> None:
    for sport in range(3000, 3100):
        frame = tcp6("2001:db8:1::7", VIP6, sport, 443, SYN)
        first = _first(four, _h6("2001:db8:1::7", VIP6, sport, 443, 6))
        v = lb.test_run(frame)
        assert v.verdict == ("pass" if first == 0 else "tx")
        if first:
            assert v.frame[:6] == parse_mac(MACS[first])
            assert v.frame[12:] == frame[12:]


def test_other_traffic_passes_untouched(lb: Balancer, four: Table) -> None:
    seg = udp("198.51.100.7", VIP, 1, 53)
    frames = [
        udp4("198.51.100.7", "203.0.113.11", 4000, 53),  # not a service address
        tcp6("2001:db8:1::7", "2001:db8::11", 4000, 443, SYN),
        eth(ipv4("198.51.100.7", VIP, ICMP, bytes(16))),  # a service, but not TCP/UDP
        eth(ipv4("198.51.100.7", VIP, UDP, seg, frag=0x0010)),  # no ports: cannot hash
        eth(ipv6("2001:db8:1::7", VIP6, 44, fragment(17, seg, offset=1)), ETH_IPV6),
        bytes(6) + MAC_A + b"\x08\x06" + bytes(28),  # ARP
        udp4("198.51.100.7", VIP, 4000, 53)[:30],  # cut short
    ]
    for frame in frames:
        assert lb.test_run(frame) == ("pass", frame)
    assert lb.packets() == {}


# -- the second hop -------------------------------------------------------------------------


@pytest.fixture
def drained(lb: Balancer) -> Table:
    """Server 1 drained: its buckets moved, half of them to this server (0), with
    server 1 as their second hop."""
    table = Table.build([1, 1], seed=3).drain(1)
    lb.replace(table)
    lb.second_hop = True
    lb.reset_counters()
    return table


def _tcp(sport: int, flags: int, src_mac: bytes = CLIENT_MAC) -> bytes:
    frame = tcp4("198.51.100.7", VIP, sport, 80, flags, b"data" if flags & PSH else b"")
    return parse_mac(MACS[7]) + src_mac + frame[12:]


def test_non_syn_without_a_socket_goes_to_the_second_hop(lb: Balancer, drained: Table) -> None:
    moved = _flows_where(drained, (0, 1), 5)
    stayed = _flows_where(drained, (0, -1))[0]
    for sport in moved:
        for flags in (ACK, ACK | PSH, FIN | ACK, RST):
            v = lb.test_run(_tcp(sport, flags))
            assert v.verdict == "tx", flags
            assert v.frame[:12] == parse_mac(MACS[1]) + parse_mac(MACS[0])
            assert lb.last().action == "second_hop"
        assert lb.test_run(_tcp(sport, SYN)).verdict == "pass"  # a new connection: ours
        assert lb.last().action == "local"
        udp_frame = udp4("198.51.100.7", VIP, sport, 80)
        assert lb.test_run(udp_frame).verdict in ("pass", "tx")  # UDP: no second hop
        assert lb.last().action != "second_hop"
    assert lb.test_run(_tcp(stayed, ACK)).verdict == "pass"  # no second hop named
    c = lb.packets()
    assert c[("second_hop", 1)] == 4 * len(moved)
    assert c[("local", 0)] >= len(moved) + 1


def test_a_packet_from_another_server_is_not_forwarded_again(lb: Balancer, drained: Table) -> None:
    moved = _flows_where(drained, (0, 1))[0]
    # from server 1, the bucket's second hop: it would bounce straight back; kept
    v = lb.test_run(_tcp(moved, ACK, parse_mac(MACS[1])))
    assert v.verdict == "pass"
    assert lb.last().came_from == 1
    # from server 2, a balancer that sent it to us, the first hop: on to the second
    v = lb.test_run(_tcp(moved, ACK, parse_mac(MACS[2])))
    assert (v.verdict, v.frame[:6]) == ("tx", parse_mac(MACS[1]))
    # a bucket whose first hop is another server, from another server: we are its
    # second hop (or tables disagree): kept, never sent on
    table = Table.build([1, 1, 1], seed=5)
    lb.replace(table)
    other = _flows_where(table, (2, -1))[0]
    for flags in (SYN, ACK):
        assert lb.test_run(_tcp(other, flags, parse_mac(MACS[1]))).verdict == "pass"
        assert lb.last().action == "local"
    assert lb.test_run(_tcp(other, ACK)).verdict == "tx"  # from the router: first hop


def test_second_hop_can_be_switched_off(lb: Balancer, drained: Table) -> None:
    moved = _flows_where(drained, (0, 1))[0]
    lb.second_hop = False
    try:
        assert lb.test_run(_tcp(moved, ACK)).verdict == "pass"
    finally:
        lb.second_hop = True
    assert lb.test_run(_tcp(moved, ACK)).verdict == "tx"


def test_a_socket_here_keeps_the_packet(lb: Balancer) -> None:
    """An established connection on this host owns its flow (found by
    bpf_skc_lookup_tcp in the namespace the test run happens in); a listener alone
    does not, so other non-SYN packets to its port still go to the second hop."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    table = dataclasses.replace(
        Table.build([1, 1]),
        first=np.zeros(BUCKETS, dtype=np.int32),
        second=np.ones(BUCKETS, dtype=np.int32),
    )
    lb.replace(table)
    lb.second_hop = True
    with listener, socket.create_connection(("127.0.0.1", port)) as client:
        accepted, _ = listener.accept()
        with accepted:
            cport = client.getsockname()[1]
            ack = tcp4("127.0.0.1", "127.0.0.1", cport, port, ACK)
            assert lb.test_run(ack).verdict == "pass"
            assert lb.last().action == "local"
            stranger = tcp4("127.0.0.1", "127.0.0.1", cport ^ 1, port, ACK)
            assert lb.test_run(stranger).verdict == "tx"
            assert lb.last().action == "second_hop"


# -- changing tables ---------------------------------------------------------------------


def test_a_staged_table_waits_for_the_commit(lb: Balancer) -> None:
    a = Table.build([1, 1, 1], seed=1)
    b = a.drain(2).drain(1)  # everything on server 0
    lb.replace(a)
    sport = _flows_where(a, (2, -1))[0]
    frame = udp4("198.51.100.7", VIP, sport, 80)
    lb.stage(b)
    assert lb.table is a
    assert lb.test_run(frame).verdict == "tx"
    lb.commit()
    assert lb.table is b
    assert lb.test_run(frame).verdict == "pass"
    with pytest.raises(RuntimeError, match="nothing staged"):
        lb.commit()


def test_table_swap_under_load_meets_one_table_or_the_other(lb: Balancer) -> None:
    """Swap between two tables while another thread runs a packet whose bucket moves
    from server 1 to another: every packet goes to one of the two, as the tables say."""
    a = Table.build([1, 1, 1, 1], seed=2)
    b = a.drain(1)
    lb.replace(a)
    h = flow_hash(
        int(ipaddress.ip_address("198.51.100.7")),
        int(ipaddress.ip_address(VIP)),
        np.arange(1024, 65536),
        80,
        UDP,
    )
    ok = (a.lookup(h)[0] == 1) & (b.lookup(h)[0] == 3)
    sport = 1024 + int(np.flatnonzero(ok)[0])
    frame = udp4("198.51.100.7", VIP, sport, 80)
    stop = threading.Event()
    seen: list[bytes] = []

    def run() -> None:
        while not stop.is_set():
            v = lb.test_run(frame)
            seen.append(v.verdict.encode() + v.frame[:6])

    t = threading.Thread(target=run)
    t.start()
    try:
        for i in range(20):
            lb.replace(b if i % 2 == 0 else a)
    finally:
        stop.set()
        t.join()
    assert seen
    assert set(seen) <= {b"tx" + parse_mac(MACS[1]), b"tx" + parse_mac(MACS[3])}


def test_bad_inputs_are_refused(lb: Balancer) -> None:
    with pytest.raises(ValueError, match="six bytes"):
        parse_mac("02:00:00")
    with pytest.raises(ValueError, match="65536 buckets"):
        lb.stage(Table.build([1], buckets=1 << 17))
    with pytest.raises(ValueError, match="server indices"):
        Balancer(300)
