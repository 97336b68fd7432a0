"""Established channels relayed without a call into the core: the user-space fast path.

Most of a relay's datagrams are ChannelData of channels bound long ago, and for those
the core's answer does not change between two packets: "send the payload from this
relay socket to this peer" (client to peer), "send it to this client under this channel
number" (peer to client), until the channel's, its permission's or its allocation's
expiry.  A :class:`Lane` writes that answer down once; the UDP listener and relay
protocols of :mod:`.io` look a datagram's source up in :class:`Shortcuts` first and,
on a hit before the lane's deadline, send at once -- no closure, no output objects, no
dispatch.  Everything else (STUN, unknown or expired channels, Send/Data, streams, DTLS)
goes to the core as before.

Who decides stays the same.  A lane is only ever learnt from the core: after the core
relayed a ChannelData, :meth:`Shortcuts.learn` asks
:func:`~anyedge.proto.turn.offload.channel_until` -- the very function that bounds what
the kernel fast path may relay -- how long the channel may go on without it.  The
deadline is checked on every packet, so an expired channel or permission falls back to
the core on its first packet past it; a refresh makes the next packet past the old
deadline take the core's path once, which learns the new deadline.  A deleted
allocation (``CloseRelay``) takes its lanes with it at once.  The user's bandwidth bucket
is charged per packet exactly as the core charges it; when it refuses, the packet goes
to the core, which refuses it again and counts the drop.  The core's counters and the
allocation's (metrics, the sessions view) are incremented in place, so what they show
is exact at any moment, as with the core's own path.

With ``udp_batch`` (the default) the sockets are read and written in batches
(:mod:`.batched`): the lanes are keyed by the source address as the kernel wrote it,
and a lane only admits a datagram (:meth:`Lane.admit_to_peer`,
:meth:`Lane.admit_to_client`: the same deadline, bucket and counters) while the batch
sends it with the others.

Data flow: core state -> lanes (learnt after a slow-path packet, dropped with the
relay); packets -> lanes -> sockets; counts -> the core's counters.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from ...proto.turn.allocation import Addr, Allocation, Channel
from ...proto.turn.config import Counters
from ...proto.turn.offload import channel_until
from ...proto.turn.policy import TokenBucket
from .mmsg import Destination

Send = Callable[[Any, Any], None]  # a transport's sendto(data, addr)

_CD = struct.Struct("!HH")


class Lane:
    """One channel's answer in one direction: where to send, until when, who pays.

    ``send`` is the socket's ``sendto``; on a batched socket (:mod:`.batched`) ``fd`` is
    its descriptor and ``target`` the destination as the kernel takes it, and the lane
    only admits (:meth:`admit_to_peer`, :meth:`admit_to_client`) what the batch sends."""

    __slots__ = (
        "alloc",
        "bucket",
        "counters",
        "dest",
        "fd",
        "number",
        "relay",
        "send",
        "target",
        "until",
    )

    def __init__(
        self,
        alloc: Allocation,
        number: int,
        relay: Addr,
        send: Send,
        dest: Any,
        until: float,
        counters: Counters,
        fd: int = -1,
    ) -> None:
        self.alloc = alloc
        self.number = number
        self.relay = relay  # the relayed address this lane sends from or arrives at
        self.send = send
        self.dest = dest  # the peer's or the client's address, as the socket takes it
        self.until = until  # Unix time: past it, the core decides again
        self.bucket: TokenBucket | None = alloc.quota.bucket
        self.counters = counters
        self.fd = fd
        self.target = Destination(dest) if fd >= 0 else None

    def admit_to_peer(self, now: float, n: int) -> bool:
        """Whether an ``n``-byte ChannelData payload may go to the peer now; if so it is
        charged to the bucket and counted, and the caller sends it."""
        bucket = self.bucket
        if now >= self.until or (bucket is not None and not bucket.take(now, n)):
            return False
        c, a = self.counters, self.alloc
        c.packets_to_peer += 1
        c.bytes_to_peer += n
        a.packets_to_peer += 1
        a.bytes_to_peer += n
        return True

    def admit_to_client(self, now: float, n: int) -> bool:
        """Whether a peer's ``n``-byte datagram may go to the client now (as
        :meth:`admit_to_peer`)."""
        bucket = self.bucket
        if now >= self.until or n > 0xFFFF or (bucket is not None and not bucket.take(now, n)):
            return False
        c, a = self.counters, self.alloc
        c.packets_to_client += 1
        c.bytes_to_client += n
        a.packets_to_client += 1
        a.bytes_to_client += n
        return True

    def to_peer(self, now: float, data: bytes, n: int) -> bool:
        """Relay a ChannelData's ``n``-byte payload; False if the core must decide."""
        if not self.admit_to_peer(now, n):
            return False
        self.send(data[4 : 4 + n], self.dest)
        return True

    def to_client(self, now: float, data: bytes) -> bool:
        """Relay a peer's datagram as ChannelData; False if the core must decide."""
        n = len(data)
        if not self.admit_to_client(now, n):
            return False
        self.send(_CD.pack(self.number, n) + data, self.dest)
        return True


class Shortcuts:
    """Every lane of one worker, in the dictionaries its protocols read (module docstring).

    ``inbound[listener][client][number]`` is a client's channel towards its peer;
    ``outbound[relay][peer]`` a peer's way back to the client.  The protocols hold the
    inner dictionaries for their own listener or relay, so a packet costs two or one
    lookups.
    """

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.inbound: dict[Addr, dict[Any, dict[int, Lane]]] = {}
        self.outbound: dict[Addr, dict[Any, Lane]] = {}
        # relayed address -> the inbound lanes through it (listener, client, number)
        self._through: dict[Addr, set[tuple[Addr, Any, int]]] = {}

    def listener(self, local: Addr) -> dict[Any, dict[int, Lane]]:
        return self.inbound.setdefault(local, {})

    def relay(self, relay: Addr) -> dict[Any, Lane]:
        return self.outbound.setdefault(relay, {})

    def __len__(self) -> int:
        return sum(len(v) for x in self.inbound.values() for v in x.values()) + sum(
            len(x) for x in self.outbound.values()
        )

    def learn_inbound(
        self,
        local: Addr,
        client: Any,
        alloc: Allocation,
        ch: Channel,
        send: Send,
        now: float,
        fd: int = -1,
    ) -> None:
        """After the core relayed ``ch``'s ChannelData from ``client`` (as the listener's
        socket wrote the address): take it from there until the core's deadline."""
        until = channel_until(alloc, ch, now)
        if until is None:
            return
        # written anew each time: a number rebound after its quarantine has a new peer
        chans = self.listener(local).setdefault(client, {})
        chans[ch.number] = Lane(alloc, ch.number, ch.relay, send, ch.peer, until, self.counters, fd)
        self._through.setdefault(ch.relay, set()).add((local, client, ch.number))

    def learn_outbound(
        self,
        relay: Addr,
        peer: Any,
        alloc: Allocation,
        ch: Channel,
        send: Send,
        now: float,
        fd: int = -1,
    ) -> None:
        """After the core relayed ``peer``'s datagram to the client over ``ch``."""
        until = channel_until(alloc, ch, now)
        if until is None:
            return
        lane = Lane(alloc, ch.number, relay, send, alloc.client, until, self.counters, fd)
        self.relay(relay)[peer] = lane

    def forget(self, relay: Addr) -> None:
        """The relayed address was closed: every lane through it goes, at once."""
        lanes = self.outbound.pop(relay, None)
        if lanes is not None:
            lanes.clear()  # its protocol may still hold it (datagrams already queued)
        for local, client, number in self._through.pop(relay, ()):
            clients = self.inbound[local]
            chans = clients.get(client)
            if chans is None:
                continue
            lane = chans.get(number)
            if lane is not None and lane.relay == relay:
                del chans[number]
            if not chans:
                del clients[client]
