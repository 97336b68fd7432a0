"""Reading a running relay's sessions: what ``anyedge turn sessions`` asks.

Each worker of ``anyedge turn serve`` serves its own allocations as JSON on its metrics
port (``metrics.port + worker``, path ``/sessions``; :mod:`.metrics`).  The CLI reads
the same configuration file as the relay, asks every worker in turn and merges the
lists, each session tagged with its worker.  A relay without ``metrics.port`` has no
sessions view.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from .config import ServiceConfig

TIMEOUT = 5.0


class Unreachable(Exception):
    """A worker did not answer (the relay is not running, or not on these ports)."""


def session_urls(config: ServiceConfig) -> list[str]:
    """Every worker's ``/sessions`` URL; [] without ``metrics.port``."""
    m = config.doc.metrics
    if m.port is None:
        return []
    host = f"[{m.address}]" if ":" in m.address else m.address
    return [f"http://{host}:{m.port + w}/sessions" for w in range(config.workers)]


def gather(config: ServiceConfig, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """Every worker's sessions, each with its ``worker``, oldest first."""
    out: list[dict[str, Any]] = []
    for url in session_urls(config):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                doc = json.load(r)
        except (OSError, ValueError) as e:
            raise Unreachable(f"{url}: {e}") from None
        for s in doc["sessions"]:
            out.append({"worker": doc["worker"], **s})
    out.sort(key=lambda s: -float(s["age_s"]))
    return out


def table(sessions: list[dict[str, Any]]) -> str:
    """The sessions as a text table, one allocation a line, and a total."""
    head = ("worker", "client", "user", "relayed", "left", "perms", "chans", "to peer", "to client")
    rows = [head]
    for s in sessions:
        tp, tc = s["to_peer"], s["to_client"]
        rows.append(
            (
                str(s["worker"]),
                f"{s['transport']} {s['client']}",
                s["username"],
                " ".join(s["relayed"]),
                f"{s['lifetime_left_s']:.0f}s",
                str(len(s["permissions"])),
                str(len(s["channels"])),
                f"{tp['packets']} pkt {tp['bytes']} B",
                f"{tc['packets']} pkt {tc['bytes']} B",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append(f"{len(sessions)} allocation{'s' if len(sessions) != 1 else ''}")
    return "\n".join(lines)
