"""TURN's kernel fast path: the loader of ``bpf/turn_fast.bpf.c``.

::

    from anyedge.edge.turnfast import TurnFast

    with TurnFast() as fast:
        fast.attach("eth0")                        # XDP, native mode by default
        fast.install(RelayedChannel(client=("192.0.2.10", 40000), server=("198.51.100.7", 3478),
                                    channel=0x4000, relay=("198.51.100.7", 50000),
                                    peer=("203.0.113.5", 6000)), deadline_ns)
        print(fast.usage(channel))                 # Usage(to_peer_packets=..., ...)
        fast.remove(channel)

The program relays ChannelData of the channels installed here, both ways (its C source
says how); this module only writes and reads its maps: a pair for IPv4 and a pair for
IPv6, chosen by the channel's addresses (client, listener, relayed address and peer all
of one family).  Deadlines are
``CLOCK_MONOTONIC`` nanoseconds (``time.monotonic_ns()``, which is the kernel's
``bpf_ktime_get_ns``).  Who decides which channels are installed, and when they go, is
the TURN service's business (:mod:`anyedge.services.turn.fastpath`).
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import build
from .libbpf import BpfError, BpfObject, Loaded, Map, check_size, detach_xdp, possible_cpus

PROGRAM = "turn_fast"
OUTCOMES = ("to_peer", "to_client", "passed", "expired", "no_route")

Addr = tuple[str, int]
_IP4 = ctypes.c_uint8 * 4
_IP6 = ctypes.c_uint8 * 16


class ClientKey(ctypes.Structure):
    """``struct tf_client_key``."""

    _fields_ = (
        ("client_ip", _IP4),
        ("server_ip", _IP4),
        ("client_port", ctypes.c_uint16),
        ("server_port", ctypes.c_uint16),
        ("channel", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
    )


class ClientValue(ctypes.Structure):
    """``struct tf_client_val``."""

    _fields_ = (
        ("relay_ip", _IP4),
        ("peer_ip", _IP4),
        ("relay_port", ctypes.c_uint16),
        ("peer_port", ctypes.c_uint16),
        ("pad", ctypes.c_uint32),
        ("deadline_ns", ctypes.c_uint64),
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
    )


class PeerKey(ctypes.Structure):
    """``struct tf_peer_key``."""

    _fields_ = (
        ("peer_ip", _IP4),
        ("relay_ip", _IP4),
        ("peer_port", ctypes.c_uint16),
        ("relay_port", ctypes.c_uint16),
    )


class PeerValue(ctypes.Structure):
    """``struct tf_peer_val``."""

    _fields_ = (
        ("client_ip", _IP4),
        ("server_ip", _IP4),
        ("client_port", ctypes.c_uint16),
        ("server_port", ctypes.c_uint16),
        ("channel", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
        ("deadline_ns", ctypes.c_uint64),
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
    )


class ClientKey6(ctypes.Structure):
    """``struct tf_client6_key``."""

    _fields_ = (
        ("client_ip", _IP6),
        ("server_ip", _IP6),
        ("client_port", ctypes.c_uint16),
        ("server_port", ctypes.c_uint16),
        ("channel", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
    )


class ClientValue6(ctypes.Structure):
    """``struct tf_client6_val``."""

    _fields_ = (
        ("relay_ip", _IP6),
        ("peer_ip", _IP6),
        ("relay_port", ctypes.c_uint16),
        ("peer_port", ctypes.c_uint16),
        ("pad", ctypes.c_uint32),
        ("deadline_ns", ctypes.c_uint64),
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
    )


class PeerKey6(ctypes.Structure):
    """``struct tf_peer6_key``."""

    _fields_ = (
        ("peer_ip", _IP6),
        ("relay_ip", _IP6),
        ("peer_port", ctypes.c_uint16),
        ("relay_port", ctypes.c_uint16),
    )


class PeerValue6(ctypes.Structure):
    """``struct tf_peer6_val``."""

    _fields_ = (
        ("client_ip", _IP6),
        ("server_ip", _IP6),
        ("client_port", ctypes.c_uint16),
        ("server_port", ctypes.c_uint16),
        ("channel", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
        ("deadline_ns", ctypes.c_uint64),
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
    )


@dataclass(frozen=True, slots=True)
class RelayedChannel:
    """One bound channel of a UDP allocation: the client's 5-tuple (client and
    listener), the channel number, the relayed address and the peer, all IPv4 or all
    IPv6."""

    client: Addr
    server: Addr
    channel: int
    relay: Addr
    peer: Addr


@dataclass(frozen=True, slots=True)
class Usage:
    """Payload packets and bytes the program relayed for one channel since installed."""

    to_peer_packets: int = 0
    to_peer_bytes: int = 0
    to_client_packets: int = 0
    to_client_bytes: int = 0


def _ip(host: str) -> ctypes.Array[ctypes.c_uint8]:
    if ":" in host:
        return _IP6.from_buffer_copy(socket.inet_pton(socket.AF_INET6, host))
    return _IP4.from_buffer_copy(socket.inet_aton(host))


def _v6(ch: RelayedChannel) -> bool:
    """Whether ``ch`` is IPv6 (ValueError when its addresses mix families)."""
    families = {":" in a[0] for a in (ch.client, ch.server, ch.relay, ch.peer)}
    if len(families) != 1:
        raise ValueError(f"a channel's addresses are of one family: {ch}")
    return families == {True}


def _port(port: int) -> int:
    return socket.htons(port)


_Records = tuple[type[ctypes.Structure], type[ctypes.Structure]]
_CLIENT: dict[bool, _Records] = {False: (ClientKey, ClientValue), True: (ClientKey6, ClientValue6)}
_PEER: dict[bool, _Records] = {False: (PeerKey, PeerValue), True: (PeerKey6, PeerValue6)}


def _keys(ch: RelayedChannel) -> tuple[ctypes.Structure, ctypes.Structure]:
    v6 = _v6(ch)
    ck = _CLIENT[v6][0](_ip(ch.client[0]), _ip(ch.server[0]), _port(ch.client[1]))
    ck.server_port, ck.channel = _port(ch.server[1]), ch.channel
    pk = _PEER[v6][0](_ip(ch.peer[0]), _ip(ch.relay[0]), _port(ch.peer[1]), _port(ch.relay[1]))
    return ck, pk


@dataclass(frozen=True, slots=True)
class ChannelKeys:
    """A channel's keys in the maps, as bytes (:meth:`TurnFast.keys`)."""

    v6: bool
    client: bytes
    peer: bytes


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every channel's counters at one time (:meth:`TurnFast.snapshot`): per family
    (``[False]`` IPv4, ``[True]`` IPv6), key bytes -> (packets, bytes)."""

    clients: tuple[dict[bytes, tuple[int, int]], dict[bytes, tuple[int, int]]]
    peers: tuple[dict[bytes, tuple[int, int]], dict[bytes, tuple[int, int]]]

    def usage(self, k: ChannelKeys) -> Usage:
        """The channel's counters (zeros where it is not in the maps)."""
        c = self.clients[k.v6].get(k.client, (0, 0))
        p = self.peers[k.v6].get(k.peer, (0, 0))
        return Usage(c[0], c[1], p[0], p[1])


def _lookup(m: Map, key: ctypes.Structure, value: ctypes.Structure) -> bool:
    try:
        m.lookup(key, value)
    except BpfError:  # not there: value stays as it was
        return False
    return True


class TurnFast(Loaded):
    """One loaded copy of the fast-path program and its maps, attached to interfaces
    with :meth:`attach` (in the caller's network namespace)."""

    def __init__(self, obj_path: str | Path | None = None) -> None:
        self.obj = BpfObject(obj_path or build.object_path(PROGRAM))
        self.program = self.obj.program(PROGRAM)
        self._clients = {False: self.obj.map("tf_clients"), True: self.obj.map("tf_clients6")}
        self._peers = {False: self.obj.map("tf_peers"), True: self.obj.map("tf_peers6")}
        self._stats = self.obj.map("tf_stats")
        for v6, name in ((False, ""), (True, "6")):
            check_size(
                self._clients[v6], ctypes.sizeof(_CLIENT[v6][1]), f"tf_client{name}_val", __name__
            )
            check_size(self._peers[v6], ctypes.sizeof(_PEER[v6][1]), f"tf_peer{name}_val", __name__)
        self._ncpu = possible_cpus()
        self._attached: list[tuple[int, str]] = []

    @property
    def capacity(self) -> int:
        """How many channels of one family the maps hold."""
        return min(m.max_entries for m in (*self._clients.values(), *self._peers.values()))

    # -- interfaces ------------------------------------------------------------------

    def attach(self, interface: str | int, mode: str = "native") -> None:
        """Run the program on every frame ``interface`` receives (XDP, ``native`` or
        ``generic``); :class:`~.libbpf.BpfError` EBUSY if an XDP program is there."""
        ifindex = interface if isinstance(interface, int) else socket.if_nametoindex(interface)
        self.program.attach_xdp(ifindex, mode)
        self._attached.append((ifindex, mode))

    def detach(self) -> None:
        while self._attached:
            ifindex, mode = self._attached.pop()
            with contextlib.suppress(BpfError):  # the interface is gone already
                detach_xdp(ifindex, mode)

    # -- channels --------------------------------------------------------------------

    def install(self, ch: RelayedChannel, deadline_ns: int) -> None:
        """Relay ``ch`` both ways until ``deadline_ns`` (or :meth:`remove`).  Installing
        it again moves the deadline and keeps its counters (but for what the program
        counts during the update itself: a few microseconds' worth)."""
        v6 = _v6(ch)
        ck, pk = _keys(ch)
        cv, pv = _CLIENT[v6][1](), _PEER[v6][1]()
        _lookup(self._clients[v6], ck, cv)
        _lookup(self._peers[v6], pk, pv)
        c: Any = cv
        p: Any = pv
        c.relay_ip, c.peer_ip = _ip(ch.relay[0]), _ip(ch.peer[0])
        c.relay_port, c.peer_port = _port(ch.relay[1]), _port(ch.peer[1])
        c.deadline_ns = deadline_ns
        p.client_ip, p.server_ip = _ip(ch.client[0]), _ip(ch.server[0])
        p.client_port, p.server_port = _port(ch.client[1]), _port(ch.server[1])
        p.channel, p.deadline_ns = ch.channel, deadline_ns
        self._peers[v6].update(pk, pv)
        self._clients[v6].update(ck, cv)

    def remove(self, ch: RelayedChannel) -> Usage:
        """Stop relaying ``ch`` here; returns its counters as they were at the end
        (zeros when it was not installed)."""
        v6 = _v6(ch)
        ck, pk = _keys(ch)
        used = self.usage(ch)
        for m, key in ((self._clients[v6], ck), (self._peers[v6], pk)):
            with contextlib.suppress(BpfError):  # not there
                m.delete(key)
        return used

    def usage(self, ch: RelayedChannel) -> Usage:
        """The channel's counters now, since it was installed (zeros when it is not)."""
        v6 = _v6(ch)
        ck, pk = _keys(ch)
        cv: Any = _CLIENT[v6][1]()
        pv: Any = _PEER[v6][1]()
        _lookup(self._clients[v6], ck, cv)
        _lookup(self._peers[v6], pk, pv)
        return Usage(int(cv.packets), int(cv.bytes), int(pv.packets), int(pv.bytes))

    def keys(self, ch: RelayedChannel) -> ChannelKeys:
        """``ch``'s keys in the maps, to find its counters in a :meth:`snapshot`."""
        ck, pk = _keys(ch)
        return ChannelKeys(_v6(ch), bytes(ck), bytes(pk))

    def snapshot(self) -> Snapshot:
        """Every channel's counters now, in four batch reads (however many channels):
        what a reconcile of many channels reads instead of :meth:`usage` per channel."""
        out: list[dict[bytes, tuple[int, int]]] = []
        for maps, records in ((self._clients, _CLIENT), (self._peers, _PEER)):
            for v6 in (False, True):
                key_t, val_t = records[v6]
                keys, values, n = maps[v6].dump(ctypes.sizeof(key_t))
                ks, vs = ctypes.sizeof(key_t), ctypes.sizeof(val_t)
                col = np.frombuffer(values, dtype=np.uint64).reshape(n, vs // 8)
                packets = col[:, val_t.packets.offset // 8].tolist()
                octets = col[:, val_t.bytes.offset // 8].tolist()
                out.append({keys[i * ks : (i + 1) * ks]: (packets[i], octets[i]) for i in range(n)})
        return Snapshot(clients=(out[0], out[1]), peers=(out[2], out[3]))

    def installed(self) -> int:
        """Channels in the maps now (a walk of the keys)."""
        return len(self._clients[False].keys(ClientKey)) + len(self._clients[True].keys(ClientKey6))

    def counters(self) -> dict[str, int]:
        """Frames per outcome, summed over CPUs (``OUTCOMES``)."""
        per_cpu = (ctypes.c_uint64 * self._ncpu)()
        out = {}
        for i, name in enumerate(OUTCOMES):
            self._stats.lookup(ctypes.c_uint32(i), per_cpu)
            out[name] = sum(per_cpu)
        return out
