"""Socket dispatch with sk_lookup: one socket serves a range of addresses and ports.

The ranges are checked in Python; the program is tried with real sockets (marker
``lab``): a client namespace and a server namespace joined by a veth pair, the
server holding 203.0.113.0/24 and 192.0.2.0/24 as local routes on ``lo`` (the
"AnyIP" trick of the BPF edge post), one TCP listener and one UDP socket bound to
127.0.0.1 there, and the program attached to the server's namespace.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import secrets
import socket
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from anyedge.adapters import netns
from anyedge.edge import build
from anyedge.edge.dispatch import (
    MAX_RANGES,
    Dispatch,
    Range,
    RangeRecord,
    RangeSet,
    ServiceCounter,
)

SO_COOKIE = 57  # asm-generic/socket.h
IP_RECVORIGDSTADDR = 20  # linux/in.h; IP_ORIGDSTADDR, the cmsg type, is the same number
TCP_RANGE = Range("tcp", "203.0.113.0/24", (7000, 7999), service=1)
TCP_LOW_PORTS = Range("tcp", "192.0.2.10/32", (1, 1024), service=1)
UDP_RANGE = Range("udp", "203.0.113.0/24", (7000, 7999), service=2)


# -- ranges (no kernel needed) ----------------------------------------------------------


def test_range_records_are_the_c_struct() -> None:
    assert ctypes.sizeof(RangeRecord) == 48
    assert ctypes.sizeof(RangeSet) == 8 + MAX_RANGES * 48
    rec = TCP_RANGE.record()
    assert bytes(rec.addr) == bytes([203, 0, 113, 0]) + bytes(12)
    assert bytes(rec.mask) == b"\xff\xff\xff\x00" + bytes(12)
    assert (rec.port_min, rec.port_max, rec.service, rec.family, rec.proto) == (
        7000,
        7999,
        1,
        socket.AF_INET,
        socket.IPPROTO_TCP,
    )
    one = Range("udp", "2001:db8::53", 53, service=7).record()
    assert bytes(one.mask) == b"\xff" * 16
    assert (one.port_min, one.port_max, one.family, one.proto) == (53, 53, 10, 17)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("sctp", "203.0.113.0/24", 80, 1), "'tcp' or 'udp'"),
        (("tcp", "203.0.113.1/24", 80, 1), "host bits set"),
        (("tcp", "203.0.113.0/24", (90, 80), 1), "low <= high"),
        (("tcp", "203.0.113.0/24", 0, 1), "1 <= low"),
        (("tcp", "203.0.113.0/24", 65536, 1), "<= 65535"),
        (("tcp", "203.0.113.0/24", 80, 256), "service is 0 to 255"),
    ],
)
def test_bad_ranges_are_refused(args: tuple[str, str, int, int], problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        Range(*args)  # type: ignore[arg-type]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "BPF programs need root (CAP_BPF and CAP_NET_ADMIN)"
    lacking = build.missing_tools()
    return "cannot build BPF programs, missing: " + ", ".join(lacking) if lacking else None


def test_object_matches_the_python_records() -> None:
    """Field by field, ``struct skd_range`` in the object's BTF is :class:`RangeRecord`."""
    lacking = build.missing_tools()
    if lacking:
        pytest.skip("cannot build BPF programs, missing: " + ", ".join(lacking))
    dump = subprocess.run(
        ["bpftool", "btf", "dump", "file", str(build.object_path("sk_dispatch")), "format", "raw"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    block = dump.split("STRUCT 'skd_range' size=48")[1].split("\n[")[0]
    members = dict(re.findall(r"'(\w+)' type_id=\d+ bits_offset=(\d+)", block))
    assert {n: int(b) // 8 for n, b in members.items()} == {
        name: getattr(RangeRecord, name).offset for name, _ in RangeRecord._fields_
    }


# -- real sockets in namespaces ---------------------------------------------------------


@dataclass
class Pair:
    client: str
    server: str
    listener: socket.socket  # TCP, 127.0.0.1:9000 in the server namespace
    udp: socket.socket  # UDP, 127.0.0.1:9001 there


@pytest.fixture
def pair() -> Iterator[Pair]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    base = "ae-sk-" + secrets.token_hex(3)
    client, server = base + "-c", base + "-s"
    made: list[socket.socket] = []
    try:
        netns.add(client)
        netns.add(server)
        netns.veth(client, "eth0", server, "eth0")
        netns.batch(
            client,
            [
                "addr add 100.64.0.2/30 dev eth0",
                "route add 203.0.113.0/24 via 100.64.0.1",
                "route add 192.0.2.0/24 via 100.64.0.1",
            ],
        )
        netns.batch(
            server,
            [
                "addr add 100.64.0.1/30 dev eth0",
                "route add local 203.0.113.0/24 dev lo",
                "route add local 192.0.2.0/24 dev lo",
            ],
        )
        with netns.entered(server):
            listener = socket.socket()
            listener.bind(("127.0.0.1", 9000))
            listener.listen(64)
            listener.settimeout(5)
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 9001))
            udp.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
            udp.settimeout(5)
        made += [listener, udp]
        yield Pair(client, server, listener, udp)
    finally:
        for s in made:
            s.close()
        for ns in (client, server):
            netns.remove(ns)
        assert not netns.listed(base)


@pytest.fixture
def dispatch(pair: Pair) -> Iterator[Dispatch]:
    with Dispatch() as d:
        d.register(1, pair.listener)
        d.register(2, pair.udp)
        d.replace([TCP_RANGE, TCP_LOW_PORTS, UDP_RANGE])
        d.attach(pair.server)
        yield d


def connect(pair: Pair, address: str, port: int) -> socket.socket:
    """A TCP connection from the client namespace (ConnectionRefusedError if nothing
    takes it)."""
    with netns.entered(pair.client):
        c = socket.socket()
    c.settimeout(5)
    try:
        c.connect((address, port))
    except BaseException:
        c.close()
        raise
    return c


def refused(pair: Pair, address: str, port: int) -> bool:
    try:
        connect(pair, address, port).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.lab
def test_one_tcp_socket_serves_a_range_of_addresses_and_ports(
    pair: Pair, dispatch: Dispatch
) -> None:
    """The post's example: 203.0.113.77:7321 reaches the listener on 127.0.0.1:9000,
    as do the range's corners and a /32 with ports 1 to 1024."""
    served = [
        ("203.0.113.77", 7321),
        ("203.0.113.0", 7000),
        ("203.0.113.255", 7999),
        ("192.0.2.10", 1),
        ("192.0.2.10", 22),
        ("192.0.2.10", 1024),
    ]
    for address, port in served:
        with connect(pair, address, port) as c:
            conn, peer = pair.listener.accept()
            with conn:
                assert conn.getsockname() == (address, port)  # the address asked for
                assert peer[0] == "100.64.0.2"
                c.sendall(b"ping")
                assert conn.recv(4) == b"ping"
                conn.sendall(b"pong")  # the answer goes back from that address
                assert c.recv(4) == b"pong"
    assert dispatch.counters()[1].assigned == len(served)
    assert dispatch.counters()[1].missing == dispatch.counters()[1].refused == 0


def _recv_with_destination(sock: socket.socket) -> tuple[bytes, tuple[str, int]]:
    data, anc, _flags, _peer = sock.recvmsg(64, socket.CMSG_SPACE(16))
    for level, kind, raw in anc:
        if level == socket.SOL_IP and kind == IP_RECVORIGDSTADDR:
            port, addr = struct.unpack("!H4s", raw[2:8])
            return data, (socket.inet_ntoa(addr), port)
    raise AssertionError("no IP_ORIGDSTADDR")


@pytest.mark.lab
def test_one_udp_socket_serves_a_range(pair: Pair, dispatch: Dispatch) -> None:
    """Datagrams to 20 addresses and ports of the range all reach the one UDP socket,
    each with its own destination (IP_ORIGDSTADDR)."""
    with netns.entered(pair.client):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    targets = [(f"203.0.113.{1 + 13 * i}", 7000 + 52 * i) for i in range(20)]
    with c:
        for i, target in enumerate(targets):
            c.sendto(b"q%d" % i, target)
            data, dest = _recv_with_destination(pair.udp)
            assert (data, dest) == (b"q%d" % i, target)
    assert dispatch.counters()[2].assigned == 20


@pytest.mark.lab
def test_traffic_outside_the_ranges_is_not_stolen(pair: Pair, dispatch: Dispatch) -> None:
    """Another port, another address, the other protocol: the ordinary lookup."""
    with netns.entered(pair.server):
        own = socket.socket()
        own.bind(("203.0.113.77", 8080))  # outside the port range
        own.listen(4)
        own.settimeout(5)
        own_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        own_udp.bind(("192.0.2.10", 7321))  # outside the UDP range's prefix
        own_udp.settimeout(5)
    with own, own_udp:
        with connect(pair, "203.0.113.77", 8080):
            conn, _ = own.accept()  # its own listener, not the dispatch socket
            conn.close()
        assert refused(pair, "203.0.113.77", 8000)  # one port past the range
        assert refused(pair, "192.0.2.11", 22)  # the next address
        assert refused(pair, "192.0.2.10", 1025)
        with netns.entered(pair.client):
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with c:
            c.sendto(b"mine", ("192.0.2.10", 7321))  # UDP, outside the UDP range
            assert own_udp.recvfrom(16)[0] == b"mine"
    # a TCP connection to a UDP-only destination was never counted for the services
    assert dispatch.counters()[1].assigned == 0
    assert dispatch.counters()[2].assigned == 0


@pytest.mark.lab
def test_ranges_and_sockets_change_and_the_link_detaches(pair: Pair, dispatch: Dispatch) -> None:
    with connect(pair, "203.0.113.9", 7001):
        pair.listener.accept()[0].close()
    # a range taken out: the ordinary lookup, where nothing listens
    dispatch.remove(TCP_RANGE)
    assert TCP_RANGE not in dispatch.ranges
    assert refused(pair, "203.0.113.9", 7001)
    dispatch.add(TCP_RANGE)
    with connect(pair, "203.0.113.9", 7001):
        pair.listener.accept()[0].close()
    # no socket for the service: counted as missing, the ordinary lookup
    dispatch.unregister(1)
    assert refused(pair, "203.0.113.9", 7002)
    # a socket of the other protocol: bpf_sk_assign refuses it, the ordinary lookup
    dispatch.register(1, pair.udp)
    assert refused(pair, "203.0.113.9", 7003)
    dispatch.register(1, pair.listener)
    with connect(pair, "203.0.113.9", 7004):
        pair.listener.accept()[0].close()
    assert dispatch.counters()[1] == ServiceCounter(assigned=3, missing=1, refused=1)
    # detached: the namespace's lookups are its own again
    dispatch.detach()
    assert refused(pair, "203.0.113.9", 7005)


# -- the program against a model (BPF_PROG_TEST_RUN, no traffic) -----------------------

PREFIXES = [
    "203.0.113.0/24",
    "203.0.113.64/26",
    "203.0.113.77/32",
    "192.0.2.0/24",
    "0.0.0.0/0",
    "2001:db8::/32",
    "2001:db8::/64",
    "2001:db8::77/128",
]
DESTINATIONS = ["203.0.113.77", "203.0.113.5", "203.0.113.70", "192.0.2.10", "198.51.100.1"]
DESTINATIONS += ["2001:db8::77", "2001:db8::5", "2001:db8:1::77"]
PORTS = [1, 22, 53, 1024, 1025, 7000, 7321, 7999, 8000, 65535]
SERVICES = {1: ("tcp", 4), 2: ("udp", 4), 3: ("tcp", 6), 4: ("udp", 6)}  # 5: no socket


@dataclass(frozen=True)
class Service:
    protocol: str
    family: int
    cookie: int  # SO_COOKIE: what a test run hands back
    sock: socket.socket


@pytest.fixture(scope="module")
def services() -> Iterator[dict[int, Service]]:
    """Per service, a socket on loopback (nothing is sent to it)."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    made: dict[int, Service] = {}
    try:
        for service, (proto, family) in SERVICES.items():
            af = socket.AF_INET if family == 4 else socket.AF_INET6
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            s = socket.socket(af, kind)
            made[service] = Service(proto, family, 0, s)
            s.bind(("127.0.0.1" if family == 4 else "::1", 0))  # ::1: IPv6 only
            if proto == "tcp":
                s.listen(1)
            cookie = int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")
            made[service] = Service(proto, family, cookie, s)
        yield made
    finally:
        for svc in made.values():
            svc.sock.close()


@pytest.fixture(scope="module")
def loaded(services: dict[int, Service]) -> Iterator[Dispatch]:
    with Dispatch() as d:
        for service, svc in services.items():
            d.register(service, svc.sock)
        yield d


def _expected(
    ranges: list[Range], services: dict[int, Service], proto: str, dest: str, port: int
) -> int:
    """What a plain first-match reading of the ranges gives: the cookie of the socket
    the lookup is handed to, or 0 (no range; no socket; a socket the kernel refuses:
    another protocol, or another family)."""
    addr = ipaddress.ip_address(dest)
    for r in ranges:
        net = ipaddress.ip_network(r.prefix)
        low, high = r.port_range
        same = r.protocol == proto and addr.version == net.version
        if same and addr in net and low <= port <= high:
            svc = services.get(r.service)
            if svc is None or svc.protocol != proto or svc.family != addr.version:
                return 0
            return svc.cookie
    return 0


@st.composite
def _ranges(draw: st.DrawFn) -> Range:
    """A range whose service is mostly the socket of its protocol and family (so that
    lookups are handed out), sometimes another or none (5)."""
    proto = draw(st.sampled_from(["tcp", "udp"]))
    prefix = draw(st.sampled_from(PREFIXES))
    family = ipaddress.ip_network(prefix).version
    own = next(s for s, pf in SERVICES.items() if pf == (proto, family))
    service = draw(st.sampled_from([own, own, own, 1, 2, 3, 4, 5]))
    ports = sorted(draw(st.tuples(st.sampled_from(PORTS), st.sampled_from(PORTS))))
    return Range(proto, prefix, (ports[0], ports[1]), service)


def _lookups(ranges: list[Range]) -> st.SearchStrategy[tuple[str, str, int]]:
    """Lookups anywhere, and lookups aimed at a range: its protocol, an address in or
    near its prefix, a port at or next to its ends."""
    anywhere = st.tuples(
        st.sampled_from(["tcp", "udp"]), st.sampled_from(DESTINATIONS), st.sampled_from(PORTS)
    )

    @st.composite
    def aimed(draw: st.DrawFn) -> tuple[str, str, int]:
        r = draw(st.sampled_from(ranges))
        net = ipaddress.ip_network(r.prefix)
        inside = [d for d in DESTINATIONS if ipaddress.ip_address(d) in net]
        dest = draw(st.sampled_from(inside or DESTINATIONS))
        low, high = r.port_range
        port = draw(st.sampled_from([low, high, max(1, low - 1), min(65535, high + 1)]))
        return r.protocol, dest, port

    return st.one_of(anywhere, aimed())


@settings(max_examples=100)
@given(
    ranges=st.lists(
        _ranges(),
        min_size=1,
        max_size=8,
    ),
    data=st.data(),
)
def test_the_kernel_hands_lookups_out_as_a_model_says(
    loaded: Dispatch,
    services: dict[int, Service],
    ranges: list[Range],
    data: st.DataObject,
) -> None:
    """Random ranges over IPv4 and IPv6, TCP and UDP, and random lookups: the socket
    the program hands each lookup to (by its cookie) is the one a first-match reading
    of the ranges in Python names; the assigned counters add up."""
    lookups = data.draw(st.lists(_lookups(ranges), min_size=1, max_size=12))
    loaded.replace(ranges)
    before = sum(c.assigned for c in loaded.counters().values())
    got = [loaded.test_run(*lookup) for lookup in lookups]
    assert got == [_expected(ranges, services, *lookup) for lookup in lookups]
    after = sum(c.assigned for c in loaded.counters().values())
    assert after - before == sum(1 for cookie in got if cookie)
    event("some lookups assigned" if any(got) else "no lookup assigned")
