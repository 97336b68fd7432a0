"""Magic Transit: customers' prefixes on anycast, their firewalls, anycast GRE and IPsec.

A customer's whole configuration (prefixes, GRE tunnel, firewall rules) is one value in
the replicated store.  Every site's speaker announces the customers' prefixes
(:class:`Announcer`).  On every server an :class:`Applier` watches the store and keeps,
per customer, a network namespace whose nftables table is that firewall, changed in
process with one libnftables transaction per change; a :class:`GreForwarder` carries the
traffic that passed it to the customer's router over GRE in user space (the kernel here
has no GRE module), and the router's packets back.

- :mod:`.config`: the customer models and their place in the store.
- :mod:`.ruleset`: a customer's firewall as one libnftables JSON batch (pure).
- :mod:`.libnft`, :mod:`.nsnft`: libnftables through ctypes; a namespace's nftables from
  any thread (setns on a kept descriptor).
- :mod:`.plumbing`: a customer's namespace, veth, TUN and routes.
- :mod:`.applier`: from the store to every customer's namespace.
- :mod:`.gre`: GRE with keys (RFC 2784, 2890) and anycast GRE's decisions (pure).
- :mod:`.tun`, :mod:`.tunnel`: TUN devices; the forwarder (raw socket + TUNs).
- :mod:`.announce`: every site's BGP speaker announces the customers' prefixes.
- :mod:`.ipsec`, :mod:`.ipsec_store`: anycast IPsec -- one server's IKE and user-space
  ESP endpoint, and the SAs distributed to every server through the store
  (docs/ipsec.md).

See docs/transit.md.
"""

from __future__ import annotations

from .announce import Announcer
from .applier import Applier
from .config import Customer, RateLimit, Rule, Tunnel, put_customer, remove_customer
from .tunnel import GreForwarder

__all__ = [
    "Announcer",
    "Applier",
    "Customer",
    "GreForwarder",
    "RateLimit",
    "Rule",
    "Tunnel",
    "put_customer",
    "remove_customer",
]
