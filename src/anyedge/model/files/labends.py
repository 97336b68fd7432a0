"""Interface names for the lab's links: the ones the file gives, and the ones it leaves out.

A link's endpoint is ``"node:interface"`` (containerlab's form) or just ``"node"``; a
node left without an interface name gets one here, so that a topology can say
``endpoints: ["isp1", "chc"]``.  The rule depends only on where the link stands among
the node's own links, in the order of the file: the node's *k*-th link is ``eth<k>``
(its first link ``eth1``).  So naming one interface never renames another, and a file
that writes every name the rule would give (as ``tests/data/lab3.yaml`` does) reads the
same with the names left out.

A name given by hand that is the name another of the node's links gets from the rule
is a clash, reported at the endpoint that gives it (two hand-given names alike are
caught by the topology's check that each endpoint is used once).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .yamlpos import Loc

End = tuple[str, str]  # (node, interface)


def _split(endpoint: str) -> tuple[str, str | None]:
    node, _, iface = endpoint.partition(":")
    return node, iface or None


def _generated(endpoints: Sequence[Sequence[str]]) -> dict[tuple[int, int], End]:
    """(link, end) -> its generated name, for every endpoint that names no interface."""
    count: dict[str, int] = {}
    out: dict[tuple[int, int], End] = {}
    for i, ends in enumerate(endpoints):
        for j, e in enumerate(ends):
            node, iface = _split(e)
            count[node] = count.get(node, 0) + 1
            if iface is None:
                out[(i, j)] = (node, f"eth{count[node]}")
    return out


def resolve(endpoints: Sequence[Sequence[str]]) -> list[tuple[End, End]]:
    """Every link's two ends as (node, interface), generated names filled in."""
    gen = _generated(endpoints)
    out: list[tuple[End, End]] = []
    for i, ends in enumerate(endpoints):
        pair = [gen.get((i, j)) or (_split(e)[0], str(_split(e)[1])) for j, e in enumerate(ends)]
        out.append((pair[0], pair[1]))
    return out


def clashes(endpoints: Sequence[Sequence[str]]) -> Iterator[tuple[Loc, str]]:
    """Hand-given names that the rule gives to another link of the same node."""
    gen = {end: ij for ij, end in _generated(endpoints).items()}
    for i, ends in enumerate(endpoints):
        for j, e in enumerate(ends):
            node, iface = _split(e)
            if iface is not None and (node, iface) in gen:
                k, _ = gen[(node, iface)]
                yield (
                    ("lab", "links", i, "endpoints", j),
                    (
                        f"{e} is the name links[{k}] gets for {node} (no interface given there: "
                        f"a node's k-th link is eth<k>); name that interface too, or pick "
                        "another name here"
                    ),
                )
