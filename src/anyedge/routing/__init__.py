"""BGP anycast routing: catchments from Gao-Rexford propagation over the model's AS graph.

Start with :class:`Router` (in :mod:`.catchment`): ``Router(world).catchment()`` says
which site every AS and every user reaches when every site announces; pass an
:class:`Announcement` to withdraw, prepend or scope announcements per site, and
:class:`Faults` (``Router(world, faults=resolve(world, ["64501-64502"], ["SYD"]))``) for
links down and sites whose sessions are lost.  For a bare
CAIDA graph with origin ASes, see :func:`propagate` and :meth:`Seeds.origins`.
"""

from .announce import Announcement, Rank, Scope, Seeds
from .catchment import Catchment, Mode, Router, longest_match, prefix_for
from .faults import FaultError, Faults, resolve
from .graph import RoutingGraph
from .propagate import RouteState, propagate, update, withdraw

__all__ = [
    "Announcement",
    "Catchment",
    "FaultError",
    "Faults",
    "Mode",
    "Rank",
    "RouteState",
    "Router",
    "RoutingGraph",
    "Scope",
    "Seeds",
    "longest_match",
    "prefix_for",
    "propagate",
    "resolve",
    "update",
    "withdraw",
]
