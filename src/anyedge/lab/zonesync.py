"""The zone through the configuration store: one writer, a replica at every site.

An anycast DNS service must serve the same zone at every site.  With
:mod:`anyedge.store`, the zone is one key (``dns/zones/<zone>``, the zone file's text)
put by the store's one writer (:func:`publish`); every site has its own replica and a
:class:`ZoneSync` watching that key: on every change it writes the site's zone file
(``nodes/NODE/knot/zone.txt``) and has the site's ``knotd`` reload it (``knotc -b
zone-reload``, over the control socket in the node's directory), so the new serial is
served as soon as the replica has it.  Knot loads a zone file only when its SOA serial
grew, so each published version needs a higher serial (:func:`anyedge.lab.dns.zone_text`
takes one).

The replicas run beside the lab (the store's fan-out is on 127.0.0.1 of the machine);
they reach each site's server through its control socket, a file, not the network.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

from ..store.api import Replica, Writer
from .build import LabError
from .dns import ZONE, knot_dir
from .plan import NodePlan

PREFIX = "dns/zones/"


def key(zone: str = ZONE) -> str:
    return PREFIX + zone


def publish(writer: Writer, text: str, zone: str = ZONE) -> int:
    """Put the zone's text in the store; its sequence number."""
    return writer.put(key(zone), text.encode())


class ZoneSync:
    """Keep one site's zone file equal to the store's, reloading its Knot on change."""

    def __init__(self, replica: Replica, node: NodePlan, directory: Path, zone: str = ZONE) -> None:
        self.replica, self.node, self.zone = replica, node, zone
        self.dir = knot_dir(directory, node)
        self.applied = 0  # the replica's sequence number when the zone was last loaded
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._watch = replica.watch(key(zone), callback=lambda _batch: self.apply())
        self.apply()  # what the replica holds already

    def apply(self) -> None:
        with self._lock:
            seq = self.replica.seq
            data = self.replica.get(key(self.zone))
            if data is None:
                return
            path = self.dir / "zone.txt"
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
                argv = ["knotc", "-c", str(self.dir / "knot.conf"), "-b", "zone-reload", self.zone]
                p = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
                if p.returncode != 0:
                    self.errors.append(f"{self.node.site}: knotc: {(p.stderr or p.stdout).strip()}")
                    return
            self.applied = seq

    def close(self) -> None:
        self._watch.close()


def follow(
    replicas: dict[str, Replica], nodes: list[NodePlan], directory: Path, zone: str = ZONE
) -> dict[str, ZoneSync]:
    """A :class:`ZoneSync` for every site in ``nodes``, each on its own replica (by site
    code)."""
    missing = [str(n.site) for n in nodes if str(n.site) not in replicas]
    if missing:
        raise LabError(f"no replica for {', '.join(missing)}")
    return {str(n.site): ZoneSync(replicas[str(n.site)], n, directory, zone) for n in nodes}


def wait_applied(syncs: dict[str, ZoneSync], seq: int, timeout: float = 10.0) -> None:
    """Wait until every site has loaded the zone of ``seq`` (or later)."""
    import time

    end = time.monotonic() + timeout
    while True:
        errors: list[Any] = [e for s in syncs.values() for e in s.errors]
        if errors:
            raise LabError("; ".join(errors))
        behind = [c for c, s in syncs.items() if s.applied < seq]
        if not behind:
            return
        if time.monotonic() > end:
            raise LabError(f"the zone of #{seq} not loaded at {', '.join(behind)}")
        time.sleep(0.02)
