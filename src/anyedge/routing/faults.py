"""Faults the routing engine follows: links down, and a site's BGP sessions lost.

A :class:`Faults` value says what is broken, in rows of the world:

* **links** between two ASes of the Internet (a cable cut, a session between two
  networks that dropped): both directions of the link leave the graph, as a mask over
  its edge arrays (:meth:`~.graph.RoutingGraph.link_mask`);
* **sessions** of anyedge's sites: a link between a site and a neighbour AS takes that
  session down; a site whose sessions are all lost (``sites``) announces nothing to
  anyone.  That differs from a withdrawal in what it says about the site — it is cut
  off, its speaker and servers may be fine — but to the routing it is the same: the
  site's seeds are gone, for every prefix at once.

:func:`resolve` turns names as an engineer writes them — ``A-B`` with AS numbers or site
codes on either side, and site codes — into a :class:`Faults`, or raises
:class:`FaultError` listing every name it could not place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..model.internet import Internet
from ..model.world import World

BoolArray = npt.NDArray[np.bool_]


class FaultError(ValueError):
    """Names of faults that do not fit the world: (option, message) problems."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{o}: {m}" for o, m in problems))
        self.problems = problems


@dataclass(frozen=True)
class Faults:
    """What is down: AS links (pairs of Internet rows, lower first) and site sessions
    (rows of ``network.sessions``); ``names`` says it as it was asked, for output."""

    links: tuple[tuple[int, int], ...] = ()
    sessions: tuple[int, ...] = ()
    sites: tuple[int, ...] = ()  # sites whose sessions are all lost (their rows: sessions)
    names: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.links or self.sessions or self.sites)

    def session_up(self, n: int) -> BoolArray:
        """One flag per session of the network: is it up?"""
        up = np.ones(n, dtype=np.bool_)
        up[list(self.sessions)] = False
        return up

    def __or__(self, other: Faults) -> Faults:
        return Faults(
            links=tuple(sorted(set(self.links) | set(other.links))),
            sessions=tuple(sorted(set(self.sessions) | set(other.sessions))),
            sites=tuple(sorted(set(self.sites) | set(other.sites))),
            names=tuple(dict.fromkeys(self.names + other.names)),
        )

    def to_dict(self, world: World) -> dict[str, list[str]]:
        """The faults by name: AS links as ``A-B``, sessions as ``SITE-ASN``, sites."""
        net, inet = world.network, world.internet
        ses = net.sessions
        if self.names:  # as they were asked
            links = [n for n in self.names if "-" in n]
            return {"links_down": links, "sites_down": [net.sites.code[s] for s in self.sites]}
        return {
            "links_down": [f"{inet.asn[a]}-{inet.asn[b]}" for a, b in self.links]
            + [
                f"{net.sites.code[int(ses.site[s])]}-{int(ses.asn[s])}"
                for s in self.sessions
                if int(ses.site[s]) not in self.sites
            ],
            "sites_down": [net.sites.code[s] for s in self.sites],
        }


def link_between(internet: Internet, a: int, b: int) -> tuple[int, int] | None:
    """The AS-row pair (lower first) of the link between ASNs ``a`` and ``b``, if they
    are linked; KeyError if either is not in ``internet``."""
    ra, rb = internet.index(a), internet.index(b)
    lo, hi = min(ra, rb), max(ra, rb)
    for pairs in (internet.p2c, internet.p2p):
        p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if np.any((np.minimum(p[:, 0], p[:, 1]) == lo) & (np.maximum(p[:, 0], p[:, 1]) == hi)):
            return lo, hi
    return None


def as_links(internet: Internet, links: Iterable[str], option: str = "--link-down") -> Faults:
    """Faults for ``A-B`` links between ASes only (a bare CAIDA graph has no sites)."""
    problems: list[tuple[str, str]] = []
    pairs: set[tuple[int, int]] = set()
    for text in links:
        ends = [e.strip().upper().removeprefix("AS") for e in text.split("-")]
        if len(ends) != 2 or not all(e.isdigit() for e in ends):
            problems.append((option, f"expected A-B with two AS numbers, got {text!r}"))
            continue
        a, b = int(ends[0]), int(ends[1])
        try:
            pair = link_between(internet, a, b)
        except KeyError as k:
            problems.append((option, f"AS{k.args[0]} is not in the graph (in {text!r})"))
            continue
        if pair is None:
            problems.append((option, f"AS{a} and AS{b} are not linked"))
        else:
            pairs.add(pair)
    if problems:
        raise FaultError(problems)
    return Faults(links=tuple(sorted(pairs)), names=tuple(links))


def _end(world: World, name: str, problems: list[str]) -> tuple[str, int]:
    """("site", row) or ("as", ASN) for one end of a link; ("", 0) and a problem if
    neither."""
    text = name.strip()
    code = text.upper()
    if code in world.network.sites.code:
        return "site", world.network.sites.index(code)
    digits = code[2:] if code.startswith("AS") else code
    if digits.isdigit():
        if int(digits) in set(world.internet.asn.tolist()):
            return "as", int(digits)
        problems.append(f"AS{int(digits)} is not in the Internet")
    else:
        problems.append(f"{text!r} is neither a site nor an AS number")
    return "", 0


def resolve(
    world: World,
    links: Iterable[str] = (),
    sites: Iterable[str] = (),
    link_option: str = "--link-down",
    site_option: str = "--site-down",
) -> Faults:
    """Faults from names: ``links`` as ``A-B`` (AS numbers or site codes), ``sites``
    as site codes.  Raises :class:`FaultError` naming every problem."""
    net = world.network
    ses = net.sessions
    problems: list[tuple[str, str]] = []
    down_links: set[tuple[int, int]] = set()
    down_sessions: set[int] = set()
    down_sites: set[int] = set()
    names: list[str] = []
    for text in links:
        parts = text.split("-")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            problems.append((link_option, f"expected A-B (AS numbers or site codes), got {text!r}"))
            continue
        bad: list[str] = []
        (ka, va), (kb, vb) = (_end(world, p, bad) for p in parts)
        if bad:
            problems += [(link_option, f"{m} (in {text!r})") for m in bad]
            continue
        if ka == kb == "site":
            problems.append(
                (link_option, f"{text!r} joins two sites: the backbone is not in BGP routing")
            )
        elif ka == kb == "as":
            pair = link_between(world.internet, va, vb)
            if pair is None:
                problems.append((link_option, f"AS{va} and AS{vb} are not linked"))
            else:
                down_links.add(pair)
                names.append(f"{va}-{vb}")
        else:
            site, asn = (va, vb) if ka == "site" else (vb, va)
            rows = np.flatnonzero((ses.site == site) & (ses.asn == asn))
            if not rows.size:
                code = net.sites.code[site]
                problems.append((link_option, f"site {code} has no session with AS{asn}"))
            else:
                down_sessions.update(rows.tolist())
                names.append(f"{net.sites.code[site]}-{asn}")
    for text in sites:
        code = text.strip().upper()
        if code not in net.sites.code:
            problems.append((site_option, f"unknown site {text!r}"))
            continue
        s = net.sites.index(code)
        down_sites.add(s)
        down_sessions.update(np.flatnonzero(ses.site == s).tolist())
        names.append(code)
    if problems:
        raise FaultError(problems)
    return Faults(
        links=tuple(sorted(down_links)),
        sessions=tuple(sorted(down_sessions)),
        sites=tuple(sorted(down_sites)),
        names=tuple(dict.fromkeys(names)),
    )
