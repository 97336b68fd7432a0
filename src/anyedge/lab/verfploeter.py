"""Verfploeter in the lab: which site each client's traffic reaches, seen from the sites.

Verfploeter (de Vries et al., IMC 2017) maps an anycast service's catchment without
probes in the clients' networks: one site pings every network *from the anycast
address*, and each echo reply goes where that network's route to the anycast address
leads — to the site of its catchment, which records it.  Here one site (the first, by
default) sends an ICMP echo request with the service address as its source to every
client; every site listens with a raw ICMP socket opened in its namespace, and the site
whose socket sees a client's reply (our identifier, the client's sequence number) is
that client's catchment.  It should equal what ``anyedge lab probe`` and
``anyedge lab compare`` measure from the clients' side.

Sites with servers behind them (``servers: N``) hold the anycast address on their
servers, not in the site's namespace, and are not mapped.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time

from ..adapters import netns
from ..model.lab import NodeKind
from ..proto.inet import checksum
from .build import LabError
from .plan import LabPlan

ECHO_REQUEST, ECHO_REPLY = 8, 0


def echo_request(ident: int, seq: int, payload: bytes = b"anyedge verfploeter") -> bytes:
    head = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq)
    c = checksum(head + payload)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, c, ident, seq) + payload


def parse_reply(packet: bytes) -> tuple[int, int] | None:
    """(identifier, sequence) of an ICMP echo reply in an IPv4 packet, else None."""
    if len(packet) < 20:
        return None
    ihl = (packet[0] & 0x0F) * 4
    icmp = packet[ihl : ihl + 8]
    if len(icmp) < 8 or icmp[0] != ECHO_REPLY:
        return None
    _, _, _, ident, seq = struct.unpack("!BBHHH", icmp)
    return ident, seq


def client_addresses(plan: LabPlan) -> dict[str, str]:
    """Each client's address on its access link."""
    return {n.name: n.ports[0].ip for n in plan.of_kind(NodeKind.CLIENT) if n.ports}


def catchment_map(
    plan: LabPlan, sender: str | None = None, timeout: float = 2.0
) -> dict[str, str | None]:
    """client -> the site at which its echo reply arrived (None: at none)."""
    sites = [n for n in plan.sites if not n.servers]
    if not sites:
        raise LabError("no site holds the anycast address itself (every site has servers)")
    src = plan.site_node(sender) if sender else sites[0]
    clients = client_addresses(plan)
    names = list(clients)
    ident = int.from_bytes(os.urandom(2), "big")
    listeners: dict[socket.socket, str] = {}
    try:
        for n in sites:
            with netns.entered(n.namespace):
                s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            s.setblocking(False)
            listeners[s] = str(n.site)
        with netns.entered(src.namespace):
            out = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        with out:
            out.bind((plan.service_address, 0))
            for seq, c in enumerate(names):
                out.sendto(echo_request(ident, seq), (clients[c], 0))
        found: dict[str, str | None] = dict.fromkeys(names)
        end = time.monotonic() + timeout
        while any(v is None for v in found.values()) and time.monotonic() < end:
            ready, _, _ = select.select(list(listeners), [], [], max(0.0, end - time.monotonic()))
            for s in ready:
                while True:
                    try:
                        packet = s.recv(2048)
                    except BlockingIOError:
                        break
                    got = parse_reply(packet)
                    if got and got[0] == ident and got[1] < len(names):
                        found[names[got[1]]] = found[names[got[1]]] or listeners[s]
        return found
    finally:
        for s in listeners:
            s.close()
