"""Where a site's users land when it withdraws, as the decision core reads it: the
non-zero entries of the site's row of the atlas's failover shares.

:class:`~.core.Failover` holds a dense (sites, sites) array: ``share[s, r]`` of site
s's traffic lands at site r if s withdraws a prefix.  A row has a few non-zero entries
(the sites BGP moves s's users to), but it is as long as the network, and reading it
whole for every site that considers a withdrawal made a decision's work grow as
overloaded sites × sites.  :func:`row` reads a row once per failover array (by
identity, dropped with the array, as :mod:`.neighbours` keeps its lists): its non-zero
entries' ids (in id order) and shares, and the row's sum as the dense sum gives it, so
the decision's arithmetic is the same to the last bit.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Row:
    """Site s's landing sites: ``ids`` (ascending) with their ``share``; ``total`` is
    the whole row's sum."""

    ids: npt.NDArray[np.intp]
    share: npt.NDArray[np.floating]  # the array's own dtype: the same arithmetic
    total: float


_ROWS: dict[int, dict[int, Row]] = {}  # failover array (by id) -> its rows read so far


def row(share: npt.NDArray[np.floating], s: int) -> Row:
    """Site s's row of ``share``, read once per array."""
    rows = _ROWS.get(id(share))
    if rows is None:
        rows = _ROWS[id(share)] = {}
        weakref.finalize(share, _ROWS.pop, id(share), None)
    got = rows.get(s)
    if got is None:
        r = share[s]
        ids = np.flatnonzero(r)
        got = rows[s] = Row(ids, r[ids], float(r.sum()))
    return got
