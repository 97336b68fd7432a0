"""Anycast GRE in user space, against scapy's GRE on the customer's side.

scapy is an implementation nobody here wrote: the customer's router builds and reads
GRE with it.  The codec is checked against it byte for byte (no root needed); then
(marker ``lab``) real packets: a client on the Internet sends to the customer's prefix,
the server's firewall passes it, the forwarder encapsulates it and the customer's router
(a raw socket for protocol 47 in its own namespace) reads it with scapy; the router
sends scapy-built GRE to the anycast endpoint and the client gets the inner packet.  A
bad header, a wrong key and a packet for another customer are dropped and counted.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any

import pytest

pytest.importorskip("scapy")
from scapy.layers.inet import GRE, IP, UDP

from anyedge.adapters import netns
from anyedge.transit import gre
from anyedge.transit.config import Customer, put_customer
from transit_support import (
    ANYCAST,
    ANYCAST6,
    CLIENT,
    CLIENT6,
    ROUTER,
    ROUTER6,
    Server,
    server,
    why_not,
)

ACME = Customer.model_validate(
    {
        "id": "acme",
        "prefixes": ["203.0.113.0/25"],
        "tunnel": {"router": ROUTER, "key": 0xACE},
        "rules": [{"action": "drop", "protocol": "udp", "ports": [666]}],
        "default": "accept",
    }
)
BETA = Customer.model_validate(
    {"id": "beta", "prefixes": ["203.0.113.128/25"], "tunnel": {"router": "198.51.100.3", "key": 7}}
)


def outer(g: Any) -> bytes:
    return bytes(IP(src=ROUTER, dst=ANYCAST) / g)


def test_scapy_reads_our_gre_and_we_read_scapys() -> None:
    inner = bytes(IP(src="100.64.0.2", dst="203.0.113.10") / UDP(sport=1, dport=2) / b"hi")
    ours = gre.header(0xACE, gre.ETH_IPV4) + inner
    theirs = GRE(bytes(ours))
    assert (theirs.key_present, theirs.key, theirs.proto) == (1, 0xACE, 0x0800)
    assert bytes(theirs.payload) == inner
    for kw in ({}, {"seqnum_present": 1, "sequence_number": 9}, {"chksum_present": 1}):
        g = gre.parse(outer(GRE(key_present=1, key=0xACE, **kw) / IP(inner)))
        assert isinstance(g, gre.Gre), kw
        assert (g.src, g.key, g.proto, g.payload) == (ROUTER, 0xACE, 0x0800, inner)
    assert gre.parse(
        outer(GRE(chksum_present=1, key_present=1, key=1, chksum=1) / IP(inner))
    ) == gre.Drop("checksum")
    ours_c = gre.header(5, with_checksum=True, payload=inner) + inner
    assert (
        GRE(ours_c).chksum
        == GRE(bytes(GRE(chksum_present=1, key_present=1, key=5) / IP(inner))).chksum
    )


def test_decisions() -> None:
    t = gre.Tunnels()
    t.set(ACME)
    t.set(BETA)
    ok = IP(src="203.0.113.10", dst="100.64.0.2") / UDP() / b"x"
    assert t.decapsulate(outer(GRE(key_present=1, key=0xACE) / ok)) == ("acme", bytes(ok))
    bad = {
        "version": GRE(version=1, key_present=1, key=0xACE) / ok,
        "flags": GRE(routing_present=1, key_present=1, key=0xACE) / ok,
        "no_key": GRE() / ok,
        "wrong_key": GRE(key_present=1, key=7) / ok,  # beta's key, from acme's router
        "foreign": GRE(key_present=1, key=0xACE) / IP(src="203.0.113.200", dst="100.64.0.2"),
        "protocol": GRE(key_present=1, key=0xACE, proto=0x6558) / ok,
    }
    for reason, g in bad.items():
        out = t.decapsulate(outer(g))
        assert isinstance(out, gre.Drop), reason
        assert out.reason == reason, (reason, out)
    assert t.decapsulate(outer(GRE(key_present=1, key=0xACE))[:22]) == gre.Drop("short")
    assert t.encapsulate("acme", bytes(IP(dst="203.0.113.200"))) == gre.Drop("misrouted", "acme")
    router, payload = t.encapsulate("acme", bytes(IP(dst="203.0.113.9") / UDP()))  # type: ignore[misc]
    assert router == ROUTER
    assert GRE(payload).key == 0xACE


@pytest.fixture
def srv() -> Any:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    with server("gre", gre=True) as s:
        yield s


def dropped(s: Server, reason: str, customer: str = "acme") -> float:
    assert s.gre is not None
    v = s.gre.registry.get_sample_value(
        "anyedge_transit_gre_dropped_total", {"customer": customer, "reason": reason}
    )
    return v or 0.0


def forwarded(s: Server, direction: str, customer: str = "acme") -> float:
    assert s.gre is not None
    v = s.gre.registry.get_sample_value(
        "anyedge_transit_gre_packets_total", {"customer": customer, "direction": direction}
    )
    return v or 0.0


def recv_all(
    sock: socket.socket, expect: int = 0, quiet: float = 0.5, patience: float = 10.0
) -> list[bytes]:
    """What arrives on ``sock``: waiting up to ``patience`` seconds for the ``expect``
    packets a test looks for (the encapsulator is a process that a busy machine may be
    slow to run), then until ``quiet`` seconds pass with nothing more."""
    out: list[bytes] = []
    deadline = time.monotonic() + patience
    while (
        len(out) < expect
        and select.select([sock], [], [], max(0.0, deadline - time.monotonic()))[0]
    ):
        out.append(sock.recv(65535))
    while select.select([sock], [], [], quiet)[0]:
        out.append(sock.recv(65535))
    return out


@pytest.mark.lab
def test_gre_both_ways_with_scapy_on_the_customer_side(srv: Server) -> None:
    s = srv
    for c in (ACME, BETA):
        assert s.applier.wait(c.id, put_customer(s.writer, c))
    with netns.entered(s.router):
        rtr = socket.socket(socket.AF_INET, socket.SOCK_RAW, gre.PROTO_GRE)
    client = s.udp()
    client.bind((CLIENT, 4000))
    with rtr, client:
        # towards the customer: through its firewall, then GRE with its key to its router
        for port in (53, 666, 53):
            client.sendto(f"to {port}".encode(), ("203.0.113.10", port))
        got = [IP(p) for p in recv_all(rtr, 2)]
        assert [(p.src, p.dst, p[GRE].key, p[GRE].proto) for p in got] == [
            (ANYCAST, ROUTER, 0xACE, 0x0800)
        ] * 2  # port 666 met acme's drop rule
        inner = [p[GRE].payload for p in got]
        assert [(i.src, i.dst, i[UDP].dport, bytes(i[UDP].payload)) for i in inner] == [
            (CLIENT, "203.0.113.10", 53, b"to 53")
        ] * 2
        assert forwarded(s, "to_customer") == 2

        # from the customer: scapy's GRE to the anycast endpoint, inner packet to the client
        reply = IP(src="203.0.113.10", dst=CLIENT) / UDP(sport=53, dport=4000) / b"answer"
        rtr.sendto(bytes(GRE(key_present=1, key=0xACE) / reply), (ANYCAST, 0))
        rtr.sendto(bytes(GRE(key_present=1, key=0xACE, chksum_present=1) / reply), (ANYCAST, 0))
        assert recv_all(client, 2) == [b"answer", b"answer"]
        assert forwarded(s, "from_customer") == 2

        # a bad header, a wrong key, a packet for another customer: dropped and counted
        spoof = IP(src="203.0.113.200", dst=CLIENT) / UDP(sport=53, dport=4000) / b"beta's"
        for g in (
            GRE(version=1, key_present=1, key=0xACE) / reply,
            GRE(key_present=1, key=0xBAD) / reply,
            GRE(key_present=1, key=7) / reply,  # beta's key from acme's router
            GRE(key_present=1, key=0xACE) / spoof,
        ):
            rtr.sendto(bytes(g), (ANYCAST, 0))
        assert recv_all(client) == []
        assert dropped(s, "version", "") == 1
        assert dropped(s, "wrong_key", "") == 1
        assert dropped(s, "wrong_key", "beta") == 1
        assert dropped(s, "foreign") == 1
        assert forwarded(s, "from_customer") == 2


@pytest.mark.lab
def test_ipv6_inside_the_tunnel_both_ways(srv: Server) -> None:
    """A customer with an IPv6 prefix: its firewall filters IPv6, GRE carries it
    (protocol 0x86DD) to the router, and the router's IPv6 reply reaches the client."""
    from scapy.layers.inet6 import IPv6

    s = srv
    rule = {"action": "accept", "protocol": "udp", "ports": [5000]}
    tunnel = {"router": ROUTER, "key": 6}
    six = Customer.model_validate(
        {"id": "six", "prefixes": ["2001:db8:1::/48"], "tunnel": tunnel, "rules": [rule]}
    )
    assert s.applier.wait("six", put_customer(s.writer, six))
    with netns.entered(s.router):
        rtr = socket.socket(socket.AF_INET, socket.SOCK_RAW, gre.PROTO_GRE)
    client = s.udp(socket.AF_INET6)
    client.bind((CLIENT6, 4000))
    with rtr, client:
        for port in (5000, 6000, 5000):
            client.sendto(f"to {port}".encode(), ("2001:db8:1::10", port))
        got = [IP(p) for p in recv_all(rtr, 2)]
        assert [(p[GRE].key, p[GRE].proto) for p in got] == [(6, 0x86DD)] * 2
        inner = [IPv6(bytes(p[GRE].payload)) for p in got]
        assert {(i.src, i.dst, i[UDP].dport) for i in inner} == {(CLIENT6, "2001:db8:1::10", 5000)}
        reply = IPv6(src="2001:db8:1::10", dst=CLIENT6) / UDP(sport=5000, dport=4000) / b"six"
        rtr.sendto(bytes(GRE(key_present=1, key=6) / reply), (ANYCAST, 0))
        assert recv_all(client, 1) == [b"six"]


@pytest.mark.lab
def test_gre_over_ipv6_for_a_router_with_only_an_ipv6_address(srv: Server) -> None:
    """The outer header IPv6 (RFC 7676): the router, scapy on an IPv6 raw socket, gets its
    customer's IPv4 traffic from the IPv6 endpoint and sends replies there; another
    router's address with the right key is dropped as ``wrong_key``."""
    s = srv
    tunnel = {"router": ROUTER6, "key": 0x66}
    v6 = Customer.model_validate({"id": "gamma", "prefixes": ["203.0.113.0/25"],
                                  "tunnel": tunnel, "default": "accept"})  # fmt: skip
    assert s.applier.wait("gamma", put_customer(s.writer, v6))
    with netns.entered(s.router):
        rtr = socket.socket(socket.AF_INET6, socket.SOCK_RAW, gre.PROTO_GRE)
        rtr.bind((ROUTER6, 0))
        liar = socket.socket(socket.AF_INET6, socket.SOCK_RAW, gre.PROTO_GRE)
    netns.batch(s.router, ["addr add 2001:db8:fffe::3/64 dev eth0 nodad"])
    liar.bind(("2001:db8:fffe::3", 0))
    client = s.udp()
    client.bind((CLIENT, 4000))
    with rtr, liar, client:
        client.sendto(b"to gamma", ("203.0.113.10", 53))
        ready = select.select([rtr], [], [], 2)[0]
        assert ready
        data, (src, *_) = rtr.recvfrom(65535)  # the kernel strips the outer IPv6 header
        assert src == ANYCAST6
        g = GRE(data)
        assert (g.key, g.proto) == (0x66, 0x0800)
        assert (g.payload.src, g.payload.dst, bytes(g.payload[UDP].payload)) == (
            CLIENT, "203.0.113.10", b"to gamma",
        )  # fmt: skip
        reply = IP(src="203.0.113.10", dst=CLIENT) / UDP(sport=53, dport=4000) / b"v6 answer"
        rtr.sendto(bytes(GRE(key_present=1, key=0x66) / reply), (ANYCAST6, 0))
        assert recv_all(client, 1) == [b"v6 answer"]
        liar.sendto(bytes(GRE(key_present=1, key=0x66) / reply), (ANYCAST6, 0))
        assert recv_all(client) == []
    assert forwarded(s, "to_customer", "gamma") == 1
    assert forwarded(s, "from_customer", "gamma") == 1
    assert dropped(s, "wrong_key", "gamma") == 1


def test_endpoints_one_per_family() -> None:
    from anyedge.transit.tunnel import by_family

    assert by_family(("192.0.2.100", "2001:db8::1")) == {
        socket.AF_INET: "192.0.2.100", socket.AF_INET6: "2001:db8::1",
    }  # fmt: skip
    with pytest.raises(ValueError, match="two IPv4 endpoints"):
        by_family(("192.0.2.100", "192.0.2.101"))
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        by_family("nowhere")
