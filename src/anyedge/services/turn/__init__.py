"""The TURN relay as a service: ``anyedge turn serve --config turn.yaml``.

:mod:`.config` reads and checks the YAML file (listeners, relay addresses and this
site's slice of the relay ports, credentials, limits); :mod:`.io` runs the sans-IO core
(:class:`anyedge.proto.turn.TurnServer`) on asyncio — UDP, TCP and TLS listeners, one
UDP socket per relayed address — and :mod:`.metrics` exports its counters to
Prometheus; :mod:`.workers` runs one such process per core on the same ports
(``SO_REUSEPORT``), each with its own share of the relay ports.
"""
