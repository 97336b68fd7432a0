"""The network model: anyedge's sites and prefixes, and the Internet around them.

Arrays inside, names at the edges: every table is a frozen dataclass of aligned numpy
arrays indexed by row (:mod:`.table`); IATA codes, ASNs and CIDR strings are looked up
once, at the edges, by ``index`` methods.
"""

from .backbone import FIBRE_KM_PER_MS, Backbone, BackboneLinks, Origins
from .geo import LatencyModel, great_circle_km
from .internet import AS_KIND_NAMES, ASKind, Eyeballs, Internet, Metros, ProviderLoopError
from .lab import Lab, LabLink, LabNode, NodeKind, Relation, Speaker
from .network import (
    DEFAULT_THRESHOLDS,
    THRESHOLD_NAMES,
    Network,
    Prefixes,
    Sections,
    SessionKind,
    Sessions,
    SiteKind,
    Sites,
)
from .plans import DEFAULT_PLANS, PLAN_NAMES, Plans
from .world import World

__all__ = [
    "AS_KIND_NAMES",
    "DEFAULT_PLANS",
    "DEFAULT_THRESHOLDS",
    "FIBRE_KM_PER_MS",
    "PLAN_NAMES",
    "THRESHOLD_NAMES",
    "ASKind",
    "Backbone",
    "BackboneLinks",
    "Eyeballs",
    "Internet",
    "Lab",
    "LabLink",
    "LabNode",
    "LatencyModel",
    "Metros",
    "Network",
    "NodeKind",
    "Origins",
    "Plans",
    "Prefixes",
    "ProviderLoopError",
    "Relation",
    "Sections",
    "SessionKind",
    "Sessions",
    "SiteKind",
    "Sites",
    "Speaker",
    "World",
    "great_circle_km",
]
