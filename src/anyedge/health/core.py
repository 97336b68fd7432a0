"""Health-checked announcements, sans-IO: when a site announces a service's prefix.

An anycast service is only as good as the sites that announce it: a site whose DNS
server, TURN relay or web server has died must stop announcing the service's prefix, so
that BGP carries its users to another site, and announce it again once it is healthy.
That is what anycast-healthchecker and ExaBGP's healthcheck do for one host; this module
is their decision logic for a whole network, with no sockets and no clock (``now`` is an
argument, as in the Traffic Manager's core).

Data flow, per service:

1. A checker at each site probes the service (a DNS query, a TCP connect, ...) and
   hands each result to that site's :class:`Health` (``check(ok, now)``).  ``Health``
   turns the results into a *wish* — announce or withdraw — with a reason:

   * **rise and fall**: a withdrawn site announces after ``rise`` passes in a row, an
     announcing site withdraws after ``fall`` failures in a row, so a service that
     flaps between pass and fail does not flap the announcement;
   * **drain**: an operator's planned stop withdraws at once, whatever the checks say,
     so traffic leaves before the service stops; ``undrain`` returns to the checks (the
     site announces again once the last ``rise`` checks passed);
   * **dead-man timer**: a site whose checker has said nothing for ``deadman_s``
     withdraws — a dead checker must not leave a dead service announced — and, when
     results come again, announces only after ``rise`` new passes in a row.
     :meth:`Health.deadline` says when the timer fires, so the caller can wake up then.

2. :func:`decide` takes every site's wish and what each site announces now, and gives
   the changes to make.  It never withdraws the last site that announces a service
   (every user would be left without it): that withdrawal is held, with the reason
   ``last_site``, unless the operator has overridden the guard for the service.  Sites
   are taken in a fixed order (their index), so the outcome is the same however the
   wishes arrive.

3. The caller carries the changes out through a site's BGP speaker (anyedge's
   adapters) and records the reasons.

Reasons are data (a code and fields), like the Traffic Manager's: the text is made at
the edges (:data:`TEXT`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

TEXT = {
    "healthy": "{rise:g} checks in a row passed",
    "unhealthy": "{fall:g} checks in a row failed",
    "starting": "waiting for {rise:g} checks in a row to pass before announcing",
    "drained": "drained by the operator",
    "checker_silent": "no check result for {silent_s:g} s (dead-man timer: {deadman_s:g} s)",
    "last_site": "kept announced although {wished}: the last site announcing the service, "
    "whose withdrawal would leave every user without it (an operator can override)",
    "override": "withdrawn although it was the last site: the operator overrode the guard",
}


@dataclass(frozen=True)
class Reason:
    code: str
    fields: tuple[tuple[str, float | str], ...] = ()

    def __post_init__(self) -> None:
        if self.code not in TEXT:
            raise ValueError(f"unknown reason code {self.code!r}")

    def text(self) -> str:
        return TEXT[self.code].format(**dict(self.fields))


@dataclass(frozen=True)
class Settings:
    """How one service is checked (the names anycast-healthchecker users know)."""

    rise: int = 2  # passes in a row before a withdrawn site announces
    fall: int = 3  # failures in a row before an announcing site withdraws
    deadman_s: float = 30.0  # no check result for this long: withdraw

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1:
            raise ValueError("rise and fall must be at least 1")
        if not (self.deadman_s > 0 and math.isfinite(self.deadman_s)):
            raise ValueError("deadman_s must be a positive number of seconds")


@dataclass(frozen=True)
class Wish:
    """What a site's health says about announcing the service, and why."""

    announce: bool
    reason: Reason


@dataclass
class Health:
    """One service at one site: check results in, a wish out.  Starts withdrawn, as
    a service must show it is healthy before users are sent to it."""

    settings: Settings = field(default_factory=Settings)
    started: float = 0.0  # when checking began (the dead-man timer runs from here)
    passes: int = 0  # the current run of passing checks
    failures: int = 0  # ... of failing checks
    healthy: bool = False  # by the checks alone (rise/fall), whatever the drain
    drained: bool = False
    last_check: float | None = None

    def check(self, ok: bool, now: float) -> Wish:
        """A check's result at ``now``; the wish after it."""
        s = self.settings
        if now >= self.deadline():  # after a silence, what was known is stale: start over
            self.passes, self.failures, self.healthy = 0, 0, False
        self.last_check = now
        if ok:
            self.passes, self.failures = self.passes + 1, 0
            if self.passes >= s.rise:
                self.healthy = True
        else:
            self.passes, self.failures = 0, self.failures + 1
            if self.failures >= s.fall:
                self.healthy = False
        return self.wish(now)

    def drain(self) -> None:
        """A planned stop: withdraw now, whatever the checks say."""
        self.drained = True

    def undrain(self) -> None:
        """Back to the checks: announce again once the last ``rise`` checks passed."""
        self.drained = False
        self.healthy = self.passes >= self.settings.rise

    def deadline(self) -> float:
        """When the dead-man timer fires if no check result comes first."""
        since = self.started if self.last_check is None else self.last_check
        return since + self.settings.deadman_s

    def wish(self, now: float) -> Wish:
        """Announce or withdraw at ``now``, and why (drain first, then the dead-man
        timer, then the checks)."""
        s = self.settings
        if self.drained:
            return Wish(False, Reason("drained"))
        if now >= self.deadline():
            since = self.started if self.last_check is None else self.last_check
            return Wish(
                False,
                Reason(
                    "checker_silent",
                    (("silent_s", float(now - since)), ("deadman_s", s.deadman_s)),
                ),
            )
        if self.healthy:
            return Wish(True, Reason("healthy", (("rise", float(s.rise)),)))
        if self.last_check is None or self.failures == 0:
            return Wish(False, Reason("starting", (("rise", float(s.rise)),)))
        return Wish(False, Reason("unhealthy", (("fall", float(s.fall)),)))


@dataclass(frozen=True)
class Change:
    """What to do at one site: announce (True) or withdraw (False) the service, or
    hold (``held``: it wished to withdraw, and was refused), with the reason."""

    site: int
    announce: bool
    reason: Reason
    held: bool = False


def decide(
    wishes: Sequence[Wish], announcing: Sequence[bool], override: bool = False
) -> list[Change]:
    """The changes that carry out ``wishes`` (one per site, by index) given which
    sites announce now, never withdrawing the last announcing site unless
    ``override``.  Announcements go first, so a site coming up can let another go
    down in the same round."""
    if len(wishes) != len(announcing):
        raise ValueError("one wish per site, and one announcing flag per site")
    live = list(announcing)
    out: list[Change] = []
    for site, (w, on) in enumerate(zip(wishes, announcing, strict=True)):
        if w.announce and not on:
            live[site] = True
            out.append(Change(site, True, w.reason))
    for site, (w, on) in enumerate(zip(wishes, announcing, strict=True)):
        if w.announce or not on:
            continue
        if sum(live) <= 1 and not override:
            # held: it stays announced; the reason says what it wished, and why
            out.append(Change(site, True, Reason("last_site", (("wished", w.reason.code),)), True))
            continue
        live[site] = False
        why = Reason("override") if sum(live) == 0 else w.reason
        out.append(Change(site, False, why))
    return out
