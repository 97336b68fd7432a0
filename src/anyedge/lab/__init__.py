"""The anycast lab: real BGP daemons and real packets in network namespaces.

:mod:`.plan` decides everything (addresses, sessions, router ids, return paths) from a
topology's ``lab`` part; :mod:`.build` carries a plan out and tears it down, keeping what
it made in a lab directory; :mod:`.service` and :mod:`.probe` are the sites' service and
the clients' probes; :mod:`.compare` sets the routing model against what probes measure.
"""
