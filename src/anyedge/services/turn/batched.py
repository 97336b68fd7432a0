"""UDP listeners and relay sockets read and written in batches (``udp_batch:``).

In place of asyncio's datagram transports, a :class:`BatchedSocket` watches its socket
with ``loop.add_reader`` and, on each wake-up, reads up to ``udp_batch`` datagrams with
one ``recvmmsg`` into the worker's :class:`~.mmsg.Ring` -- again while a read fills the
ring (at most :data:`DRAIN` reads a wake-up, so one busy socket does not starve the
others), without going back to the event loop in between.  Each datagram of the batch is
looked up in the lanes (:mod:`.shortcut`) by its source as the kernel wrote it:

* a listener's ChannelData on an established channel is admitted by its lane (deadline,
  bandwidth bucket, counters: the very checks and counts of the unbatched lanes) and
  queued to the relay socket -- its payload is not copied, the send vector points into
  the ring;
* a peer's datagram to a relay socket with a lane back to its client gets the 4-byte
  ChannelData header written in front of it in the ring and is queued to the listener;
* anything else -- STUN, unknown or expired channels, a refused bucket, Send and Data --
  first sends what is queued (so the order of a 5-tuple's datagrams is kept), then is
  made into ``bytes`` and an address tuple and goes to the protocol's ``slow`` path: the
  core, exactly as with asyncio's transports.

What is queued goes out with one ``sendmmsg`` per run of the same socket when the batch
ends, same-size datagrams to one destination as one segmented send (``udp_gso``,
:mod:`.mmsg`).  The core's own outputs (answers, Data indications, the first datagrams of a
channel) are sent at once with ``sendto``.  A datagram the kernel refuses or has no room
for is dropped and counted (``anyedge_turn_dropped{reason="send"}``): UDP may lose, and
nothing is kept in Python for a socket that cannot take it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from .mmsg import HEADROOM, NAME, SLOT, Ring, address
from .shortcut import Lane

DRAIN = 4  # full batches read per wake-up before other sockets get their turn

Slow = Callable[[bytes, Any, bytes], None]  # (data, address tuple, kernel address)
_CD = struct.Struct("!HH")


class BatchedSocket:
    """A UDP socket on ``loop.add_reader``: ``sendto`` and ``close`` as a transport's."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        ring: Ring,
        slow: Slow,
        on_error: Callable[[Exception], None],
    ) -> None:
        sock.setblocking(False)
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.family = int(sock.family)
        self.klen = 8 if self.family == socket.AF_INET else NAME  # family, port, address
        self.ring = ring
        self.slow = slow
        self.on_error = on_error
        self.send_failed = 0  # the core's datagrams the socket refused
        self.closed = False
        loop.add_reader(self.fd, self._readable)

    def sendto(self, data: bytes, addr: Any) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError as e:  # a full buffer, an unreachable destination: dropped
            self.send_failed += 1
            self.on_error(e)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.fd)
            self.sock.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self.sock
        if name == "sockname":
            return self.sock.getsockname()
        return default

    def _readable(self) -> None:
        ring = self.ring
        for _ in range(DRAIN):
            if self.closed:
                return
            got = ring.recv(self.fd, self.family)
            if got <= 0:
                if got not in (-errno.EAGAIN, -errno.EINTR, 0):
                    self.on_error(OSError(-got, os.strerror(-got)))
                return
            try:
                self._batch(got)
            finally:
                ring.flush()
            if got < ring.slots:  # the socket is empty: back to the event loop
                return

    def _batch(self, got: int) -> None:
        raise NotImplementedError

    def _slow(self, i: int, offset: int, size: int) -> None:
        """Datagram ``i`` (at ``offset``, ``size`` bytes) to the core, after what is queued."""
        ring = self.ring
        ring.flush()
        key = ring.names_view[i * NAME : i * NAME + self.klen].tobytes()
        self.slow(ring.view[offset : offset + size].tobytes(), address(key), key)


class BatchedListener(BatchedSocket):
    """A UDP listener: clients' ChannelData on established channels go to their relay
    sockets by lanes, the rest to the core."""

    def __init__(self, *args: Any, lanes: dict[Any, dict[int, Lane]]) -> None:
        super().__init__(*args)
        self.lanes = lanes

    def _batch(self, got: int) -> None:
        ring = self.ring
        view, lengths, names = ring.view, ring.lengths, ring.names_view
        lanes, klen, queue = self.lanes, self.klen, ring.queue
        now = time.time()
        for i in range(got):
            off = i * SLOT + HEADROOM
            size = lengths[16 * i + 14]
            if size >= 4:
                chans = lanes.get(names[i * NAME : i * NAME + klen].tobytes())
                if chans is not None:
                    lane = chans.get((view[off] << 8) | view[off + 1])
                    if lane is not None:
                        n = (view[off + 2] << 8) | view[off + 3]
                        if size >= 4 + n and lane.admit_to_peer(now, n):
                            queue(lane.fd, lane.target, off + 4, n)  # type: ignore[arg-type]
                            continue
            self._slow(i, off, size)


class BatchedRelay(BatchedSocket):
    """A relay socket: peers' datagrams with a lane back go to the client as ChannelData
    (the header written in the ring in front of the payload), the rest to the core."""

    def __init__(self, *args: Any, lanes: dict[Any, Lane]) -> None:
        super().__init__(*args)
        self.lanes = lanes

    def _batch(self, got: int) -> None:
        ring = self.ring
        data, lengths, names = ring.data, ring.lengths, ring.names_view
        lanes, klen, queue, header = self.lanes, self.klen, ring.queue, _CD.pack_into
        now = time.time()
        for i in range(got):
            off = i * SLOT
            n = lengths[16 * i + 14]
            lane = lanes.get(names[i * NAME : i * NAME + klen].tobytes())
            if lane is not None and lane.admit_to_client(now, n):
                header(data, off, lane.number, n)
                queue(lane.fd, lane.target, off, n + 4)  # type: ignore[arg-type]
                continue
            self._slow(i, off + HEADROOM, n)
