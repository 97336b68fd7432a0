"""BGP anycast routing: catchments from Gao-Rexford propagation over the model's AS graph.

Start with :class:`Router` (in :mod:`.catchment`): ``Router(world).catchment()`` says
which site every AS and every user reaches when every site announces; pass an
:class:`Announcement` to withdraw, prepend or scope announcements per site.  For a bare
CAIDA graph with origin ASes, see :func:`propagate` and :meth:`Seeds.origins`.
"""

from .announce import Announcement, Rank, Scope, Seeds
from .catchment import Catchment, Mode, Router, longest_match, prefix_for
from .graph import RoutingGraph
from .propagate import RouteState, propagate, update, withdraw

__all__ = [
    "Announcement",
    "Catchment",
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
    "update",
    "withdraw",
]
