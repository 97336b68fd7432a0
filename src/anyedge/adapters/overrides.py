"""Operator overrides of the Traffic Manager, kept in its journal's SQLite file.

An operator can tell a running controller four things, each on or off:

* **freeze** — decide nothing new at all; every move in force stays;
* **pin** a site — it takes part in no new move (it neither sends nor receives anything
  new) and its moves in force stay (:attr:`~anyedge.control.core.Config.pinned`);
* **forbid** a receiver — no site forwards anything new to it (its latency to every
  other site becomes unknown, and the core never forwards over an unknown latency);
* **drain** a site — its thresholds become 0, so it forwards every plan that may move,
  a cap's worth each decision, and receives nothing; undrained, it takes its traffic
  back step by step as any cooled site does.

Each override is a row of the ``overrides`` table, in the journal's own file beside the
decisions — the audit trail says who changed what and when — and what is in force is the
last row of each (kind, site).  Any process may write one (the HTTP API's thread, or
``anyedge control override`` from a shell): a short SQLite transaction in WAL mode, read
by the controller at every step.  :func:`effective` turns the overrides in force into
the :class:`~anyedge.control.core.Config` the core decides with; nothing in the core
knows about operators.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from ..control.core import Config
from ..errors import InputError

Kind = Literal["freeze", "pin", "forbid", "drain"]
KINDS: tuple[str, ...] = get_args(Kind)

_TABLE = """CREATE TABLE IF NOT EXISTS overrides (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    site TEXT NOT NULL,   -- '' for freeze
    active INTEGER NOT NULL,
    who TEXT NOT NULL,
    note TEXT NOT NULL)"""


@dataclass(frozen=True)
class Override:
    id: int
    time: float
    kind: str
    site: str
    active: bool
    who: str
    note: str

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "time": self.time,
            "kind": self.kind,
            "site": self.site or None,
            "active": self.active,
            "who": self.who,
            "note": self.note,
        }


@dataclass(frozen=True)
class InForce:
    """The overrides in force: a freeze, and the sites of each kind."""

    frozen: bool = False
    pinned: frozenset[str] = frozenset()
    forbidden: frozenset[str] = frozenset()
    drained: frozenset[str] = frozenset()

    def as_dict(self) -> dict[str, object]:
        return {
            "frozen": self.frozen,
            "pinned": sorted(self.pinned),
            "forbidden": sorted(self.forbidden),
            "drained": sorted(self.drained),
        }


class Overrides:
    """The overrides table of the journal at ``path``; every call is one short
    transaction on a connection of its own, so any thread or process may call."""

    def __init__(self, path: str | Path, sites: tuple[str, ...]) -> None:
        self.path = Path(path)
        self.sites = sites
        with self._db() as db:
            db.execute(_TABLE)

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10.0)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        return db

    def set(
        self, kind: str, site: str | None, active: bool, who: str, now: float, note: str = ""
    ) -> Override:
        """Record an override (raises :class:`InputError` for an unknown kind or site)."""
        if kind not in KINDS:
            raise InputError.one(None, "kind", f"{kind!r} is not one of {', '.join(KINDS)}")
        if kind == "freeze":
            site = ""
        elif site not in self.sites:
            raise InputError.one(None, "site", f"{kind} needs one of the sites, got {site!r}")
        db = self._db()
        try:
            with db:
                cur = db.execute(
                    "INSERT INTO overrides (time, kind, site, active, who, note) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (now, kind, site, int(active), who, note),
                )
                rowid = int(cur.lastrowid or 0)
        finally:
            db.close()
        return Override(rowid, now, kind, str(site), active, who, note)

    def history(self, limit: int = 100) -> list[Override]:
        """The last ``limit`` overrides, newest first."""
        db = self._db()
        try:
            rows = db.execute(
                "SELECT id, time, kind, site, active, who, note FROM overrides "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        finally:
            db.close()
        return [Override(int(i), float(t), k, s, bool(a), w, n) for i, t, k, s, a, w, n in rows]

    def in_force(self) -> InForce:
        db = self._db()
        try:
            rows = db.execute(
                "SELECT kind, site, active FROM overrides WHERE id IN "
                "(SELECT MAX(id) FROM overrides GROUP BY kind, site)"
            ).fetchall()
        finally:
            db.close()
        on: dict[str, set[str]] = {k: set() for k in KINDS}
        for kind, site, active in rows:
            if active and kind in on:
                on[kind].add(site)
        return InForce(
            frozen=bool(on["freeze"]),
            pinned=frozenset(on["pin"]),
            forbidden=frozenset(on["forbid"]),
            drained=frozenset(on["drain"]),
        )


def effective(config: Config, sites: tuple[str, ...], now: InForce) -> Config:
    """The core's configuration with the overrides in force (a freeze is the loop's to
    honour: it does not decide at all)."""
    if not (now.pinned or now.forbidden or now.drained):
        return config
    rows = {s: i for i, s in enumerate(sites)}

    def mask(names: frozenset[str]) -> np.ndarray:
        m = np.zeros(len(sites), dtype=np.bool_)
        for s in names:
            if s in rows:
                m[rows[s]] = True
        return m

    pinned, forbidden, drained = mask(now.pinned), mask(now.forbidden), mask(now.drained)
    lat = config.latency_ms.copy()
    lat[:, forbidden] = math.inf  # nobody forwards to a forbidden receiver
    np.fill_diagonal(lat, 0.0)
    zero = np.where(drained, 0.0, 1.0)
    return replace(
        config,
        maximum=config.maximum * zero,
        target=config.target * zero,
        acceptable=config.acceptable * zero,
        latency_ms=lat,
        pinned=pinned if pinned.any() else config.pinned,
    )
