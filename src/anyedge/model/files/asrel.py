"""CAIDA serial-2 AS relationship files (``as-rel``).

One relation a line, ``|``-separated: ``provider|customer|-1`` or ``peer|peer|0``, with
an optional fourth field naming the source (``bgp``, ``mlp``) that BGPy's reader wants;
lines starting with ``#`` are comments.  Real CAIDA snapshots load as they are.

Reading checks every line and reports all malformed ones with their line numbers, then
checks the relation set: no AS related to itself, no pair listed twice, and no provider
loop (customer → provider edges that come back round), which no real hierarchy has.
"""

from __future__ import annotations

import bz2
import gzip
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import InputError, Problem
from ..internet import Eyeballs, Internet, Metros, ProviderLoopError
from ..table import IntArray
from .atomic import write_all
from .text import read_text

MAX_ASN = 2**32 - 1


@dataclass(frozen=True)
class AsRel:
    """Relations as ASN pairs, with the line each came from (for error messages)."""

    p2c: IntArray  # (E, 2) provider ASN, customer ASN
    p2p: IntArray  # (P, 2)
    p2c_lines: IntArray
    p2p_lines: IntArray

    @property
    def asns(self) -> IntArray:
        return np.unique(np.concatenate([self.p2c.ravel(), self.p2p.ravel()]))

    def line_of(self, a: int, b: int) -> int | None:
        """Line of the relation between ASNs ``a`` and ``b`` (either order), if any."""
        for pairs, lines in ((self.p2c, self.p2c_lines), (self.p2p, self.p2p_lines)):
            hit = ((pairs[:, 0] == a) & (pairs[:, 1] == b)) | (
                (pairs[:, 0] == b) & (pairs[:, 1] == a)
            )
            if hit.any():
                return int(lines[np.argmax(hit)])
        return None


def bare_internet(rel: AsRel, file: str | Path | None = None) -> Internet:
    """An Internet of just these relations (no metros, no demand), loop-checked.

    A provider loop is reported against ``file`` at the line of one of its links.
    """
    asn = rel.asns
    p2c = np.searchsorted(asn, rel.p2c).reshape(-1, 2)
    p2p = np.sort(np.searchsorted(asn, rel.p2p).reshape(-1, 2), axis=1)
    o1 = np.lexsort((p2c[:, 1], p2c[:, 0]))
    o2 = np.lexsort((p2p[:, 1], p2p[:, 0]))
    pairs = np.zeros((0, 2), dtype=np.int32)
    inet = Internet(
        asn=asn,
        kind=np.zeros(asn.size, dtype=np.int8),
        name=("",) * asn.size,
        country=("",) * asn.size,
        p2c=p2c[o1],
        p2p=p2p[o2],
        metros=Metros.empty(),
        presence=pairs,
        eyeballs=Eyeballs.empty(4),
    )
    try:
        inet.provider_levels()
    except ProviderLoopError as e:
        raise InputError.one(file, "", str(e), rel.line_of(e.cycle[0], e.cycle[1])) from None
    return inet


def parse_as_rel(
    lines: Iterable[str],
    file: str | Path | None = None,
    first_line: int = 1,
    name: Callable[[int], str] = "line {}".format,
) -> AsRel:
    """Parse as-rel text; raise :class:`InputError` naming every bad line.

    ``name`` says how a line is called in messages that refer to another line
    (``relations[3]`` for relations given inline in a topology).
    """
    p2c: list[tuple[int, int]] = []
    p2p: list[tuple[int, int]] = []
    p2c_ln: list[int] = []
    p2p_ln: list[int] = []
    problems: list[Problem] = []
    seen: dict[tuple[int, int], int] = {}
    for ln, raw in enumerate(lines, start=first_line):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split("|")
        if len(fields) not in (3, 4):
            problems.append(
                Problem("", f"expected 'a|b|rel' or 'a|b|rel|source', got {line!r}", ln)
            )
            continue
        try:
            a, b, rel = int(fields[0]), int(fields[1]), int(fields[2])
        except ValueError:
            problems.append(Problem("", f"ASNs and relation must be integers, got {line!r}", ln))
            continue
        if not (0 < a <= MAX_ASN and 0 < b <= MAX_ASN):
            problems.append(Problem("", f"ASN out of range 1..{MAX_ASN} in {line!r}", ln))
            continue
        if rel not in (-1, 0):
            problems.append(
                Problem("", f"relation must be -1 (provider|customer) or 0 (peers), got {rel}", ln)
            )
            continue
        if a == b:
            problems.append(Problem("", f"AS{a} is related to itself", ln))
            continue
        key = (min(a, b), max(a, b))
        if key in seen:
            problems.append(
                Problem("", f"AS{a} and AS{b} are already related on {name(seen[key])}", ln)
            )
            continue
        seen[key] = ln
        if rel == -1:
            p2c.append((a, b))
            p2c_ln.append(ln)
        else:
            p2p.append(key)
            p2p_ln.append(ln)
        if len(problems) > 100:
            break
    if problems:
        raise InputError(file, problems)
    return AsRel(
        p2c=np.array(p2c, dtype=np.int64).reshape(-1, 2),
        p2p=np.array(p2p, dtype=np.int64).reshape(-1, 2),
        p2c_lines=np.array(p2c_ln, dtype=np.int64),
        p2p_lines=np.array(p2p_ln, dtype=np.int64),
    )


def read_as_rel(path: str | Path) -> AsRel:
    """Read an as-rel file; ``.bz2`` and ``.gz`` (as CAIDA publishes them) are unpacked."""
    path = Path(path)
    if path.suffix in (".bz2", ".gz"):
        opener = bz2.open if path.suffix == ".bz2" else gzip.open
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                return parse_as_rel(f.read().splitlines(), file=path)
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise InputError.one(path, "", f"cannot read: {e}") from None
    return parse_as_rel(read_text(path).splitlines(), file=path)


def format_as_rel(internet: Internet, source: str | None = None) -> str:
    """The Internet's relations as as-rel text, providers' lines first, sorted by ASN."""
    asn = internet.asn
    tail = f"|{source}" if source else ""
    out = [
        "# anyedge as-rel (CAIDA serial-2): provider|customer|-1 and peer|peer|0",
        f"# {len(internet)} ASes, {len(internet.p2c)} provider-customer and "
        f"{len(internet.p2p)} peer links",
    ]
    for rel, pairs in ((-1, internet.p2c), (0, internet.p2p)):
        a = asn[pairs[:, 0]]
        b = asn[pairs[:, 1]]
        order = np.lexsort((b, a))
        out.extend(f"{x}|{y}|{rel}{tail}" for x, y in zip(a[order], b[order], strict=True))
    return "\n".join(out) + "\n"


def write_as_rel(path: str | Path, internet: Internet, source: str | None = None) -> None:
    """Write atomically: the file is either the old one or the whole new one."""
    write_all({Path(path): format_as_rel(internet, source)})
