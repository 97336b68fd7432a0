"""A worker's reconcile of the kernel's maps with its core (``services.turn.fastpath``),
against a stand-in for the loaded program that records what it is told: channels
installed with their deadlines, moved when refreshed, removed when the core lets them
go or their relay closes, counters charged once, and channels across address families
left to user space; permissions (Send and Data indications) the same way, held back
while a channel to their peer is left to user space."""

from __future__ import annotations

import time
from typing import cast

from anyedge.edge.turnfast import (
    ChannelKeys,
    RelayedChannel,
    RelayedPermission,
    Snapshot,
    TurnFast,
    Usage,
)
from anyedge.proto.turn import Counters, TurnServer
from anyedge.proto.turn.allocation import Allocation, Channel, UserState
from anyedge.services.turn.fastpath import FastPath

LISTEN4, RELAY4 = ("198.51.100.7", 3478), ("198.51.100.7", 50000)
LISTEN6, RELAY6 = ("2001:db8::7", 3478), ("2001:db8::7", 50000)


class Kernel:
    """What FastPath asks of TurnFast, in memory."""

    capacity = 100
    permission_capacity = 100

    def __init__(self) -> None:
        self.maps: dict[RelayedChannel, int] = {}
        self.counts: dict[RelayedChannel, Usage] = {}
        self.perms: dict[RelayedPermission, int] = {}
        self.perm_counts: dict[RelayedPermission, Usage] = {}

    def permit(self, p: RelayedPermission, deadline_ns: int) -> None:
        self.perms[p] = deadline_ns
        self.perm_counts.setdefault(p, Usage())

    def unpermit(self, p: RelayedPermission) -> Usage:
        self.perms.pop(p, None)
        return self.perm_counts.pop(p, Usage())

    def permission_keys(self, p: RelayedPermission) -> ChannelKeys:
        return ChannelKeys(":" in p.client[0], repr(p).encode(), repr(p).encode())

    def install(self, ch: RelayedChannel, deadline_ns: int) -> None:
        self.maps[ch] = deadline_ns
        self.counts.setdefault(ch, Usage())

    def remove(self, ch: RelayedChannel) -> Usage:
        self.maps.pop(ch, None)
        return self.counts.pop(ch, Usage())

    def usage(self, ch: RelayedChannel) -> Usage:
        return self.counts.get(ch, Usage())

    def keys(self, ch: RelayedChannel) -> ChannelKeys:
        return ChannelKeys(":" in ch.client[0], repr(ch).encode(), repr(ch).encode())

    def snapshot(self) -> Snapshot:
        clients: tuple[dict[bytes, tuple[int, int]], ...] = ({}, {})
        peers: tuple[dict[bytes, tuple[int, int]], ...] = ({}, {})
        for ch, u in self.counts.items():
            k = self.keys(ch)
            clients[k.v6][k.client] = (u.to_peer_packets, u.to_peer_bytes)
            peers[k.v6][k.peer] = (u.to_client_packets, u.to_client_bytes)
        sends: tuple[dict[bytes, tuple[int, int]], ...] = ({}, {})
        datas: tuple[dict[bytes, tuple[int, int]], ...] = ({}, {})
        for p, u in self.perm_counts.items():
            k = self.permission_keys(p)
            sends[k.v6][k.client] = (u.to_peer_packets, u.to_peer_bytes)
            datas[k.v6][k.peer] = (u.to_client_packets, u.to_client_bytes)
        return Snapshot(
            (clients[0], clients[1]),
            (peers[0], peers[1]),
            (sends[0], sends[1]),
            (datas[0], datas[1]),
        )


class Policy:
    def __init__(self) -> None:
        self.relayed = {"198.51.100.7": [(50000, 50999)]}


class Core:
    def __init__(self, *allocs: Allocation) -> None:
        self.allocs = list(allocs)
        self.counters = Counters()
        self.policy = Policy()

    def allocations(self) -> list[Allocation]:
        return self.allocs


def alloc(
    client: tuple[str, int], server: tuple[str, int], relays: dict[int, tuple[str, int]]
) -> Allocation:
    return Allocation(
        1, "udp", client, server, "alice", "alice", b"k", 1, UserState(1), 2000.0, relays
    )


def bind(a: Allocation, number: int, peer: tuple[str, int], expires: float) -> Channel:
    ch = Channel(number, peer, a.relay_for(peer[0]) or ("", 0), expires)
    a.channels[number] = a.by_peer[peer] = ch
    a.perms[peer[0]] = expires
    return ch


def setup() -> tuple[Kernel, Core, FastPath, Allocation, Allocation]:
    v4 = alloc(("192.0.2.10", 40000), LISTEN4, {4: RELAY4, 6: RELAY6})
    v6 = alloc(("2001:db8:1::10", 40000), LISTEN6, {6: RELAY6})
    kernel, core = Kernel(), Core(v4, v6)
    return kernel, core, FastPath(cast(TurnFast, kernel)), v4, v6


def test_channels_of_one_family_are_installed_until_their_expiry() -> None:
    kernel, core, fast, v4, v6 = setup()
    bind(v4, 0x4000, ("203.0.113.5", 6000), 1600.0)
    bind(v4, 0x4001, ("2001:db8:2::5", 6000), 1600.0)  # IPv4 client, IPv6 relay: user space
    bind(v6, 0x4000, ("2001:db8:2::5", 6000), 1300.0)
    mono = time.monotonic_ns()
    fast.sync(cast(TurnServer, core), 1000.0)
    got = {(ch.client[0], ch.channel): d for ch, d in kernel.maps.items()}
    assert set(got) == {("192.0.2.10", 0x4000), ("2001:db8:1::10", 0x4000)}
    assert 0 <= got[("192.0.2.10", 0x4000)] - mono - 600 * 10**9 < 10**9
    assert 0 <= got[("2001:db8:1::10", 0x4000)] - mono - 300 * 10**9 < 10**9


def test_refreshed_moved_expired_removed_counts_charged_once() -> None:
    kernel, core, fast, v4, _ = setup()
    ch = bind(v4, 0x4000, ("203.0.113.5", 6000), 1600.0)
    fast.sync(cast(TurnServer, core), 1000.0)
    (installed,) = kernel.maps
    first = kernel.maps[installed]
    kernel.counts[installed] = Usage(3, 300, 2, 20)
    ch.expires = v4.perms["203.0.113.5"] = 1700.0  # a ChannelBind refreshed it
    fast.sync(cast(TurnServer, core), 1100.0)
    assert kernel.maps[installed] > first
    assert (core.counters.packets_to_peer, core.counters.bytes_to_client) == (3, 20)
    assert (v4.packets_to_peer, v4.bytes_to_peer) == (3, 300)
    fast.sync(cast(TurnServer, core), 1200.0)  # nothing new: nothing charged again
    assert core.counters.packets_to_peer == 3
    kernel.counts[installed] = Usage(5, 500, 2, 20)
    fast.sync(cast(TurnServer, core), 1700.0)  # expired: out, its last counts charged
    assert kernel.maps == {}
    assert core.counters.packets_to_peer == 5
    assert fast.packets == {"to_peer": 5, "to_client": 2}


def test_a_closed_relay_leaves_at_once() -> None:
    kernel, core, fast, v4, _ = setup()
    bind(v4, 0x4000, ("203.0.113.5", 6000), 1600.0)
    fast.sync(cast(TurnServer, core), 1000.0)
    kernel.counts[next(iter(kernel.maps))] = Usage(1, 10, 0, 0)
    core.allocs.remove(v4)
    fast.relay_closed(cast(TurnServer, core), RELAY4, 1001.0)
    assert kernel.maps == {}
    assert core.counters.packets_to_peer == 1


def test_permissions_are_installed_until_their_expiry_and_charged() -> None:
    kernel, core, fast, v4, v6 = setup()
    v4.perms = {"203.0.113.5": 1300.0, "2001:db8:2::5": 1300.0, "198.51.100.7": 1300.0}
    v6.perms = {"2001:db8:2::5": 1250.0}
    mono = time.monotonic_ns()
    fast.sync(cast(TurnServer, core), 1000.0)
    got = {(p.client[0], p.peer): (p.relay, d) for p, d in kernel.perms.items()}
    # not the other family's peer, nor the relay's own IP (the core checks its ports)
    assert set(got) == {("192.0.2.10", "203.0.113.5"), ("2001:db8:1::10", "2001:db8:2::5")}
    relay, deadline = got[("192.0.2.10", "203.0.113.5")]
    assert relay == RELAY4
    assert 0 <= deadline - mono - 300 * 10**9 < 10**9
    p4 = next(p for p in kernel.perms if p.peer == "203.0.113.5")
    kernel.perm_counts[p4] = Usage(4, 400, 1, 10)
    v4.perms["203.0.113.5"] = 1600.0  # CreatePermission again: 300 s more
    fast.sync(cast(TurnServer, core), 1200.0)
    assert kernel.perms[p4] > deadline
    assert (core.counters.packets_to_peer, core.counters.bytes_to_client) == (4, 10)
    assert (v4.packets_to_peer, v4.bytes_to_client) == (4, 10)
    fast.sync(cast(TurnServer, core), 1260.0)  # the IPv6 one expired: out
    assert {p.peer for p in kernel.perms} == {"203.0.113.5"}
    kernel.perm_counts[p4] = Usage(6, 600, 1, 10)
    fast.relay_closed(cast(TurnServer, core), RELAY4, 1300.0)
    assert kernel.perms == {}
    assert core.counters.packets_to_peer == 6
    assert fast.packets["to_peer"] == 6


def test_a_permission_waits_for_its_peers_channels_to_be_in_the_kernel() -> None:
    """With a channel to the peer in user space the core answers that peer with
    ChannelData; the kernel, not knowing the channel, would send Data indications."""
    kernel, core, fast, v4, _ = setup()
    kernel.capacity = 0  # the channel maps are full
    bind(v4, 0x4000, ("203.0.113.5", 6000), 1600.0)
    fast.sync(cast(TurnServer, core), 1000.0)
    assert kernel.maps == {}
    assert kernel.perms == {}
    kernel.capacity = 100
    fast.sync(cast(TurnServer, core), 1001.0)
    assert len(kernel.maps) == 1
    assert len(kernel.perms) == 1
