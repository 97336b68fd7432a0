"""L4Drop's loader: the XDP program of ``bpf/l4drop.bpf.c``, its rules and counters.

::

    from anyedge.edge.l4drop import L4Drop
    from anyedge.edge.rules import load_rules

    with L4Drop() as l4:                      # builds the object if needed, loads it
        l4.replace(load_rules("rules.yaml"))  # in force for the next packet
        l4.attach("eth0", mode="native")
        l4.chain(balancer.program)            # what passes goes on to the balancer
        ...
        for c in l4.counters():               # per rule: packets, bytes
            print(c.name, c.packets, c.bytes)

A rule change is double-buffered: :meth:`L4Drop.stage` writes the set not in force,
its half of the index maps (:mod:`anyedge.edge.l4drop_index`: which rules each
protocol and port may meet; the maps are memory-mapped, so this is a copy) and zeroes
its counters; :meth:`L4Drop.commit` points the program at it.  Until the commit every
packet sees the old rules; after it, every packet sees the new ones — the kernel
returns from the commit only once no program still runs on the old set, so the next
stage may overwrite it.  One process should own an L4Drop's rules at a time.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..adapters.netns import entered
from . import build
from .l4drop_index import PORT_SLOTS, PROTO_SLOTS, build_index
from .libbpf import (
    VERDICTS,
    BpfError,
    BpfObject,
    Loaded,
    Map,
    Program,
    check_size,
    detach_xdp,
    possible_cpus,
)
from .rules import MAX_RULES, CompiledRules, RuleSet

PROGRAM = "l4drop"


class _Stat(ctypes.Structure):
    _fields_ = (("packets", ctypes.c_uint64), ("bytes", ctypes.c_uint64))


def _mapped(m: Map, slots: int) -> tuple[mmap.mmap, int]:
    """An index map (``BPF_F_MMAPABLE``, two halves of ``slots`` masks) mapped into this
    process: what is written there is in the kernel's map."""
    size = -(-2 * slots * 8 // mmap.PAGESIZE) * mmap.PAGESIZE
    return mmap.mmap(m.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE), slots


@dataclass(frozen=True)
class Counter:
    """What one rule matched since it came into force (summed over CPUs)."""

    name: str
    action: str
    packets: int
    bytes: int


class L4Drop(Loaded):
    """One loaded copy of the L4Drop program, its maps, and where it is attached."""

    def __init__(self, obj_path: str | Path | None = None) -> None:
        self.obj = BpfObject(obj_path or build.object_path(PROGRAM))
        self.program = self.obj.program(PROGRAM)
        self._sets = (self.obj.map("l4drop_set0"), self.obj.map("l4drop_set1"))
        self._active_map = self.obj.map("l4drop_active")
        self._stats = self.obj.map("l4drop_stats")
        self._next = self.obj.map("l4drop_next")
        # the index maps, memory-mapped: (the mapping, slots per half)
        self._index = {
            field: _mapped(self.obj.map(f"l4drop_{field}"), slots)
            for field, slots in (
                ("by_proto", PROTO_SLOTS),
                ("by_sport", PORT_SLOTS),
                ("by_dport", PORT_SLOTS),
            )
        }
        for m in self._sets:
            check_size(m, ctypes.sizeof(RuleSet), "struct l4drop_set", "rules.py")
        check_size(self._stats, ctypes.sizeof(_Stat), "struct l4drop_stat", "rules.py")
        self._ncpu = possible_cpus()
        self._active = 0  # the object starts with l4drop_set0, empty, in force
        self._rules: list[CompiledRules] = [CompiledRules((), (), ()), CompiledRules((), (), ())]
        self._staged = False
        self._attached: list[tuple[str | None, int, str]] = []

    # -- rules -----------------------------------------------------------------------

    @property
    def rules(self) -> CompiledRules:
        """The rules in force."""
        return self._rules[self._active]

    def stage(self, rules: CompiledRules) -> None:
        """Write ``rules`` into the set not in force, with its counters zeroed; packets
        keep meeting the rules in force until :meth:`commit`."""
        if len(rules) > MAX_RULES:
            raise ValueError(f"at most {MAX_RULES} rules, got {len(rules)}")
        spare = 1 - self._active
        value = RuleSet(id=spare, count=len(rules))
        for i, rec in enumerate(rules.records):
            value.rules[i] = rec
        zero = (_Stat * self._ncpu)()
        for i in range(MAX_RULES):
            self._stats.update(ctypes.c_uint32(spare * MAX_RULES + i), zero)
        index = build_index(rules)
        for field, (mapping, slots) in self._index.items():
            masks = np.frombuffer(mapping, np.uint64, 2 * slots)
            masks[spare * slots : (spare + 1) * slots] = getattr(index, field)
            del masks  # a view left alive would keep the mapping from closing
        self._sets[spare].update(ctypes.c_uint32(0), value)
        self._rules[spare] = rules
        self._staged = True

    def commit(self) -> None:
        """Put the staged rules in force, for every packet from now on."""
        if not self._staged:
            raise RuntimeError("nothing staged: call stage() first")
        spare = 1 - self._active
        self._active_map.update(ctypes.c_uint32(0), ctypes.c_uint32(self._sets[spare].fd))
        self._active = spare
        self._staged = False

    def replace(self, rules: CompiledRules) -> list[Counter]:
        """Put ``rules`` in force; the final counters of the rules they replace."""
        self.stage(rules)
        self.commit()
        return self._counters(1 - self._active)

    def counters(self) -> list[Counter]:
        """Per rule in force, in order: packets and bytes it matched."""
        return self._counters(self._active)

    def _counters(self, set_id: int) -> list[Counter]:
        rules = self._rules[set_id]
        out = []
        per_cpu = (_Stat * self._ncpu)()
        for i, (name, action) in enumerate(zip(rules.names, rules.actions, strict=True)):
            self._stats.lookup(ctypes.c_uint32(set_id * MAX_RULES + i), per_cpu)
            packets = sum(s.packets for s in per_cpu)
            out.append(Counter(name, action, packets, sum(s.bytes for s in per_cpu)))
        return out

    def close(self) -> None:
        for mapping, _ in self._index.values():
            mapping.close()
        self._index = {}
        super().close()

    # -- the next stage ----------------------------------------------------------------

    def chain(self, program: Program | None) -> None:
        """Hand every packet the rules pass to ``program`` (an XDP program: a server's
        load balancer, say) by a tail call, instead of passing it up the stack; ``None``
        undoes it.  The kernel holds the program from then on, whatever its loader does,
        until it is unchained."""
        key = ctypes.c_uint32(0)
        if program is not None:
            self._next.update(key, ctypes.c_uint32(program.fd))
            return
        try:
            self._next.delete(key)
        except BpfError as e:
            if e.errno != errno.ENOENT:  # nothing was chained: nothing to undo
                raise

    # -- packets ---------------------------------------------------------------------

    def test_run(self, packet: bytes) -> str:
        """The program's verdict on ``packet`` (an Ethernet frame), run in the kernel
        with ``BPF_PROG_TEST_RUN``: ``"drop"`` or ``"pass"``.  Counters count it."""
        verdict = self.program.test_run(packet).retval
        return VERDICTS.get(verdict, str(verdict))

    def attach(
        self,
        ifname: str,
        netns: str | None = None,
        mode: str = "generic",
        replace: Program | None = None,
    ) -> None:
        """Attach to interface ``ifname`` (in network namespace ``netns``, by name);
        ``mode`` is ``generic`` (any interface) or ``native`` (in the driver).  With
        ``replace`` (the program attached there, e.g. the balancer this L4Drop is
        chained to), take its place in one step."""
        with entered(netns):
            ifindex = socket.if_nametoindex(ifname)
            self.program.attach_xdp(ifindex, mode, replace)
        self._attached.append((netns, ifindex, mode))

    def detach(self) -> None:
        """Detach from every interface this loader attached to (an interface that is
        gone, with its namespace, is skipped)."""
        while self._attached:
            netns, ifindex, mode = self._attached.pop()
            try:
                with entered(netns):
                    detach_xdp(ifindex, mode)
            except (OSError, BpfError):
                pass
