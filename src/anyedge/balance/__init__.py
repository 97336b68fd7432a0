"""The load balancer's control plane (Unimog, in the traffic manager and BPF edge posts):
bucket tables that send each flow to a server, and keep established connections alive
when servers come, go or change weight.

Data flow: servers' weights and states (:class:`Table`, weights set from measured CPU by
:func:`weights_from_cpu`) → a table of 2¹⁶ buckets, each naming a first hop (takes new
flows) and a second hop (had the bucket before it last moved) → the data plane hashes a
packet's 5-tuple (:func:`flow_hash`), takes the hash's low bits as the bucket and gives
the packet to the first hop, or the second when the first has no connection for it.
Every change returns a new table that moves the fewest buckets.  Pure and array-based;
no I/O.  :mod:`anyedge.balance.maglev` is Maglev's table, for comparison.
"""

from .flowhash import flow_hash, fold6, jhash_3words
from .table import DEFAULT_BUCKETS, NONE, ServerState, Table, apportion, bucket_order
from .weights import weights_from_cpu

__all__ = [
    "DEFAULT_BUCKETS",
    "NONE",
    "ServerState",
    "Table",
    "apportion",
    "bucket_order",
    "flow_hash",
    "fold6",
    "jhash_3words",
    "weights_from_cpu",
]
