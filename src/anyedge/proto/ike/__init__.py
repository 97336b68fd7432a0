"""IKEv2 (RFC 7296), sans-IO: the responder an anycast IPsec edge runs.

A customer's IPsec peer initiates; every edge server can answer.  The parts, and how
data flows between them:

- :mod:`.codec` -- the message header and payloads, ``encode_message`` /
  ``decode_message``; every malformed input raises :class:`IkeDecodeError`;
- :mod:`.crypto` -- prf and prf+, SKEYSEED and the SK_* keys, Child SA keys, DH groups
  19 and 31, the AES-GCM SK payload (RFC 5282), PSK AUTH;
- :mod:`.responder` -- :class:`Responder`: ``receive(now, data, peer, local)``,
  ``tick(now)``, ``next_deadline()``; returns :mod:`.outputs`;
- :mod:`.outputs` -- ``Send``, ``ChildUp``, ``ChildDown``, ``IkeDown``, ``IkeUpdate``
  and :class:`ChildSA`: the records the edge distributes to every server;
- :mod:`.initiator` -- a minimal initiator for tests and benchmarks.

A minimal IO loop::

    responder = Responder(ResponderConfig(psks, local_id, local_ts, remote_ts), time.time())
    for out in responder.receive(time.time(), datagram, peer, local):
        ...  # Send: sendto; ChildUp: install in the ESP endpoint; ChildDown: remove
"""

from .codec import IkeDecodeError, Selector, decode_message, encode_message
from .outputs import ChildDown, ChildSA, ChildUp, IkeDown, IkeUpdate, Output, Send
from .responder import Counters, Responder, ResponderConfig

__all__ = [
    "ChildDown",
    "ChildSA",
    "ChildUp",
    "Counters",
    "IkeDecodeError",
    "IkeDown",
    "IkeUpdate",
    "Output",
    "Responder",
    "ResponderConfig",
    "Selector",
    "Send",
    "decode_message",
    "encode_message",
]
