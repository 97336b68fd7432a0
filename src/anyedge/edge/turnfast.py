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
        fast.permit(RelayedPermission(client=..., server=..., relay=..., peer="203.0.113.5"),
                    deadline_ns)                   # Send and Data indications
        fast.unpermit(permission)

The program relays ChannelData of the channels installed here, both ways, and Send and
Data indications for the permissions installed here (its C sources, ``turn_fast.bpf.c``
and ``turn_indications.h``, say how); this module only writes and reads its maps: a pair
for channels and a pair for permissions in each family, chosen by the addresses (client,
listener, relayed address and peer all of one family).  Deadlines are
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
OUTCOMES = (
    "to_peer",
    "to_client",
    "passed",
    "expired",
    "no_route",
    "send_to_peer",
    "data_to_client",
)

Addr = tuple[str, int]
_IP4 = ctypes.c_uint8 * 4
_IP6 = ctypes.c_uint8 * 16


_U16 = ctypes.c_uint16
_U64 = ctypes.c_uint64
# the client's side of a channel: its address, the listener's, the channel number
_CLIENT_SIDE = (("client", "server"), (("channel", _U16), ("pad", _U16)))
# an entry's deadline and the counters the program adds to
_COUNTS = (("deadline_ns", _U64), ("packets", _U64), ("bytes", _U64))


def _struct(name: str, c_name: str, pair: tuple[str, str], ip: Any, tail: tuple[Any, ...]) -> Any:
    """A ``ctypes`` mirror of ``struct tf_<c_name>``: two addresses of type ``ip``, their
    two ports (network order), then ``tail``."""
    a, b = pair
    fields = ((f"{a}_ip", ip), (f"{b}_ip", ip), (f"{a}_port", _U16), (f"{b}_port", _U16), *tail)
    doc = f"``struct tf_{c_name}``."
    return type(name, (ctypes.Structure,), {"_fields_": fields, "__doc__": doc})


def _records(ip: Any, family: str, suffix: str) -> tuple[Any, Any, Any, Any]:
    """The four map records of one address family: client key and value, peer key and
    value (the layouts of ``turn_fast.bpf.c``, checked against its BTF by the tests)."""
    side, channel = _CLIENT_SIDE
    return (
        _struct(f"ClientKey{suffix}", f"client{family}_key", side, ip, channel),
        _struct(
            f"ClientValue{suffix}",
            f"client{family}_val",
            ("relay", "peer"),
            ip,
            (("pad", ctypes.c_uint32), *_COUNTS),
        ),
        _struct(f"PeerKey{suffix}", f"peer{family}_key", ("peer", "relay"), ip, ()),
        _struct(f"PeerValue{suffix}", f"peer{family}_val", side, ip, (*channel, *_COUNTS)),
    )


ClientKey, ClientValue, PeerKey, PeerValue = _records(_IP4, "", "")
ClientKey6, ClientValue6, PeerKey6, PeerValue6 = _records(_IP6, "6", "6")


def _plain(name: str, c_name: str, fields: tuple[tuple[str, Any], ...]) -> Any:
    return type(name, (ctypes.Structure,), {"_fields_": fields, "__doc__": f"``struct {c_name}``."})


def _permission_records(ip: Any, family: str, suffix: str) -> tuple[Any, Any, Any, Any]:
    """A permission's records (``turn_indications.h``): send key and value (a client's
    5-tuple and a peer IP -> the relayed address), data key and value (a peer IP and a
    relayed address -> the client)."""
    wide = (("pad2", ctypes.c_uint32),) if family else ()  # IPv6: the u64s align at 24
    return (
        _plain(
            f"SendKey{suffix}",
            f"tf_send{family}_key",
            (
                ("client_ip", ip),
                ("server_ip", ip),
                ("peer_ip", ip),
                ("client_port", _U16),
                ("server_port", _U16),
            ),
        ),
        _plain(
            f"SendValue{suffix}",
            f"tf_send{family}_val",
            (("relay_ip", ip), ("relay_port", _U16), ("pad", _U16), *wide, *_COUNTS),
        ),
        _plain(
            f"DataKey{suffix}",
            f"tf_data{family}_key",
            (("peer_ip", ip), ("relay_ip", ip), ("relay_port", _U16), ("pad", _U16)),
        ),
        _plain(
            f"DataValue{suffix}",
            f"tf_data{family}_val",
            (
                ("client_ip", ip),
                ("server_ip", ip),
                ("client_port", _U16),
                ("server_port", _U16),
                ("pad", ctypes.c_uint32),
                *_COUNTS,
            ),
        ),
    )


SendKey, SendValue, DataKey, DataValue = _permission_records(_IP4, "", "")
SendKey6, SendValue6, DataKey6, DataValue6 = _permission_records(_IP6, "6", "6")


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
class RelayedPermission:
    """One permission of a UDP allocation, for Send and Data indications: the client's
    5-tuple (client and listener), the relayed address and the peer's IP, all IPv4 or
    all IPv6."""

    client: Addr
    server: Addr
    relay: Addr
    peer: str


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


def _v6_permission(p: RelayedPermission) -> bool:
    families = {":" in h for h in (p.client[0], p.server[0], p.relay[0], p.peer)}
    if len(families) != 1:
        raise ValueError(f"a permission's addresses are of one family: {p}")
    return families == {True}


def _port(port: int) -> int:
    return socket.htons(port)


_Records = tuple[type[ctypes.Structure], type[ctypes.Structure]]
_CLIENT: dict[bool, _Records] = {False: (ClientKey, ClientValue), True: (ClientKey6, ClientValue6)}
_PEER: dict[bool, _Records] = {False: (PeerKey, PeerValue), True: (PeerKey6, PeerValue6)}


_SEND: dict[bool, _Records] = {False: (SendKey, SendValue), True: (SendKey6, SendValue6)}
_DATA: dict[bool, _Records] = {False: (DataKey, DataValue), True: (DataKey6, DataValue6)}


def _permission_keys(p: RelayedPermission) -> tuple[ctypes.Structure, ctypes.Structure]:
    v6 = _v6_permission(p)
    sk = _SEND[v6][0](_ip(p.client[0]), _ip(p.server[0]), _ip(p.peer))
    sk.client_port, sk.server_port = _port(p.client[1]), _port(p.server[1])
    dk = _DATA[v6][0](_ip(p.peer), _ip(p.relay[0]), _port(p.relay[1]))
    return sk, dk


def _keys(ch: RelayedChannel) -> tuple[ctypes.Structure, ctypes.Structure]:
    v6 = _v6(ch)
    ck = _CLIENT[v6][0](_ip(ch.client[0]), _ip(ch.server[0]), _port(ch.client[1]))
    ck.server_port, ck.channel = _port(ch.server[1]), ch.channel
    pk = _PEER[v6][0](_ip(ch.peer[0]), _ip(ch.relay[0]), _port(ch.peer[1]), _port(ch.relay[1]))
    return ck, pk


@dataclass(frozen=True, slots=True)
class ChannelKeys:
    """A channel's keys in the maps, as bytes (:meth:`TurnFast.keys`); or a permission's
    (:meth:`TurnFast.permission_keys`: ``client`` is its send key, ``peer`` its data
    key)."""

    v6: bool
    client: bytes
    peer: bytes


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every channel's counters at one time (:meth:`TurnFast.snapshot`): per family
    (``[False]`` IPv4, ``[True]`` IPv6), key bytes -> (packets, bytes)."""

    clients: tuple[dict[bytes, tuple[int, int]], dict[bytes, tuple[int, int]]]
    peers: tuple[dict[bytes, tuple[int, int]], dict[bytes, tuple[int, int]]]
    sends: tuple[dict[bytes, tuple[int, int]], dict[bytes, tuple[int, int]]] = ({}, {})
    datas: tuple[dict[bytes, tuple[int, int]], dict[bytes, tuple[int, int]]] = ({}, {})

    def usage(self, k: ChannelKeys) -> Usage:
        """The channel's counters (zeros where it is not in the maps)."""
        c = self.clients[k.v6].get(k.client, (0, 0))
        p = self.peers[k.v6].get(k.peer, (0, 0))
        return Usage(c[0], c[1], p[0], p[1])

    def permission_usage(self, k: ChannelKeys) -> Usage:
        """The permission's counters: Send indications relayed, Data indications sent."""
        s = self.sends[k.v6].get(k.client, (0, 0))
        d = self.datas[k.v6].get(k.peer, (0, 0))
        return Usage(s[0], s[1], d[0], d[1])


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
        self._sends = {False: self.obj.map("tf_sends"), True: self.obj.map("tf_sends6")}
        self._datas = {False: self.obj.map("tf_datas"), True: self.obj.map("tf_datas6")}
        self._stats = self.obj.map("tf_stats")
        for v6, name in ((False, ""), (True, "6")):
            check_size(self._sends[v6], ctypes.sizeof(_SEND[v6][1]), f"tf_send{name}_val", __name__)
            check_size(self._datas[v6], ctypes.sizeof(_DATA[v6][1]), f"tf_data{name}_val", __name__)
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

    @property
    def permission_capacity(self) -> int:
        """How many permissions of one family the maps hold."""
        return min(m.max_entries for m in (*self._sends.values(), *self._datas.values()))

    # -- permissions (Send and Data indications) -------------------------------------

    def permit(self, p: RelayedPermission, deadline_ns: int) -> None:
        """Relay Send indications from ``p.client`` to ``p.peer`` and wrap that peer's
        datagrams to ``p.relay`` as Data indications, until ``deadline_ns`` (or
        :meth:`unpermit`).  Installing it again moves the deadline, keeps the counters."""
        v6 = _v6_permission(p)
        sk, dk = _permission_keys(p)
        sv, dv = _SEND[v6][1](), _DATA[v6][1]()
        _lookup(self._sends[v6], sk, sv)
        _lookup(self._datas[v6], dk, dv)
        s: Any = sv
        d: Any = dv
        s.relay_ip, s.relay_port, s.deadline_ns = _ip(p.relay[0]), _port(p.relay[1]), deadline_ns
        d.client_ip, d.server_ip = _ip(p.client[0]), _ip(p.server[0])
        d.client_port, d.server_port = _port(p.client[1]), _port(p.server[1])
        d.deadline_ns = deadline_ns
        self._datas[v6].update(dk, dv)
        self._sends[v6].update(sk, sv)

    def unpermit(self, p: RelayedPermission) -> Usage:
        """Stop relaying ``p``'s indications here; returns its counters at the end."""
        v6 = _v6_permission(p)
        sk, dk = _permission_keys(p)
        used = self.permission_usage(p)
        for m, key in ((self._sends[v6], sk), (self._datas[v6], dk)):
            with contextlib.suppress(BpfError):  # not there
                m.delete(key)
        return used

    def permission_usage(self, p: RelayedPermission) -> Usage:
        """``p``'s counters since installed: ``to_peer_*`` Send indications relayed,
        ``to_client_*`` Data indications sent (payload bytes)."""
        v6 = _v6_permission(p)
        sk, dk = _permission_keys(p)
        sv: Any = _SEND[v6][1]()
        dv: Any = _DATA[v6][1]()
        _lookup(self._sends[v6], sk, sv)
        _lookup(self._datas[v6], dk, dv)
        return Usage(int(sv.packets), int(sv.bytes), int(dv.packets), int(dv.bytes))

    def permission_keys(self, p: RelayedPermission) -> ChannelKeys:
        """``p``'s keys in the maps, to find its counters in a :meth:`snapshot`."""
        sk, dk = _permission_keys(p)
        return ChannelKeys(_v6_permission(p), bytes(sk), bytes(dk))

    def permitted(self) -> int:
        """Permissions in the maps now."""
        return len(self._sends[False].keys(SendKey)) + len(self._sends[True].keys(SendKey6))

    def snapshot(self) -> Snapshot:
        """Every channel's and permission's counters now, in eight batch reads (however
        many): what a reconcile of many reads instead of :meth:`usage` per entry."""
        out: list[dict[bytes, tuple[int, int]]] = []
        for maps, records in (
            (self._clients, _CLIENT),
            (self._peers, _PEER),
            (self._sends, _SEND),
            (self._datas, _DATA),
        ):
            for v6 in (False, True):
                key_t, val_t = records[v6]
                keys, values, n = maps[v6].dump(ctypes.sizeof(key_t))
                ks, vs = ctypes.sizeof(key_t), ctypes.sizeof(val_t)
                col = np.frombuffer(values, dtype=np.uint64).reshape(n, vs // 8)
                packets = col[:, val_t.packets.offset // 8].tolist()
                octets = col[:, val_t.bytes.offset // 8].tolist()
                out.append({keys[i * ks : (i + 1) * ks]: (packets[i], octets[i]) for i in range(n)})
        return Snapshot(
            clients=(out[0], out[1]),
            peers=(out[2], out[3]),
            sends=(out[4], out[5]),
            datas=(out[6], out[7]),
        )

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
