"""The TURN relay's core (RFC 8656), sans-IO: the state machine an anycast site runs.

A client behind a NAT asks the server for an *allocation*: a relayed transport address
(an IPv4 and/or IPv6 UDP port on the relay) that peers can send to.  It then installs
*permissions* (peer IPs allowed to send back) and optionally *channels* (2-byte numbers
standing for a peer address, so each relayed packet costs 4 bytes of header instead of
36).  The parts, and how data flows between them:

- :mod:`.server` -- :class:`TurnServer`: ``receive`` (client -> server),
  ``receive_from_peer`` (peer -> relay), ``tick`` and ``next_deadline`` (time),
  ``connection_lost``; each returns a list of :mod:`.outputs` for the IO layer;
- :mod:`.outputs` -- ``ToClient``, ``ToPeer``, ``OpenRelay``, ``CloseRelay``;
- :mod:`.ports` -- :class:`RelayPorts`, the allocator of relayed addresses the server
  is given; :class:`PortRange` hands out random ports from a site's slice of the
  range (:func:`port_slice`), since an anycast relay address is shared by every site;
- :mod:`.auth` -- long-term and TURN REST credentials, and stateless fleet-wide nonces
  that any site verifies;
- :mod:`.policy` -- the peer addresses a relay refuses, and token buckets;
- :mod:`.allocation` -- the per-allocation state the per-packet paths look up;
- :mod:`.config` -- :class:`TurnConfig` (limits, lifetimes) and :class:`Counters`.

A minimal IO loop::

    server = TurnServer(TurnConfig(), Credentials("example.org", (fleet_key,), users),
                        PortRange("198.51.100.7", None, 49152, 65535), time.time())
    for out in server.receive(time.time(), "udp", client, listen, datagram):
        ...  # ToClient: sendto; ToPeer: relay socket sendto; OpenRelay: bind; CloseRelay
"""

from .auth import Credentials, rest_password, rest_username
from .config import Counters, TurnConfig
from .outputs import CloseRelay, OpenRelay, Output, ToClient, ToPeer
from .policy import PeerPolicy
from .ports import PortRange, RelayPorts, port_slice, slice_owner
from .server import Drain, TurnServer

__all__ = [
    "CloseRelay",
    "Counters",
    "Credentials",
    "Drain",
    "OpenRelay",
    "Output",
    "PeerPolicy",
    "PortRange",
    "RelayPorts",
    "ToClient",
    "ToPeer",
    "TurnConfig",
    "TurnServer",
    "port_slice",
    "rest_password",
    "rest_username",
    "slice_owner",
]
