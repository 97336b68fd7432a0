"""The IPsec endpoint's raw protocol-50 path with real packets (strongSwan's
kernel-libipsec always uses UDP encapsulation, so the in-process initiator plays the
peer here): IKE over UDP 500 without NAT detection, then an ICMP echo inside ESP sent as
IP protocol 50 to the edge namespace; the edge's kernel answers through the TUN device
and the reply comes back as protocol 50, sealed with the Child SA.  The same ESP packet
sent again is dropped and counted as a replay."""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from anyedge.adapters import netns
from anyedge.adapters.tuntap import open_tun, wait_ready
from anyedge.lab.verfploeter import echo_request, parse_reply
from anyedge.proto.esp import EspEndpoint
from anyedge.proto.ike import ChildSA, Responder
from anyedge.transit.ipsec import IpsecEndpoint
from edge_packets import ipv4
from ike_support import config, initiator, sel

pytestmark = pytest.mark.lab

PREFIX = f"aeip{os.getpid()}r"


@pytest.fixture
def edge() -> Iterator[tuple[str, str, IpsecEndpoint]]:
    peer_ns, edge_ns = PREFIX + "p", PREFIX + "e"
    for ns in (peer_ns, edge_ns):
        netns.add(ns)
    ep = None
    thread = None
    try:
        netns.veth(peer_ns, "wan", edge_ns, "wan")
        netns.batch(peer_ns, ["addr add 192.0.2.2/24 dev wan"])
        netns.batch(edge_ns, ["addr add 192.0.2.1/24 dev wan", "addr add 198.51.100.1/32 dev lo"])
        with netns.entered(edge_ns):
            fd = open_tun("aeiptun")
            netns.batch(edge_ns, ["link set aeiptun up", "route add 203.0.113.0/24 dev aeiptun"])
            ep = IpsecEndpoint(Responder(config(), time.time()), EspEndpoint(), "192.0.2.1", fd)
        assert wait_ready(edge_ns, "aeiptun")
        thread = threading.Thread(target=ep.run, daemon=True)
        thread.start()
        yield peer_ns, edge_ns, ep
    finally:
        if ep is not None:
            ep.stopping()
        if thread is not None:
            thread.join(5)
        for ns in (peer_ns, edge_ns):
            netns.remove(ns)


def _recv(sock: socket.socket, timeout: float = 3.0) -> bytes | None:
    if select.select([sock], [], [], timeout)[0]:
        return sock.recv(65535)
    return None


def test_raw_esp_round_trip_and_replay(edge: tuple[str, str, IpsecEndpoint]) -> None:
    from anyedge.proto.esp import GcmKey, open_packet, seal

    peer_ns, _, ep = edge
    with netns.entered(peer_ns):
        ike = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ESP)
    with ike, raw:
        ike.bind(("192.0.2.2", 500))
        i = initiator()
        i.tsi = (sel("203.0.113.0/24"),)
        ike.sendto(i.sa_init(), ("192.0.2.1", 500))
        i.take_sa_init(_recv(ike) or b"")
        ike.sendto(i.auth(), ("192.0.2.1", 500))
        spi_in, k_ir, k_ri = i.child_keys(i.open(_recv(ike) or b""))

        ident = os.getpid() & 0xFFFF
        inner = ipv4("203.0.113.10", "198.51.100.1", 1, echo_request(ident, 1))
        packet = seal(GcmKey(k_ir), spi_in, 1, inner)
        raw.sendto(packet, ("192.0.2.1", 0))
        reply = None
        deadline = time.monotonic() + 5
        while reply is None and time.monotonic() < deadline:
            got = _recv(raw, 1.0)
            if got is None:
                continue
            esp = got[(got[0] & 0x0F) * 4 :]
            if esp[:4] == i.child_spi:
                reply, _ = open_packet(GcmKey(k_ri), esp)
        assert reply is not None, "no ESP reply over protocol 50"
        assert parse_reply(reply) == (ident, 1)
        assert ipaddress.IPv4Address(reply[12:16]) == ipaddress.IPv4Address("198.51.100.1")

        raw.sendto(packet, ("192.0.2.1", 0))  # the same packet again
        deadline = time.monotonic() + 5
        while ep.esp.counters.replayed < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert ep.esp.counters.replayed == 1
    assert ep.esp.counters.decrypted == 1
    (child,) = [sa.child for sa in ep.esp.inbound.values()]
    assert isinstance(child, ChildSA)
    assert ep.paths[child.spi_in][0] == "raw"
