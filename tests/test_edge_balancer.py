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

import contextlib
import ctypes
import dataclasses
import ipaddress
import os
import secrets
import select
import selectors
import socket
import struct
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anyedge.adapters import netns
from anyedge.balance import Table, flow_hash, fold6
from anyedge.edge import build
from anyedge.edge.balancer import BUCKETS, Balancer, marked_mac, parse_mac
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
    tcp,
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
            assert v.frame[:12] == parse_mac(MACS[1]) + marked_mac(parse_mac(MACS[0]))
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
    # from server 2 or 1, balancers that sent it to us, its first hop: on to the second
    # (server 1 too: ECMP may land a packet on the second hop, which balances it to us)
    for peer in (2, 1):
        v = lb.test_run(_tcp(moved, ACK, parse_mac(MACS[peer])))
        assert (v.verdict, v.frame[:6]) == ("tx", parse_mac(MACS[1]))
        assert (lb.last().came_from, lb.last().marked) == (peer, False)
    # sent to us by a first hop, for us as second hop (marked): never sent on, even if
    # our table says we are the first hop (tables disagree for a moment)
    for peer in (1, 2):
        v = lb.test_run(_tcp(moved, ACK, marked_mac(parse_mac(MACS[peer]))))
        assert v.verdict == "pass"
        assert (lb.last().came_from, lb.last().marked, lb.last().action) == (peer, True, "local")
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


@pytest.mark.lab
def test_the_last_ack_of_a_syn_cookie_handshake_stays(lb: Balancer) -> None:
    """A listener that answers with SYN cookies keeps no request socket, so the
    handshake's last ACK finds only the listener: bpf_tcp_check_syncookie tells it
    apart from a moved connection's ACK.  In a namespace that always sends cookies
    (tcp_syncookies = 2): a SYN from a raw socket, the listener's SYN-ACK read back,
    then the ACK with the right cookie stays and one with a wrong cookie goes to the
    second hop."""
    ns = "ae-xlb-" + secrets.token_hex(3) + "-ck"
    table = dataclasses.replace(
        Table.build([1, 1]),
        first=np.zeros(BUCKETS, dtype=np.int32),
        second=np.ones(BUCKETS, dtype=np.int32),
    )
    lb.replace(table)
    lb.second_hop = True
    try:
        netns.add(ns)
        netns.sysctl(ns, {"net.ipv4.tcp_syncookies": "2"})
        with netns.entered(ns):
            listener = socket.create_server(("127.0.0.1", 0))
            rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
            tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        with listener, rx, tx:
            port = listener.getsockname()[1]
            syn = tcp("127.0.0.2", "127.0.0.1", 40001, port, SYN)
            tx.sendto(ipv4("127.0.0.2", "127.0.0.1", 6, syn), ("127.0.0.1", 0))
            while True:
                assert select.select([rx], [], [], 3.0)[0], "no SYN-ACK"
                pkt = rx.recv(200)
                ihl = (pkt[0] & 0x0F) * 4
                sport, dport, cookie, _, _, flags = struct.unpack("!HHIIBB", pkt[ihl : ihl + 14])
                if (sport, dport, flags & 0x12) == (port, 40001, 0x12):
                    break

            def last_ack(ack: int) -> bytes:
                seg = struct.pack(
                    "!HHIIBBHHH", 40001, port, 2, ack & 0xFFFF_FFFF, 5 << 4, ACK, 1, 0, 0
                )
                return eth(ipv4("127.0.0.2", "127.0.0.1", 6, seg))

            with netns.entered(ns):  # the test run looks sockets up in this namespace
                assert lb.test_run(last_ack(cookie + 1)).verdict == "pass"
                assert lb.last().action == "local"
                assert lb.test_run(last_ack(cookie + 1 + 0xABCDEF)).verdict == "tx"
                assert lb.last().action == "second_hop"
    finally:
        if netns.exists(ns):
            netns.remove(ns)


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


def test_before_the_first_table_everything_passes() -> None:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    with Balancer(1) as fresh:
        fresh.set_servers(MACS[:2])
        fresh.set_services([VIP])
        frame = udp4("198.51.100.7", VIP, 4000, 53)
        assert fresh.table is None
        assert fresh.test_run(frame) == ("pass", frame)
        assert fresh.packets() == {}
        fresh.replace(Table.build([1]))  # everything to server 0
        assert fresh.test_run(frame).verdict == "tx"


def test_bad_inputs_are_refused(lb: Balancer) -> None:
    with pytest.raises(ValueError, match="six bytes"):
        parse_mac("02:00:00")
    with pytest.raises(ValueError, match="65536 buckets"):
        lb.stage(Table.build([1], buckets=1 << 17))
    with pytest.raises(ValueError, match="server indices"):
        Balancer(300)
    with pytest.raises(ValueError, match="locally administered"):
        lb.set_servers(["02:00:00:00:00:01", "00:00:00:00:00:01"])


# -- real packets: a router, ECMP, four servers that balance for each other ---------------

N_SERVERS = 4
UDP_PORT, TCP_PORT = 7000, 7001
CLIENT = "198.51.100.2"


@dataclasses.dataclass
class Segment:
    """The lab: namespaces by role, the table in force and a balancer per server."""

    base: str
    client: str
    router: str
    servers: list[str]
    balancers: list[Balancer]
    table: Table

    def replace(self, table: Table) -> None:
        for b in self.balancers:
            b.replace(table)
        self.table = table

    def expected(self, sport: int, dport: int, proto: int) -> int:
        return _first(self.table, _h4(CLIENT, VIP, sport, dport, proto))


class Echo:
    """Every server's UDP and TCP service on VIP, answering with the server's name,
    in one thread of the test process (sockets made inside each namespace)."""

    def __init__(self, servers: list[str]) -> None:
        self.sel = selectors.DefaultSelector()
        self.stop = threading.Event()
        self.socks: list[socket.socket] = []
        for i, ns in enumerate(servers):
            with netns.entered(ns):
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                u.bind((VIP, UDP_PORT))
                t = socket.create_server((VIP, TCP_PORT), backlog=512)
            for s, kind in ((u, "udp"), (t, "listen")):
                s.setblocking(False)
                self.socks.append(s)
                self.sel.register(s, selectors.EVENT_READ, (kind, f"s{i}".encode()))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.sel.select(0.05):
                kind, name = key.data
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    if kind == "udp":
                        _, addr = s.recvfrom(2048)
                        s.sendto(name, addr)
                    elif kind == "listen":
                        conn, _ = s.accept()
                        conn.setblocking(False)
                        self.socks.append(conn)
                        self.sel.register(conn, selectors.EVENT_READ, ("conn", name))
                    elif s.recv(2048):
                        s.send(name)
                    else:
                        self.sel.unregister(s)
                        s.close()
                except OSError:
                    with contextlib.suppress(KeyError, ValueError):
                        self.sel.unregister(s)
                    s.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for s in self.socks:
            s.close()
        self.sel.close()


@pytest.fixture
def segment() -> Iterator[Segment]:
    """client — router — bridge — four servers.  The router sends VIP by ECMP (L4 hash)
    to the servers; each holds VIP on lo and runs the balancer (generic XDP) on eth0;
    servers 0 and 1 answer every SYN with a SYN cookie.
    Everything is removed at the end, whatever the test did."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    base = "ae-xlb-" + secrets.token_hex(3)
    sw, client, router = f"{base}-sw", f"{base}-c", f"{base}-r"
    servers = [f"{base}-s{i}" for i in range(N_SERVERS)]
    balancers: list[Balancer] = []
    echo: Echo | None = None
    try:
        for ns in (sw, client, router, *servers):
            netns.add(ns)
        netns.batch(sw, ["link add br0 type bridge", "link set br0 up"])
        netns.veth(client, "eth0", router, "c0")
        netns.batch(
            client, [f"addr add {CLIENT}/24 dev eth0", "route add default via 198.51.100.1"]
        )
        netns.veth(router, "eth0", sw, "r")
        hops = " ".join(f"nexthop via 192.0.2.{11 + i}" for i in range(N_SERVERS))
        netns.batch(
            router,
            [
                "addr add 198.51.100.1/24 dev c0",
                "addr add 192.0.2.1/24 dev eth0",
                f"route add {VIP}/32 {hops}",
            ],
        )
        netns.sysctl(router, {"net.ipv4.fib_multipath_hash_policy": "1"})
        ports = ["link set r master br0"]
        for i, ns in enumerate(servers):
            netns.veth(ns, "eth0", sw, f"s{i}")
            ports.append(f"link set s{i} master br0")
            netns.batch(
                ns,
                [
                    f"link set eth0 address {MACS[i]}",
                    f"addr add 192.0.2.{11 + i}/24 dev eth0",
                    f"addr add {VIP}/32 dev lo",
                    "route add 198.51.100.0/24 via 192.0.2.1",
                ],
            )
        netns.batch(sw, ports)
        for ns in servers[:2]:  # these answer every SYN with a cookie, keep no request
            netns.sysctl(ns, {"net.ipv4.tcp_syncookies": "2"})
        table = Table.build([1] * N_SERVERS, seed=14)
        for i, ns in enumerate(servers):
            b = Balancer(i)
            balancers.append(b)
            b.set_servers(MACS[:N_SERVERS])
            b.set_services([VIP])
            b.replace(table)
            b.attach("eth0", netns=ns, mode="generic")
        echo = Echo(servers)
        yield Segment(base, client, router, servers, balancers, table)
    finally:
        if echo is not None:
            echo.close()
        for b in balancers:
            b.close()
        for ns in (sw, client, router, *servers):
            if netns.exists(ns):
                netns.remove(ns)
        assert not netns.listed(base)


def _udp_flows(seg: Segment, n: int) -> dict[int, tuple[int, bytes]]:
    """n UDP flows from the client, one datagram each: source port -> (server the
    table names, the answer)."""
    out: dict[int, tuple[int, bytes]] = {}
    with netns.entered(seg.client):
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    try:
        for s in socks:
            s.settimeout(3.0)
            s.connect((VIP, UDP_PORT))
            s.send(b"who")
        for s in socks:
            sport = s.getsockname()[1]
            try:
                answer = s.recv(100)
            except TimeoutError:
                answer = b""
            out[sport] = (seg.expected(sport, UDP_PORT, UDP), answer)
    finally:
        for s in socks:
            s.close()
    return out


def _ask(conns: list[socket.socket]) -> list[bytes]:
    """Send on every connection, then read each one's answer (b"" when broken)."""
    for c in conns:
        with contextlib.suppress(OSError):
            c.send(b"who")
    answers = []
    for c in conns:
        try:
            answers.append(c.recv(100))
        except OSError:
            answers.append(b"")
    return answers


@pytest.mark.lab
@pytest.mark.parametrize("change", ["drain", "add"])
def test_every_flow_is_answered_by_the_server_the_table_names(
    segment: Segment, change: str
) -> None:
    """200 UDP flows and 200 TCP connections: each answered by its bucket's first hop,
    wherever ECMP delivered it; then, with the connections open, server 3 drains (or,
    from a table of three, is added): with the second hop every connection survives;
    with it switched off, exactly those whose bucket moved break."""
    seg = segment
    n = 200
    servers = N_SERVERS if change == "drain" else N_SERVERS - 1
    seg.replace(Table.build([1] * servers, seed=14))
    udp_flows = _udp_flows(seg, n)
    wrong = {p: r for p, r in udp_flows.items() if r[1] != f"s{r[0]}".encode()}
    assert not wrong, f"{len(wrong)} of {n} UDP flows answered by the wrong server: {wrong}"

    conns: list[socket.socket] = []
    try:
        with netns.entered(seg.client):
            for _ in range(n):
                c = socket.create_connection((VIP, TCP_PORT), timeout=3.0)
                conns.append(c)
        owner = [seg.expected(c.getsockname()[1], TCP_PORT, 6) for c in conns]
        answers = _ask(conns)
        assert answers == [f"s{o}".encode() for o in owner]
        assert len(set(owner)) == servers

        # ECMP spread the packets; the balancers, not the router, chose the servers
        forwarders = {
            i for i, b in enumerate(seg.balancers) if any(k == "first_hop" for k, _ in b.packets())
        }
        assert len(forwarders) >= 2, forwarders
        local = sum(b.packets().get(("local", i), 0) for i, b in enumerate(seg.balancers))
        assert local >= n * 2  # every UDP datagram and TCP segment ended at its server

        # server 3 drains, or joins, while the connections stay open
        seg.replace(seg.table.drain(3) if change == "drain" else seg.table.add(1))
        now = [seg.expected(c.getsockname()[1], TCP_PORT, 6) for c in conns]
        moved = [i for i in range(n) if now[i] != owner[i]]
        assert 0.1 * n < len(moved) < 0.4 * n  # about a quarter
        if change == "drain":
            assert all(owner[i] == 3 for i in moved)
        else:
            assert all(now[i] == 3 for i in moved)
        answers = _ask(conns)
        broken = [i for i, a in enumerate(answers) if a != f"s{owner[i]}".encode()]
        assert broken == [], f"{len(broken)} of {n} connections broken with the second hop"
        passes = sum(
            v for b in seg.balancers for (k, _), v in b.packets().items() if k == "second_hop"
        )
        assert passes >= len(moved)
        print(f"{change}: {len(moved)} of {n} connections moved, {passes} second-hop passes")

        # new connections go to the new table's first hops, the last ACK of their
        # handshake too (servers 0 and 1 answer with SYN cookies: only the listener
        # is there to find, and bpf_tcp_check_syncookie keeps the ACK)
        fresh: list[socket.socket] = []
        try:
            with netns.entered(seg.client):
                for _ in range(100):
                    fresh.append(socket.create_connection((VIP, TCP_PORT), timeout=3.0))
            want = [f"s{seg.expected(c.getsockname()[1], TCP_PORT, 6)}".encode() for c in fresh]
            assert _ask(fresh) == want
        finally:
            for c in fresh:
                c.close()

        for b in seg.balancers:
            b.second_hop = False
        answers = _ask(conns)
        broken = [i for i, a in enumerate(answers) if a != f"s{owner[i]}".encode()]
        assert broken == moved, f"{len(broken)} broken, {len(moved)} moved of {n}"
    finally:
        for c in conns:
            c.close()


def test_a_server_on_another_interface_is_reached_by_redirect(lb: Balancer, four: Table) -> None:
    """A server whose entry names an interface other than the one the packet came in
    on (here: the test run's loopback, ifindex 1) is sent to with bpf_redirect."""
    ifindexes = [0, 0, 7, 0]  # server 2 behind interface 7
    lb.set_servers(MACS[:4], ifindexes)
    try:
        verdicts = {}
        for sport in range(5000, 5100):
            first = _first(four, _h4("198.51.100.7", VIP, sport, 443, UDP))
            verdicts[first] = lb.test_run(udp4("198.51.100.7", VIP, sport, 443)).verdict
        assert verdicts == {0: "pass", 1: "tx", 2: "redirect", 3: "tx"}
    finally:
        lb.set_servers(MACS)


def test_object_matches_the_python_structs() -> None:
    """Field by field, the object's BTF structs are balancer.py's ctypes structs."""
    import re
    import subprocess

    from anyedge.edge import balancer

    if build.missing_tools():
        pytest.skip("cannot build BPF programs: " + ", ".join(build.missing_tools()))
    dump = subprocess.run(
        ["bpftool", "btf", "dump", "file", str(build.object_path("balancer")), "format", "raw"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for c_name, py in (
        ("lb_server", balancer._Server),
        ("lb_config", balancer._Config),
        ("lb_service", balancer._Service),
        ("lb_debug", balancer._Debug),
    ):
        head = re.search(rf"STRUCT '{c_name}' size=(\d+)", dump)
        assert head, c_name
        assert int(head.group(1)) == ctypes.sizeof(py), c_name
        block = dump[head.end() :].split("\n[")[0]
        members = dict(re.findall(r"'(\w+)' type_id=\d+ bits_offset=(\d+)", block))
        want = {n: getattr(py, n).offset for n, _ in py._fields_}
        assert {
            ("came_from" if n == "from" else n): int(b) // 8 for n, b in members.items()
        } == want


# -- the kernel against a model in Python -------------------------------------------------


@st.composite
def tables(draw: st.DrawFn) -> Table:
    """A table of 2-5 servers after 0-4 random changes (so second hops of all kinds)."""
    table = Table.build(
        draw(st.lists(st.integers(1, 3), min_size=2, max_size=5)), seed=draw(st.integers(0, 99))
    )
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["drain", "activate", "add", "reweight", "remove"]))
        server = draw(st.integers(0, table.servers - 1))
        with contextlib.suppress(ValueError):  # e.g. no active server would be left
            if op == "add" and table.servers < len(MACS):
                table = table.add(draw(st.integers(1, 3)))
            elif op == "reweight":
                table = table.reweight(server, draw(st.integers(0, 3)))
            elif op in ("drain", "activate", "remove"):
                table = getattr(table, op)(server)
    return table


def _model(
    table: Table, h: int, proto: int, flags: int, peer: int, marked: bool, on: bool
) -> tuple[str, int]:
    """What server 0 should do with a packet (no socket here), read off the table."""
    first, second = (int(x) for x in table.lookup(np.uint32(h)))
    came_from = peer if peer > 0 else -1  # its own MAC, or the router's: not a peer
    if first != 0:
        return ("first_hop", first) if came_from < 0 else ("local", 0)
    if on and not marked and second > 0 and proto == 6 and not flags & SYN:
        return ("second_hop", second)
    return ("local", 0)


@settings(max_examples=40)
@given(
    tables(),
    st.lists(
        st.tuples(
            st.integers(1024, 65535),  # source port
            st.sampled_from([6, 17]),
            st.sampled_from([SYN, ACK, ACK | PSH, FIN | ACK, RST, SYN | ACK]),
            st.integers(-1, 4),  # the server it came from (-1: the router)
            st.booleans(),  # marked
        ),
        min_size=1,
        max_size=10,
    ),
    st.booleans(),
)
def test_the_kernel_decides_as_the_table_reads(
    lb: Balancer, table: Table, pkts: list[tuple[int, int, int, int, bool]], on: bool
) -> None:
    lb.replace(table)
    lb.second_hop = on
    try:
        for sport, proto, flags, peer, marked in pkts:
            marked = marked and peer > 0
            if proto == 6:
                frame = tcp4("198.51.100.7", VIP, sport, 80, flags)
            else:
                frame = udp4("198.51.100.7", VIP, sport, 80)
            src = CLIENT_MAC if peer < 0 else parse_mac(MACS[peer])
            frame = frame[:6] + (marked_mac(src) if marked else src) + frame[12:]
            h = _h4("198.51.100.7", VIP, sport, 80, proto)
            kind, server = _model(table, h, proto, flags, peer, marked, on)
            v = lb.test_run(frame)
            assert lb.last().action == ("local" if kind == "local" else kind)
            if kind == "local":
                assert v == ("pass", frame)
            else:
                me = parse_mac(MACS[0])
                assert v.verdict == "tx"
                assert v.frame[:6] == parse_mac(MACS[server])
                assert v.frame[6:12] == (marked_mac(me) if kind == "second_hop" else me)
                assert v.frame[12:] == frame[12:]
    finally:
        lb.second_hop = True
