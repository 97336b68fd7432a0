"""``anyedge lab heal``: bring a lab back to the state it records, whatever broke it.

In order, each step idempotent, so healing a healthy lab changes nothing:

1. every link up, and the routes the kernel deleted with a link put back (a node's
   default route, a site's backbone routing tables: :func:`.faults.links_up`);
2. every partition lifted (the site's nftables fault table removed);
3. every daemon that is not running started again with its configuration — FRR's
   daemons, a site's speaker announcing the routes the state records, a site's service
   (:func:`.faults.start_dead`); a speaker that runs is trusted to announce what the
   state says (every change to it is recorded only once it took it);
4. the fault records cleared;
5. every site's Plurimog forwarding installed again exactly as recorded
   (:meth:`.forward.Forwarder.set`, which puts the backbone routes back first);
6. wait until every BGP session is up and the routes have stopped changing.

What could not be done is raised as one :class:`LabError` that names it and says what
was done before it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..adapters import nft
from .build import LabError, locked, wait_converged
from .faults import REJOIN, apply_nft, links_up, start_dead
from .forward import Forwarder
from .plan import LabPlan


def heal(plan: LabPlan, directory: Path, timeout: float = 60.0) -> dict[str, Any]:
    t0 = time.monotonic()
    done: list[str] = []
    with locked(directory) as state:
        cleared = list(state.faults)
        problems = links_up(plan)
        done.append("links up")
        for n in plan.sites:
            apply_nft(n, REJOIN)
        done.append("partitions lifted")
        started: dict[str, list[str]] = {}
        try:
            for n in plan.nodes:
                if n.bgp_ports:
                    new = start_dead(plan, directory, n, state)
                    if new:
                        started[n.name] = sorted(new)
        finally:
            state.save(directory)  # the pids of what did start
        done.append(f"daemons started: {_started(started)}")
        state.faults = []
        state.save(directory)
        forward = {n.name: list(state.forward.get(n.name, [])) for n in plan.sites if n.backbone}
    fwd = Forwarder(plan, directory)
    for n in plan.sites:
        if n.name in forward:
            shares = [nft.Share(int(p), str(to), float(s)) for p, to, s in forward[n.name]]
            fwd.set(str(n.site), shares)
    done.append("forwarding installed as recorded")
    if problems:
        raise LabError(f"heal: {'; '.join(problems)} (done: {', '.join(done)})")
    try:
        settled = wait_converged(plan, directory, timeout, quiet=1.0)
    except LabError as e:
        raise LabError(f"heal: {e} (done: {', '.join(done)}; faults cleared)") from None
    return {
        "cleared": cleared,
        "started": started,
        "forwarding": forward,
        "seconds": round(time.monotonic() - t0, 2),
        "settled": round(settled, 2),
    }


def _started(started: dict[str, list[str]]) -> str:
    return ", ".join(f"{n} ({', '.join(d)})" for n, d in started.items()) or "none needed"
