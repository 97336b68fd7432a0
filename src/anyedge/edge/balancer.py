"""The load balancer's loader: the XDP program of ``bpf/balancer.bpf.c``, its maps filled
from an :class:`anyedge.balance.Table`, its counters.

::

    from anyedge.balance import Table
    from anyedge.edge.balancer import Balancer

    table = Table.build([1, 1, 1, 1])
    with Balancer(self_index=2) as lb:         # this machine is server 2 of the table
        lb.set_servers(["02:00:00:00:00:0a", "02:00:00:00:00:0b", ...])
        lb.set_services(["203.0.113.10", "2001:db8::10"])
        lb.replace(table)                      # in force for the next packet
        lb.attach("eth0")
        ...
        lb.replace(table.drain(1))             # server 1 takes no new flows
        for c in lb.counters():                # per kind and server: packets, bytes
            print(c.kind, c.server, c.packets)

Every server runs its own copy (``self_index`` differs); each is the load balancer for
whatever ECMP brings it, and the first or second hop of its own buckets.

**Changing tables.**  The program reads buckets through ``lb_table``, an array of maps
with one entry pointing at one of two bucket arrays.  :meth:`Balancer.stage` writes the
table into the array not in force (one ``BPF_MAP_UPDATE_BATCH`` call, a loop of single
updates where the kernel lacks it); :meth:`Balancer.commit` points ``lb_table`` at it.
A packet sees the old table or the new one, never a mixture, and the kernel returns
from the commit only when no program still runs on the old array, so the next stage may
overwrite it.  Per-bucket updates of one array would also be atomic bucket by bucket,
and a mixture of old and new buckets would not break a connection by itself (a bucket
that moved names its old owner as second hop either way); but during the tens of
milliseconds a 2¹⁶-entry loop takes, the servers' shares would be neither the old nor
the new ones, and the counters could not say which table a packet met.  The second
array costs 512 KiB; the swap is one pointer store.

Servers are named by their index in the table and keep it for life, so
:meth:`Balancer.set_servers` may add entries before a table that uses them is
committed, and a table never names a server whose MAC is not known yet (a bucket that
does is passed up locally and counted ``no_mac``).
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from ..adapters.netns import entered
from ..balance.table import NONE, Table
from . import build
from .libbpf import VERDICTS, BpfError, BpfObject, Loaded, detach_xdp, possible_cpus

PROGRAM = "balancer"
BUCKETS = 1 << 16  # the data plane's bucket array; smaller tables are repeated to fill it
MAX_SERVERS = 256
NO_SERVER = 0xFFFF_FFFF
FLAG_SECOND_HOP = 0x1
FLAG_DEBUG = 0x2
FLAG_TABLE = 0x4  # set at the first commit
PEER_SECOND = 0x8000_0000  # lb_peers: flags a server's marked MAC
MAC_MARK = 0x02  # flipped in a MAC's first byte: the source of packets to a second hop
KINDS = ("first_hop", "second_hop", "local", "no_mac")  # lb_stats kinds, in order
ACTIONS = ("local", "first_hop", "second_hop", "no_mac")  # lb_debug.action values


class _Server(ctypes.Structure):
    _fields_ = (
        ("mac", ctypes.c_uint8 * 6),
        ("present", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("ifindex", ctypes.c_uint32),
    )


class _Config(ctypes.Structure):
    _fields_ = (
        ("self", ctypes.c_uint32),
        ("seed", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    )


class _Service(ctypes.Structure):
    _fields_ = (("addr", ctypes.c_uint8 * 16), ("family", ctypes.c_uint32))


class _Stat(ctypes.Structure):
    _fields_ = (("packets", ctypes.c_uint64), ("bytes", ctypes.c_uint64))


class _Debug(ctypes.Structure):
    _fields_ = (
        ("hash", ctypes.c_uint32),
        ("bucket", ctypes.c_uint32),
        ("first", ctypes.c_uint32),
        ("second", ctypes.c_uint32),
        ("action", ctypes.c_uint32),
        ("came_from", ctypes.c_uint32),
        ("marked", ctypes.c_uint32),
    )


@dataclass(frozen=True)
class Counter:
    """Packets (and their frame bytes) of one kind since the program was loaded,
    summed over CPUs: ``first_hop`` and ``second_hop`` count what was sent to
    ``server``; ``local`` what this server (``server`` = itself) passed up its stack;
    ``no_mac`` what was passed up because the hop ``server`` had no MAC."""

    kind: str
    server: int
    packets: int
    bytes: int


@dataclass(frozen=True)
class Decision:
    """What the program did with the last service packet (debug mode only)."""

    hash: int
    bucket: int
    first: int
    second: int  # -1 when none
    action: str  # one of ACTIONS
    came_from: int  # the server that sent the packet here, -1 for anything else
    marked: bool  # sent here by its first hop, for this server as second hop


class Verdict(NamedTuple):
    """A test run's outcome: ``pass``, ``tx``, ``redirect``... and the frame as left."""

    verdict: str
    frame: bytes


def parse_mac(mac: str | bytes) -> bytes:
    raw = bytes.fromhex(mac.replace(":", "").replace("-", "")) if isinstance(mac, str) else mac
    if len(raw) != 6:
        raise ValueError(f"a MAC address is six bytes, not {mac!r}")
    return raw


def marked_mac(mac: bytes) -> bytes:
    """The source MAC a first hop gives the packets it sends to a second hop: its own
    with the locally administered bit flipped.  No server's MAC may be another's
    marked one."""
    return bytes([mac[0] ^ MAC_MARK]) + mac[1:]


class Balancer(Loaded):
    """One loaded copy of the balancer program for the server ``self_index``."""

    def __init__(
        self,
        self_index: int,
        *,
        seed: int = 0,
        second_hop: bool = True,
        debug: bool = False,
        obj_path: str | Path | None = None,
    ) -> None:
        if not 0 <= self_index < MAX_SERVERS:
            raise ValueError(f"server indices are 0-{MAX_SERVERS - 1}, not {self_index}")
        self.obj = BpfObject(obj_path or build.object_path(PROGRAM))
        self.program = self.obj.program(PROGRAM)
        self._arrays = (self.obj.map("lb_buckets0"), self.obj.map("lb_buckets1"))
        self._table_map = self.obj.map("lb_table")
        self._servers = self.obj.map("lb_servers")
        self._peers = self.obj.map("lb_peers")
        self._services = self.obj.map("lb_services")
        self._config = self.obj.map("lb_config")
        self._stats = self.obj.map("lb_stats")
        self._debug = self.obj.map("lb_debug")
        for m, struct in (
            (self._servers, _Server),
            (self._config, _Config),
            (self._stats, _Stat),
            (self._debug, _Debug),
        ):
            if m.value_size != ctypes.sizeof(struct):
                raise RuntimeError(f"map {m.name}: the C source and balancer.py disagree")
        self._ncpu = possible_cpus()
        self.self_index = self_index
        self.seed = seed & 0xFFFF_FFFF
        self._flags = (FLAG_SECOND_HOP if second_hop else 0) | (FLAG_DEBUG if debug else 0)
        self._write_config()
        self._macs: dict[int, bytes] = {}
        self._service_keys: list[_Service] = []
        self._active = 1  # no table in force (no FLAG_TABLE: every packet passes)
        self._tables: list[Table | None] = [None, None]
        self._staged = False
        self._attached: list[tuple[str | None, int, str]] = []

    # -- configuration -------------------------------------------------------------------

    def _write_config(self) -> None:
        cfg = _Config(self=self.self_index, seed=self.seed, flags=self._flags)
        self._config.update(ctypes.c_uint32(0), cfg)

    @property
    def second_hop(self) -> bool:
        """Whether non-SYN TCP without a socket here goes on to the second hop."""
        return bool(self._flags & FLAG_SECOND_HOP)

    @second_hop.setter
    def second_hop(self, on: bool) -> None:
        self._flags = (self._flags & ~FLAG_SECOND_HOP) | (FLAG_SECOND_HOP if on else 0)
        self._write_config()

    def set_servers(
        self, macs: Sequence[str | bytes | None], ifindexes: Sequence[int] = ()
    ) -> None:
        """Server ``i``'s MAC is ``macs[i]`` (``None``: no server at that index).  With
        ``ifindexes[i]`` non-zero, packets for it are redirected to that interface
        instead of sent back out of the one they came in on."""
        if len(macs) > MAX_SERVERS:
            raise ValueError(f"at most {MAX_SERVERS} servers")
        new = {i: parse_mac(m) for i, m in enumerate(macs) if m is not None}
        seen = list(new.values()) + [marked_mac(m) for m in new.values()]
        if len(set(seen)) != len(seen):
            raise ValueError("servers' MACs must differ, also in the locally administered bit")
        for i in range(max(len(macs), max(self._macs, default=-1) + 1)):
            rec = _Server()
            if i in new:
                ctypes.memmove(rec.mac, new[i], 6)
                rec.present = 1
                rec.ifindex = ifindexes[i] if i < len(ifindexes) else 0
            self._servers.update(ctypes.c_uint32(i), rec)
        for i, mac in self._macs.items():
            if new.get(i) != mac:
                for key in (_mac_key(mac), _mac_key(marked_mac(mac))):
                    try:
                        self._peers.delete(key)
                    except BpfError as e:
                        if e.errno != errno.ENOENT:
                            raise
        for i, mac in new.items():
            self._peers.update(_mac_key(mac), ctypes.c_uint32(i))
            self._peers.update(_mac_key(marked_mac(mac)), ctypes.c_uint32(i | PEER_SECOND))
        self._macs = new

    def set_services(self, addresses: Iterable[str]) -> None:
        """The service (anycast) addresses whose TCP and UDP the program balances."""
        keys = [_service_key(a) for a in addresses]
        wanted = {bytes(k) for k in keys}
        for k in self._service_keys:
            if bytes(k) not in wanted:
                self._services.delete(k)
        for k in keys:
            self._services.update(k, ctypes.c_uint32(1))
        self._service_keys = keys

    # -- tables ------------------------------------------------------------------------

    @property
    def table(self) -> Table | None:
        """The table in force (``None`` before the first commit)."""
        return self._tables[self._active]

    def stage(self, table: Table) -> None:
        """Write ``table`` into the bucket array not in force; packets keep meeting the
        table in force until :meth:`commit`."""
        if table.buckets > BUCKETS:
            raise ValueError(f"the data plane holds {BUCKETS} buckets, not {table.buckets}")
        if table.servers > MAX_SERVERS:
            raise ValueError(f"at most {MAX_SERVERS} servers, the table has {table.servers}")
        reps = BUCKETS // table.buckets  # hash & (B-1) == (hash & 0xffff) & (B-1)
        entries = np.empty((BUCKETS, 2), dtype=np.uint32)
        entries[:, 0] = np.tile(table.first, reps)
        second = np.tile(table.second, reps)
        entries[:, 1] = np.where(second == NONE, NO_SERVER, second)
        keys = np.arange(BUCKETS, dtype=np.uint32)
        spare = 1 - self._active
        target = self._arrays[spare]
        try:
            target.update_batch(keys, entries, BUCKETS)
        except BpfError as e:
            if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, 524):
                raise
            for k in range(BUCKETS):  # no batch operations on this kernel
                pair = (ctypes.c_uint32 * 2)(int(entries[k, 0]), int(entries[k, 1]))
                target.update(ctypes.c_uint32(k), pair)
        self._tables[spare] = table
        self._staged = True

    def commit(self) -> None:
        """Put the staged table in force, for every packet from now on."""
        if not self._staged:
            raise RuntimeError("nothing staged: call stage() first")
        spare = 1 - self._active
        self._table_map.update(ctypes.c_uint32(0), ctypes.c_uint32(self._arrays[spare].fd))
        self._active = spare
        self._staged = False
        if not self._flags & FLAG_TABLE:
            self._flags |= FLAG_TABLE
            self._write_config()

    def replace(self, table: Table) -> None:
        """Put ``table`` in force."""
        self.stage(table)
        self.commit()

    # -- reading -----------------------------------------------------------------------

    def buckets_in_force(self) -> npt.NDArray[np.uint32]:
        """The bucket array in force as the kernel holds it: per bucket its first and
        second hop (``NO_SERVER`` for none), shape ``(BUCKETS, 2)``."""
        values = ((ctypes.c_uint32 * 2) * BUCKETS)()
        self._arrays[self._active].lookup_all(values)
        raw = bytes(memoryview(values).cast("B"))
        return np.frombuffer(raw, dtype=np.uint32).reshape(BUCKETS, 2)

    def counters(self) -> list[Counter]:
        """Every non-zero counter, by kind then server."""
        out = []
        values = ((_Stat * self._ncpu) * (len(KINDS) * MAX_SERVERS))()
        self._stats.lookup_all(values)  # one call, not 1,024: a scrape reads them all
        for k, kind in enumerate(KINDS):
            for server in range(MAX_SERVERS):
                per_cpu = values[k * MAX_SERVERS + server]
                packets = sum(s.packets for s in per_cpu)
                if packets:
                    out.append(Counter(kind, server, packets, sum(s.bytes for s in per_cpu)))
        return out

    def packets(self) -> dict[tuple[str, int], int]:
        """:meth:`counters` as ``{(kind, server): packets}``."""
        return {(c.kind, c.server): c.packets for c in self.counters()}

    def reset_counters(self) -> None:
        zero = (_Stat * self._ncpu)()
        for key in range(len(KINDS) * MAX_SERVERS):
            self._stats.update(ctypes.c_uint32(key), zero)

    def last(self) -> Decision:
        """The last service packet's hash, bucket and fate (needs ``debug=True``)."""
        if not self._flags & FLAG_DEBUG:
            raise RuntimeError("the balancer records decisions only with debug=True")
        d = _Debug()
        self._debug.lookup(ctypes.c_uint32(0), d)
        return Decision(
            d.hash,
            d.bucket,
            d.first,
            -1 if d.second == NO_SERVER else d.second,
            ACTIONS[d.action] if d.action < len(ACTIONS) else str(d.action),
            -1 if d.came_from == NO_SERVER else d.came_from,
            bool(d.marked),
        )

    # -- packets -----------------------------------------------------------------------

    def test_run(self, frame: bytes) -> Verdict:
        """Run the program on ``frame`` in the kernel (``BPF_PROG_TEST_RUN``, in the
        caller's network namespace, as if it came in on its loopback)."""
        run = self.program.test_run(frame)
        return Verdict(VERDICTS.get(run.retval, str(run.retval)), run.data)

    def attach(self, ifname: str, netns: str | None = None, mode: str = "generic") -> None:
        """Attach to ``ifname`` (in network namespace ``netns``); ``mode`` is
        ``generic`` or ``native``."""
        with entered(netns):
            ifindex = socket.if_nametoindex(ifname)
            self.program.attach_xdp(ifindex, mode)
        self._attached.append((netns, ifindex, mode))

    def detach(self) -> None:
        """Detach from every interface this loader attached to (gone ones skipped)."""
        while self._attached:
            netns, ifindex, mode = self._attached.pop()
            try:
                with entered(netns):
                    detach_xdp(ifindex, mode)
            except (OSError, BpfError):
                pass


def _mac_key(mac: bytes) -> ctypes.c_uint64:
    return ctypes.c_uint64.from_buffer_copy(mac + b"\0\0")


def _service_key(address: str) -> _Service:
    ip = ipaddress.ip_address(address)
    key = _Service(family=ip.version)
    ctypes.memmove(key.addr, ip.packed, len(ip.packed))
    return key
