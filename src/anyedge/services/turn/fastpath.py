"""The relay's kernel fast path, kept in step with the core (``fast_path:`` in turn.yaml).

:func:`open_fast_path` loads ``anyedge.edge.turnfast``'s XDP program and attaches it to
the configured interfaces, once per ``turn serve`` (before the workers fork, so they
share its maps); when the kernel, the toolchain or the privileges are not there it says
why in one log line and the relay runs in user space alone.

Each worker's :class:`FastPath` then reconciles, twice a second (and at once when a
relay closes), the maps with what its core says (:func:`anyedge.proto.turn.offload
.offloadable`): every live channel of a UDP allocation with a live permission (whose
client and relayed address are of one family) is installed with its deadline (the
earliest of the channel's, the permission's and the allocation's expiry, as
``CLOCK_MONOTONIC`` nanoseconds), deadlines move when the core refreshes them, and
entries the core no longer names -- a channel or permission expired, an allocation
deleted, refreshed to 0, or paused over its bandwidth -- are removed.  Before that,
each installed entry's counters are read and what they gained is charged back to the core
(:func:`~anyedge.proto.turn.offload.account`): usage, the sessions view, Prometheus and
bandwidth quotas see the fast path's packets as if user space had relayed them, half a
second late.

Permissions go the same way for Send and Data indications
(:func:`~anyedge.proto.turn.offload.offloadable_permissions`): each live permission of
a UDP allocation (peer of the client's family, not one of the relay's own IPs) is
installed with the earliest of its and its allocation's expiry -- so the 300 s
permission lifetime ends the kernel's relaying when the core's would end -- and removed
when the core drops it.  A permission is held back while the allocation has a live
channel to that peer IP that is not in the kernel (the maps were full): the kernel would
answer that peer with Data indications where the core sends ChannelData.

The data flow is one way: core state -> maps, map counters -> core.  Workers write only
the entries of their own allocations (their 5-tuples differ), so sharing the maps needs
no locking.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from ...edge.build import BuildError
from ...edge.libbpf import BpfError
from ...edge.turnfast import (
    ChannelKeys,
    RelayedChannel,
    RelayedPermission,
    TurnFast,
    Usage,
)
from ...proto.turn import TurnServer
from ...proto.turn.allocation import Addr, Allocation, Channel
from ...proto.turn.offload import account, offloadable, offloadable_permissions

log = logging.getLogger("anyedge.turn")

Key = tuple[Addr, Addr, int]  # client, listener, channel number
PermissionKey = tuple[Addr, Addr, str]  # client, listener, peer IP


@dataclass(slots=True)
class _Entry:
    channel: RelayedChannel | RelayedPermission
    keys: ChannelKeys
    alloc: Allocation
    until: float  # Unix time, as the core wrote it
    seen: Usage  # the counters as last charged


def open_fast_path(interfaces: list[str], mode: str) -> TurnFast | None:
    """The program attached to ``interfaces``, or None (and why, logged) when this
    kernel or machine cannot have it."""
    try:
        fast = TurnFast()
    except (BpfError, BuildError, OSError) as e:
        _unavailable(str(e))
        return None
    try:
        for name in interfaces:
            fast.attach(name, mode)
    except (BpfError, OSError) as e:
        fast.close()
        _unavailable(str(e))
        return None
    log.info(json.dumps({"event": "fast_path", "interfaces": interfaces, "mode": mode}))
    return fast


def _unavailable(why: str) -> None:
    first = why.splitlines()[0] if why else "unknown"
    log.warning(json.dumps({"event": "fast_path_unavailable", "error": first[:300]}))


class FastPath:
    """One worker's channels in the kernel's maps (module docstring)."""

    def __init__(self, kernel: TurnFast) -> None:
        self.kernel = kernel
        self.installed: dict[Key, _Entry] = {}
        self.permitted: dict[PermissionKey, _Entry] = {}
        self.paused = 0  # allocations sent back to user space over their bandwidth
        # payload the kernel relayed, charged to the core so far (also in its counters)
        self.packets = {"to_peer": 0, "to_client": 0}
        self.bytes = {"to_peer": 0, "to_client": 0}

    def sync(self, core: TurnServer, now: float) -> None:
        """Charge what the kernel relayed, then make the maps what the core says."""
        if self.installed or self.permitted:
            snap = self.kernel.snapshot()  # every counter in a few system calls
            for e in self.installed.values():
                self._charge(core, e, snap.usage(e.keys), now)
            for e in self.permitted.values():
                self._charge(core, e, snap.permission_usage(e.keys), now)
        want: dict[Key, tuple[Allocation, Channel, float]] = {}
        for alloc, ch, until in offloadable(core.allocations(), now):
            if (":" in alloc.client[0]) != (":" in ch.relay[0]):
                continue  # across families (ADDITIONAL-ADDRESS-FAMILY): user space
            want[(alloc.client, alloc.server, ch.number)] = (alloc, ch, until)
        for key, old in list(self.installed.items()):
            w = want.get(key)
            if w is None or w[0] is not old.alloc or w[1].peer != old.channel.peer:
                self._remove(core, key, now)
        mono, room = time.monotonic_ns(), self.kernel.capacity - len(self.installed)
        for key, (alloc, ch, until) in want.items():
            have = self.installed.get(key)
            if have is not None and have.until == until:
                continue
            if have is None:
                if room <= 0:
                    continue  # the maps are full: user space relays the rest
                room -= 1
                rc = RelayedChannel(alloc.client, alloc.server, ch.number, ch.relay, ch.peer)
                have = self.installed[key] = _Entry(rc, self.kernel.keys(rc), alloc, until, Usage())
            have.until = until
            assert isinstance(have.channel, RelayedChannel)
            self.kernel.install(have.channel, mono + int((until - now) * 1e9))
        self._sync_permissions(core, now, mono)

    def _sync_permissions(self, core: TurnServer, now: float, mono: int) -> None:
        """The permissions' half of :meth:`sync` (module docstring)."""
        want: dict[PermissionKey, tuple[Allocation, Addr, float]] = {}
        allocs = core.allocations()
        held = {  # peers with a channel user space relays: so must their datagrams be
            (a.client, a.server, ch.peer[0])
            for a in allocs
            for ch in a.channels.values()
            if ch.live and (a.client, a.server, ch.number) not in self.installed
        }
        for alloc, host, relay, until in offloadable_permissions(allocs, now, core.policy.relayed):
            key = (alloc.client, alloc.server, host)
            if key not in held:
                want[key] = (alloc, relay, until)
        for key, old in list(self.permitted.items()):
            w = want.get(key)
            if w is None or w[0] is not old.alloc or w[1] != old.channel.relay:
                self._unpermit(core, key, now)
        room = self.kernel.permission_capacity - len(self.permitted)
        for key, (alloc, relay, until) in want.items():
            have = self.permitted.get(key)
            if have is not None and have.until == until:
                continue
            if have is None:
                if room <= 0:
                    continue
                room -= 1
                rp = RelayedPermission(alloc.client, alloc.server, relay, key[2])
                keys = self.kernel.permission_keys(rp)
                have = self.permitted[key] = _Entry(rp, keys, alloc, until, Usage())
            have.until = until
            assert isinstance(have.channel, RelayedPermission)
            self.kernel.permit(have.channel, mono + int((until - now) * 1e9))

    def relay_closed(self, core: TurnServer, relay: Addr, now: float) -> None:
        """A relayed address went (its allocation ended or was refreshed to 0): its
        channels leave the kernel now, not at the next sync."""
        for key in [k for k, e in self.installed.items() if e.channel.relay == relay]:
            self._remove(core, key, now)
        for pkey in [k for k, e in self.permitted.items() if e.channel.relay == relay]:
            self._unpermit(core, pkey, now)

    def close(self, core: TurnServer, now: float) -> None:
        """Take every channel of this worker out of the maps (the worker is stopping)."""
        for key in list(self.installed):
            self._remove(core, key, now)
        for pkey in list(self.permitted):
            self._unpermit(core, pkey, now)

    def _remove(self, core: TurnServer, key: Key, now: float) -> None:
        e = self.installed.pop(key)
        assert isinstance(e.channel, RelayedChannel)
        self._charge(core, e, self.kernel.remove(e.channel), now)

    def _unpermit(self, core: TurnServer, key: PermissionKey, now: float) -> None:
        e = self.permitted.pop(key)
        assert isinstance(e.channel, RelayedPermission)
        self._charge(core, e, self.kernel.unpermit(e.channel), now)

    def _charge(self, core: TurnServer, e: _Entry, u: Usage, now: float) -> None:
        s = e.seen
        if u.to_peer_packets < s.to_peer_packets or u.to_client_packets < s.to_client_packets:
            return  # gone from the map already (zeros): nothing more to charge
        to_peer = (u.to_peer_packets - s.to_peer_packets, u.to_peer_bytes - s.to_peer_bytes)
        to_client = (
            u.to_client_packets - s.to_client_packets,
            u.to_client_bytes - s.to_client_bytes,
        )
        e.seen = u
        self.packets["to_peer"] += to_peer[0]
        self.packets["to_client"] += to_client[0]
        self.bytes["to_peer"] += to_peer[1]
        self.bytes["to_client"] += to_client[1]
        if (to_peer[0] or to_client[0]) and not account(
            core.counters, e.alloc, now, to_peer, to_client
        ):
            self.paused += 1


__all__ = ["FastPath", "TurnFast", "open_fast_path"]
