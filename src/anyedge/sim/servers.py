"""Servers inside the twin's sites: each section's load spread over its servers by the
load balancer's bucket table, so that a server failing or drained inside a site shows.

Inside a section the twin does what a site's load balancer does (Unimog, in the traffic
manager and BPF edge posts): every section has a :class:`anyedge.balance.Table` of
:data:`TWIN_BUCKETS` buckets over its servers, weighted by their capacity (CPU per
server), and a server takes the share of the section's load that its buckets are of
the table.  The table is the one the XDP balancer reads (:mod:`anyedge.balance`), only
smaller; every change goes through it, so what moves, and which connections break, is
what the real table would do.

Two events act on servers (:mod:`.scenario`), each on the first ``count`` servers of a
section, undone when the event ends:

* ``server_fail``: the servers die.  Their capacity is gone at once, and so are the
  connections on them (the buckets whose first hop they are).  Until the load balancer
  takes them out of its table, every request hashed to their buckets fails.  Under the
  Traffic Manager that happens at its first decision on telemetry that shows the
  failure (``telemetry_delay`` after it): the servers are *removed*, their buckets dealt
  to the section's other servers (Unimog re-weighting inside the site, first), and if
  the section as a whole is then short the controller's coarser moves follow (Duomog to
  sister sections, then Plurimog or withdrawal).  The other two controllers leave the
  table alone: the dead servers' share fails until they come back.  When they come
  back they are made active again and take their share back.
* ``server_drain``: the operator drains the servers (under every controller: it is a
  planned change of the table).  Their buckets move to the others and they stay those
  buckets' second hop, so their connections go on (daisy chaining); when the event
  ends they take their share again.

Every change of a table is recorded (:attr:`Servers.changes`): the share of the
section's buckets that moved, and the share of its connections broken, with the second
hop and without it.  Connections are counted on each bucket's first hop before the
change (a bucket's newest connections), as many per bucket: a connection breaks when its
server dies, or when its bucket moves and its server is neither the new first nor the
new second hop.

Data flow: the world's sections → :class:`Fleet` (servers, capacities, the first
tables; once per twin) → per run, :class:`Servers` (tables as the events and the
controller change them; each section's *dead* share, the buckets whose first hop has
failed) → the engine's tick fails the dead share of each section's load and serves the
rest on the live capacity → per sample, each watched server's utilisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..balance import ServerState, Table
from ..model.network import Sections
from .scenario import SERVER_KINDS, Event

TWIN_BUCKETS = 1 << 12  # buckets per section's table (the XDP balancer's has 2**16)
FloatArray = npt.NDArray[np.float64]
AnyFloats = npt.NDArray[np.floating[Any]]
IntArray = npt.NDArray[np.int64]


class Fleet:
    """Every server of the world, by section, and each section's first table (built
    when first asked for): once per twin, shared by its runs."""

    def __init__(
        self, sections: Sections, buckets: int = TWIN_BUCKETS, sites: tuple[str, ...] = ()
    ) -> None:
        n = np.asarray(sections.servers, dtype=np.int64)
        self.names = tuple(sections.name)
        self.site_codes = sites  # the world's site codes, by site row (for the summary)
        self.site = np.asarray(sections.site, dtype=np.int64)
        self.count = n
        self.start = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
        self.section = np.repeat(np.arange(n.size), n)  # server -> its section
        self.cpu = np.repeat(np.asarray(sections.cpu_per_server, dtype=np.float64), n)
        self.buckets = buckets
        self._tables: dict[int, Table] = {}

    def table(self, sec: int) -> Table:
        """Section ``sec``'s first table: its servers weighted by their capacity."""
        if sec not in self._tables:
            cpu = self.cpu[self.servers_of(sec)]
            self._tables[sec] = Table.build(cpu, buckets=self.buckets, seed=sec)
        return self._tables[sec]

    def servers_of(self, sec: int) -> npt.NDArray[np.int64]:
        return np.arange(self.start[sec], self.start[sec] + self.count[sec])


def broken(old: Table, new: Table, lost: npt.NDArray[np.bool_]) -> tuple[float, float, float]:
    """(moved, broken with the second hop, broken without it): shares of the buckets of
    a change from ``old`` to ``new``.  ``lost`` marks the servers whose connections are
    already gone (failed): their buckets break nothing more when they move."""
    o = old.first
    alive = ~lost[o]
    moved = o != new.first
    kept = (o == new.first) | (o == new.second)
    return (
        float(moved.mean()),
        float((alive & ~kept).mean()),
        float((alive & moved).mean()),
    )


class Servers:
    """The servers of one run: the sections' tables as events and the controller change
    them (only sections that a server event touches get a table of their own; the others
    keep their first one, an even spread by capacity)."""

    def __init__(self, fleet: Fleet, events: tuple[Event, ...], unimog: bool) -> None:
        self.f = fleet
        self.unimog = unimog  # the controller takes failed servers out of the table
        self.tables: dict[int, Table] = {}
        self.failed = np.zeros(fleet.section.size, dtype=np.bool_)
        self.dead = np.zeros(fleet.count.size)  # per section: share of dead buckets
        self.any_dead = False
        self.version = 0  # counted up whenever ``dead`` changes
        self.pending: list[tuple[float, int]] = []  # (when, section) to take out failed
        self.changes: list[dict[str, Any]] = []
        watched = sorted({e.section for e in events if e.kind in SERVER_KINDS})
        self.watched = watched
        for sec in watched:
            self.tables[sec] = fleet.table(sec)
        self.watched_servers = (
            np.concatenate([fleet.servers_of(s) for s in watched])
            if watched
            else np.zeros(0, dtype=np.int64)
        )

    # ------------------------------------------------------------------- events

    def begin(self, e: Event, now: float, detect_at: float) -> None:
        """``e`` starts at ``now``; a failure is seen by the controller at ``detect_at``."""
        sec, idx = e.section, np.arange(e.count)
        if e.kind == "server_fail":
            srv = self.f.start[sec] + idx
            t = self.tables[sec]
            share = float(np.isin(t.first, idx).mean())
            self.failed[srv] = True
            self._dead(sec)
            self._record(now, sec, "fail", e.count, 0.0, share, share)
            if self.unimog:
                self.pending.append((detect_at, sec))
        else:
            state = self.tables[sec].state.copy()
            state[idx] = ServerState.DRAINING
            self._change(now, sec, "drain", e.count, state)

    def end(self, e: Event, now: float) -> None:
        """``e`` ends at ``now``: its servers are back (a failed one up, a drained one
        active again)."""
        sec, idx = e.section, np.arange(e.count)
        t = self.tables[sec]
        self.pending = [p for p in self.pending if p[1] != sec]
        self.failed[self.f.start[sec] + idx] = False
        if np.any(t.state[idx] != ServerState.ACTIVE):
            state = t.state.copy()
            state[idx] = ServerState.ACTIVE
            what = "recover" if e.kind == "server_fail" else "undrain"
            self._change(now, sec, what, e.count, state)
        else:  # failed and back before anyone took them out: nothing moves
            self._record(now, sec, "recover", e.count, 0.0, 0.0, 0.0)
        self._dead(sec)

    def due(self, now: float) -> None:
        """The controller's health data shows the failures due by ``now``: it takes the
        failed servers out of their tables (Unimog)."""
        keep = []
        for when, sec in self.pending:
            if when > now:
                keep.append((when, sec))
                continue
            t = self.tables[sec]
            mine = self.failed[self.f.servers_of(sec)] & (t.state == ServerState.ACTIVE)
            if mine.any():
                state = t.state.copy()
                state[mine] = ServerState.REMOVED
                self._change(now, sec, "remove", int(mine.sum()), state)
                self._dead(sec)
        self.pending = keep

    # ------------------------------------------------------------------ reading

    def share(self) -> FloatArray:
        """Each watched server's share of its section's buckets (as first hop)."""
        out = np.zeros(self.watched_servers.size)
        at = 0
        for sec in self.watched:
            t = self.tables[sec]
            out[at : at + t.servers] = t.counts() / t.buckets
            at += t.servers
        return out

    def utilisation(self, sec_load: AnyFloats) -> FloatArray:
        """Each watched server's utilisation for sections' loads ``sec_load`` (CPU ms/s,
        dead buckets included): its share of the load over its capacity; 0 when dead."""
        srv = self.watched_servers
        if srv.size == 0:
            return np.zeros(0)
        load = sec_load[self.f.section[srv]] * self.share()
        return np.asarray(np.where(self.failed[srv], 0.0, load / self.f.cpu[srv]))

    def summary(self, series: AnyFloats, step_s: float) -> dict[str, Any]:
        """What the run did to servers, for ``--json``: the changes, and per watched
        section its site's code, its servers and their utilisation (peak, and a sample
        per ``step_s``)."""
        sections: dict[str, Any] = {}
        at = 0
        for sec in self.watched:
            k = int(self.f.count[sec])
            u = np.asarray(series[:, at : at + k], dtype=np.float64)
            at += k
            site = int(self.f.site[sec])
            sections[self.f.names[sec]] = {
                "site": self.f.site_codes[site] if site < len(self.f.site_codes) else "",
                "servers": k,
                "cpu_per_server": float(self.f.cpu[self.f.start[sec]]),
                "peak_utilisation": [round(float(x), 4) for x in u.max(axis=0)]
                if u.size
                else [0.0] * k,
                "step_s": step_s,
                "utilisation": np.round(u, 4).tolist(),
            }
        return {"changes": self.changes, "sections": sections}

    # ------------------------------------------------------------------ helpers

    def _dead(self, sec: int) -> None:
        t = self.tables[sec]
        self.dead[sec] = float(self.failed[self.f.start[sec] + t.first].mean())
        self.any_dead = bool(self.dead.any())
        self.version += 1

    def _change(self, now: float, sec: int, what: str, n: int, state: npt.NDArray[Any]) -> None:
        old = self.tables[sec]
        new = old.change(state=state)
        self.tables[sec] = new
        lost = self.failed[self.f.servers_of(sec)] & (new.state == ServerState.REMOVED)
        moved, br, plain = broken(old, new, lost)
        self._record(now, sec, what, n, moved, br, plain)

    def _record(
        self, now: float, sec: int, what: str, n: int, moved: float, br: float, plain: float
    ) -> None:
        t = self.tables[sec]
        live = (t.state == ServerState.ACTIVE) & ~self.failed[self.f.servers_of(sec)]
        self.changes.append(
            {
                "time_s": now,
                "section": self.f.names[sec],
                "what": what,
                "servers": n,
                "moved": moved,
                "broken": br,
                "broken_without_second_hop": plain,
                "capacity": float(live.mean()),
            }
        )
