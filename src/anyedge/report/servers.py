"""What the report shows of the servers inside sites: the numbers, not the drawing.

The twin records, per run, every change of the load balancer's table of each section
that a server event touches (:mod:`anyedge.sim.servers`, ``RunResult.servers``): when,
what (``fail``, ``remove``, ``recover``, ``drain``, ``undrain``), how many servers, the
share of buckets moved and of connections broken, with the second hop and without it;
and each of those sections' servers' utilisation a sample at a time.  From that, for
:mod:`.html`'s section on servers:

* :func:`affected`: the sections, in the order their first change came, with their
  site and size;
* :func:`steps`: per run and section, how many servers were failed, drained and taken
  out of the table (removed) from each change on, a step series;
* :func:`broken`: per run and section, the connections broken by failures (``fail``,
  ``remove``, ``recover``) and by drains (``drain``, ``undrain``), each with the second
  hop and without it: the sum of the changes' shares (each a share of the section's
  connections at the time of its change);
* :func:`hottest`: per run and section, the most loaded server's utilisation at each
  sample.

Everything reads the same dicts ``anyedge simulate --json`` prints under ``servers``, so
what the page shows is what the JSON says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FAILURE = ("fail", "remove", "recover")  # changes that count as the failure's
DRAIN = ("drain", "undrain")  # ... as the drain's


@dataclass(frozen=True)
class Section:
    """A section some server event touched."""

    name: str
    site: str  # its site's code ("" if the run did not say)
    servers: int
    cpu_per_server: float  # CPU ms/s at 100 %


@dataclass(frozen=True)
class Step:
    """From ``time_s`` on: servers failed, drained and taken out of the table."""

    time_s: float
    failed: int
    drained: int
    removed: int


@dataclass(frozen=True)
class Broken:
    """Shares of a section's connections broken, summed over its changes."""

    failure: float
    failure_without_second_hop: float
    drain: float
    drain_without_second_hop: float


def _changes(servers: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    got = servers.get("changes", [])
    return [ch for ch in got if isinstance(ch, Mapping)] if isinstance(got, list) else []


def affected(runs: Mapping[str, Mapping[str, Any]]) -> list[Section]:
    """The sections of ``runs`` (mode -> its ``servers`` dict), in the order their
    first change came (ties: by name)."""
    first: dict[str, float] = {}
    facts: dict[str, Mapping[str, Any]] = {}
    for servers in runs.values():
        for ch in _changes(servers):
            name = str(ch.get("section", ""))
            first[name] = min(first.get(name, float("inf")), float(ch.get("time_s", 0.0)))
        sections = servers.get("sections", {})
        if isinstance(sections, Mapping):
            for name, sec in sections.items():
                first.setdefault(str(name), float("inf"))
                if isinstance(sec, Mapping):
                    facts.setdefault(str(name), sec)
    out = []
    for name in sorted(first, key=lambda n: (first[n], n)):
        f = facts.get(name, {})
        out.append(
            Section(
                name,
                str(f.get("site", "") or ""),
                int(f.get("servers", 0) or 0),
                float(f.get("cpu_per_server", 0.0) or 0.0),
            )
        )
    return out


def steps(servers: Mapping[str, Any], section: str) -> list[Step]:
    """Servers failed, drained and removed from the run's start, one step per change
    of ``section`` (a run with no change there: one step of zeros)."""
    failed = drained = removed = 0
    out = [Step(0.0, 0, 0, 0)]
    for ch in _changes(servers):
        if ch.get("section") != section:
            continue
        n, what = int(ch.get("servers", 0)), ch.get("what")
        if what == "fail":
            failed += n
        elif what == "remove":
            removed += n
        elif what == "recover":  # back up, and back in the table
            failed, removed = max(failed - n, 0), max(removed - n, 0)
        elif what == "drain":
            drained += n
        elif what == "undrain":
            drained = max(drained - n, 0)
        step = Step(float(ch.get("time_s", 0.0)), failed, drained, removed)
        if out[-1].time_s == step.time_s:
            out[-1] = step
        else:
            out.append(step)
    return out


def broken(servers: Mapping[str, Any], section: str) -> Broken:
    """The connections of ``section`` that its failures and its drains broke."""
    sums = dict.fromkeys(("f", "fp", "d", "dp"), 0.0)
    for ch in _changes(servers):
        if ch.get("section") != section:
            continue
        b = float(ch.get("broken", 0.0))
        plain = float(ch.get("broken_without_second_hop", 0.0))
        if ch.get("what") in FAILURE:
            sums["f"] += b
            sums["fp"] += plain
        elif ch.get("what") in DRAIN:
            sums["d"] += b
            sums["dp"] += plain
    return Broken(sums["f"], sums["fp"], sums["d"], sums["dp"])


def hottest(
    servers: Mapping[str, Any], section: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """(time_s, utilisation of the section's most loaded server) at each sample; None
    when the run has no samples of the section."""
    sec = servers.get("sections", {}).get(section) if isinstance(servers, Mapping) else None
    if not isinstance(sec, Mapping):
        return None
    try:
        u = np.asarray(sec.get("utilisation", []), dtype=np.float64)
        step = float(sec.get("step_s", 0.0))
    except (TypeError, ValueError):
        return None
    if u.ndim != 2 or u.shape[0] == 0 or u.shape[1] == 0 or step <= 0:
        return None
    return np.arange(u.shape[0], dtype=np.float64) * step, np.asarray(
        u.max(axis=1), dtype=np.float64
    )


def changes_of(servers: Mapping[str, Any], section: str) -> Sequence[Mapping[str, Any]]:
    """The run's changes of ``section``, in order."""
    return [ch for ch in _changes(servers) if ch.get("section") == section]
