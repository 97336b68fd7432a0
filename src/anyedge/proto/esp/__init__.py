"""ESP in user space (RFC 4303 with AES-GCM, RFC 4106; UDP encapsulation, RFC 3948).

- :mod:`.packet` -- seal and open one packet; tell ESP from IKE on port 4500;
- :mod:`.replay` -- the 64-packet anti-replay window;
- :mod:`.sa` -- :class:`EspEndpoint`: the installed SAs, per-packet ``encrypt`` and
  ``decrypt``, counters, and the per-server partition of outbound sequence numbers.

The IO (a TUN device, a UDP socket on 4500, a raw socket for protocol 50) lives in
:mod:`anyedge.transit.ipsec`.
"""

from .packet import EspError, GcmKey, classify, open_packet, seal
from .replay import ReplayWindow
from .sa import EspCounters, EspEndpoint

__all__ = [
    "EspCounters",
    "EspEndpoint",
    "EspError",
    "GcmKey",
    "ReplayWindow",
    "classify",
    "open_packet",
    "seal",
]
