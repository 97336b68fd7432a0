"""Why the Traffic Manager did what it did: reasons as data, words only at the edges.

Inside the core every action carries a :class:`Reason`: a code from :data:`TEXT` and its
fields — amounts in ms/s, utilisations and thresholds as fractions, and sites, plans,
sections and prefixes by row.  Nothing in the core writes a sentence.  At the edges
(the command line, the journal, the lab's log, the twin's report) :func:`render` turns
a reason into words and :func:`fields` into a JSON object, both with a :class:`Names`
table, so that a site is always called by its code, never by its row.

Field names say what a field holds: ``site``, ``receiver``, ``sender`` and ``worst``
are site rows, ``plan`` a plan row, ``prefix`` a prefix row, ``section`` a section row;
``utilisation``, ``maximum``, ``target``, ``acceptable``, ``share`` are fractions shown
as per cent; ``*_ms`` are milliseconds; everything else is CPU time in ms/s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SITE_FIELDS = frozenset({"site", "receiver", "sender", "worst"})
PERCENT_FIELDS = frozenset({"utilisation", "maximum", "target", "acceptable", "share", "after"})

# code -> sentence; {field} is filled in by render()
TEXT: dict[str, str] = {
    # fail static
    "no_fresh_telemetry": "no fresh telemetry from any site: failing static, moves in force "
    "are kept",
    "stale": "telemetry is {age_s} old: no new moves for this site",
    "pinned": "pinned by the operator: no new moves for this site, its moves in force stay",
    "frozen": "frozen by the operator: nothing new is decided, moves in force are kept",
    # moves
    "over_maximum": "{utilisation} is above the maximum {maximum}: {need} to move to reach "
    "{target}; {receiver} is {latency_ms} away with room",
    "handback": "{receiver} is at {utilisation}, above its maximum {maximum}: it hands back "
    "the {cpu} it was sent",
    "replace": "{utilisation} is above the maximum {maximum} with the {returned} {sender} "
    "handed back: {need} to move to reach {target}; {receiver} is {latency_ms} away with room",
    "make_room": "making room for a withdrawal at {sender}, which would send {lands} here "
    "(room {room}): preventing a thundering herd; {receiver} is {latency_ms} away with room",
    "revert": "{utilisation} is below the acceptable {acceptable}: taking back {cpu} "
    "forwarded to {receiver}",
    "revert_idle": "no {plan} traffic arrives any more: taking back what was forwarded to "
    "{receiver}",
    "shift_out": "section at {utilisation} is above the maximum {maximum} while the site has "
    "room: shifting {cpu} to its sister sections",
    "shift_back": "section at {utilisation} is below the acceptable {acceptable}: taking "
    "back {share} of its traffic",
    "announce": "{utilisation} with room for the {cpu} its withdrawn prefix carried (about "
    "{after} after): announcing {prefix} again",
    "withdraw": "above the maximum and cannot forward: withdrawing {prefix} moves about "
    "{cpu}, which its receivers can take",
    # what could not be done, and why
    "short_no_room": "needs to move {need} but only {moved} found room below the acceptable "
    "threshold of nearby sites: {left} stays",
    "short_cap": "needs to move {need} but this decision reached its cap of {cap_share} of all "
    "CPU time after {moved}: {left} stays",
    "short_protected": "needs to move {need} but only {movable} of its traffic is in plans "
    "that may move ({protected} never move): {left} stays",
    "waiting": "above the maximum at {utilisation}, but it changed {since_s} ago: no new move "
    "before {min_interval_s}",
    "no_prefix": "above the maximum, cannot forward, and no prefix announced here to withdraw",
    "no_atlas": "above the maximum and cannot forward; no atlas says where a withdrawal "
    "would send its users, so nothing is withdrawn",
    "users_lost": "withdrawing would leave {lost} of its users without any site: not withdrawing",
    "unknown_receivers": "the atlas sends its users to sites this observation does not cover: "
    "not withdrawing",
    "last_announcement": "its prefixes are announced nowhere else: never withdrawing the last "
    "announcement of a prefix",
    "withdraw_over_cap": "withdrawing a prefix would move {cpu}, more than this decision may "
    "still move ({left})",
    "withdraw_risky": "withdrawing a prefix would send {lands} to {worst}, which has room for "
    "{room}: too risky for now",
    "resumed": "resumed from decision {seq} of the journal: enforcing again the state it left "
    "in force",
    "already_decided": "decision {seq} was taken on this observation at this time: nothing new",
    "hold_ended": "the holds journaled at decision {seq} are over: nothing is held any more",
}


@dataclass(frozen=True)
class Reason:
    """A reason code and its fields (see the module doc for what each field holds)."""

    code: str
    fields: tuple[tuple[str, float | str], ...] = ()

    def __post_init__(self) -> None:
        if self.code not in TEXT:
            raise ValueError(f"unknown reason code {self.code!r}")

    @classmethod
    def of(cls, code: str, **values: float | str) -> Reason:
        return cls(
            code, tuple((k, v if isinstance(v, str) else float(v)) for k, v in values.items())
        )

    def __str__(self) -> str:  # for debugging: rows, not names
        return render(self, None)


@dataclass(frozen=True)
class Names:
    """Rows ↔ names: sites by code, plans by name, sections by name, prefixes by CIDR."""

    sites: tuple[str, ...]
    plans: tuple[str, ...]
    sections: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()

    def site(self, name: str, where: str) -> int:
        i = self._index("sites").get(name)
        if i is None:
            raise KeyError(f"{where}: unknown site {name!r}")
        return i

    def _index(self, table: str) -> dict[str, int]:
        cache: dict[str, dict[str, int]] = self.__dict__.setdefault("_cache", {})
        if table not in cache:
            cache[table] = {v: i for i, v in enumerate(getattr(self, table))}
        return cache[table]

    def row(self, table: str, name: str) -> int:
        """The row of ``name`` in ``table`` (``sites``, ``plans``, ...); -1 if absent."""
        return self._index(table).get(name, -1)

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "sites": list(self.sites),
            "plans": list(self.plans),
            "sections": list(self.sections),
            "prefixes": list(self.prefixes),
        }


def _name(table: tuple[str, ...] | None, i: float, word: str) -> str:
    k = int(i)
    if table is not None and 0 <= k < len(table):
        return table[k]
    return f"{word} #{k}"


def value(key: str, v: float | str, names: Names | None) -> str | float:
    """One field as it is shown to people and written to JSON."""
    if isinstance(v, str):
        return v
    if key in SITE_FIELDS or key == "to":
        return _name(names.sites if names else None, v, "site")
    if key == "plan":
        return _name(names.plans if names else None, v, "plan")
    if key == "prefix":
        return _name(names.prefixes if names else None, v, "prefix")
    if key == "section":
        return _name(names.sections if names else None, v, "section")
    return v


def fields(reason: Reason, names: Names | None) -> dict[str, Any]:
    """The fields as JSON: sites, plans, sections and prefixes by name."""
    return {k: value(k, v, names) for k, v in reason.fields}


def _words(key: str, v: float | str, names: Names | None) -> str:
    shown = value(key, v, names)
    if isinstance(shown, str) or isinstance(v, str):
        return str(shown)
    if key in PERCENT_FIELDS:
        return f"{100 * v:.1f} %"
    if key == "cap_share":
        return f"{100 * v:g} %"
    if key.endswith("_ms"):
        return f"{v:,.0f} ms"
    if key.endswith("_s"):
        return f"{v:,.0f} s"
    if key == "seq":
        return f"{v:.0f}"
    return f"{v:,.0f} ms/s"


def render(reason: Reason, names: Names | None) -> str:
    """The reason in words, with names (or ``site #row`` where no table is given)."""
    words = {k: _words(k, v, names) for k, v in reason.fields}
    return TEXT[reason.code].format_map(_Missing(words))


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "?"
