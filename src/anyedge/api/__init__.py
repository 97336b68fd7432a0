"""The Traffic Manager as a service: ``anyedge control run``.

:mod:`.config` reads and checks ``controller.yaml``; :mod:`.actuators` builds the
actuator it names (dry-run, the nftables forwarder, the sites' BGP speakers);
:mod:`.service` runs the loop on Prometheus telemetry with the operator's overrides;
:mod:`.http` serves the JSON API, ``/metrics`` and the dashboard (:mod:`.dashboard`).
"""
