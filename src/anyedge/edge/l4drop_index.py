"""L4Drop's index: for each value of a field, which rules admit it.

The XDP program (``bpf/l4drop.bpf.c``) does not try its rules one by one.  For a
packet it reads three 64-bit masks (bit ``i``: rule ``i``) — the rules admitting its
family and protocol, its source port, its destination port — and checks in full only
the rules in all three, lowest first.  This module computes those masks from the
compiled rules; :class:`anyedge.edge.l4drop.L4Drop` writes them into the half of the
index maps that belongs to the set it stages.

- ``by_proto``: 512 slots, ``(family == 6) * 256 + protocol``; a rule with no family
  or protocol is in all slots of the families it admits.
- ``by_sport`` and ``by_dport``: 65,537 slots, the port, and :data:`NO_L4` for a
  packet without a transport header (another protocol, a later fragment).  A rule
  that reads no transport field (no ports, flags or payload) is in every slot; one
  that does is in the slots of its port range and not in :data:`NO_L4`.

The masks only narrow the search: the program still checks each candidate's
prefixes, length, TCP flags and payload, so a mask may say too much but never too
little.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .rules import NEED_L4, CompiledRules

PROTO_SLOTS = 512  # L4DROP_PROTO_SLOTS
PORT_SLOTS = 65537  # L4DROP_PORT_SLOTS
NO_L4 = 65536  # L4DROP_NO_L4

Masks = npt.NDArray[np.uint64]


@dataclass(frozen=True)
class Index:
    by_proto: Masks  # PROTO_SLOTS masks
    by_sport: Masks  # PORT_SLOTS masks
    by_dport: Masks


def build_index(rules: CompiledRules) -> Index:
    """The masks of ``rules`` (at most 64)."""
    by_proto = np.zeros(PROTO_SLOTS, np.uint64)
    by_sport = np.zeros(PORT_SLOTS, np.uint64)
    by_dport = np.zeros(PORT_SLOTS, np.uint64)
    for i, r in enumerate(rules.records):
        bit = np.uint64(1 << i)
        for family, base in ((4, 0), (6, 256)):
            if r.family not in (0, family):
                continue
            if r.proto:
                by_proto[base + r.proto] |= bit
            else:
                by_proto[base : base + 256] |= bit
        if r.flags & NEED_L4:
            by_sport[r.sport_min : r.sport_max + 1] |= bit
            by_dport[r.dport_min : r.dport_max + 1] |= bit
        else:
            by_sport |= bit
            by_dport |= bit
    return Index(by_proto, by_sport, by_dport)
