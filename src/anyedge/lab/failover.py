"""How long clients take to move when a site withdraws: measured, not modelled.

:func:`measure` picks the clients a site serves, starts a fast probe on one flow from
each (``probe watch``: one datagram every ``interval``), withdraws the site's prefixes
through its real BGP speaker, and reads back from each client's timeline when the first
answer came from another site, how long after the withdrawal that was, and how many
probes went unanswered.  The site then announces again and the lab settles before the
next measurement.
"""

from __future__ import annotations

import json
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .build import LabError
from .measure import Announcer, dominant, probe_all, probe_argv
from .plan import LabPlan
from .probe import WATCHING


@dataclass(frozen=True)
class Failover:
    site: str
    speaker: str
    client: str
    moved_to: str | None  # the site answering after the withdrawal (None: nobody)
    seconds: float | None  # withdrawal to the first answer from moved_to
    lost: int  # probes unanswered during the run
    sent: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def measure(
    plan: LabPlan,
    directory: Path,
    site: str,
    interval: float = 0.01,
    watch: float = 6.0,
    lead: float = 1.0,
) -> list[Failover]:
    """Withdraw ``site`` and time how its clients move (then announce it again)."""
    node = plan.site_node(site)
    ann = Announcer(plan, directory)
    restore = ann.routes(site)
    before = probe_all(plan, flows=8)
    clients = [c for c, r in before.items() if dominant(r) == site]
    if not clients:
        raise LabError(f"no client reaches {site} now: nothing to measure")
    procs: dict[str, subprocess.Popen[str]] = {}
    out = []
    try:
        for c in clients:
            argv = probe_argv(plan, c, "watch")
            argv += ["--interval", str(interval), "--duration", str(watch)]
            procs[c] = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        for c, p in procs.items():  # each watch is sending before the lead is counted
            _wait_started(c, p)
        time.sleep(lead)
        t_withdraw = time.time()
        ann.withdraw(site)
        for c, p in procs.items():
            stdout, stderr = p.communicate(timeout=watch + 30)
            if p.returncode != 0:
                raise LabError(f"watch from {c} failed: {stderr.strip()[-300:]}")
            out.append(_read(site, str(node.speaker), c, json.loads(stdout), t_withdraw))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.communicate()
        ann.set(site, restore)
        ann.settle()
    return out


def _wait_started(client: str, p: subprocess.Popen[str], timeout: float = 30.0) -> None:
    """Until the watch from ``client`` says its datagrams are going out: on a busy machine
    starting it can take longer than the lead, and it would see no answer before the
    withdrawal to time from."""
    assert p.stderr is not None
    ready, _, _ = select.select([p.stderr], [], [], timeout)
    line = p.stderr.readline() if ready else ""
    if line.strip() != WATCHING:
        raise LabError(f"watch from {client} did not start: {line.strip()[-300:] or 'no output'}")


def _read(site: str, speaker: str, client: str, w: dict[str, Any], t0: float) -> Failover:
    """Where the client ended up after the withdrawal at ``t0``, and when it got there
    (the first answer from that site after the last change of site)."""
    start = float(w["start"])
    timeline = [(start + float(t), who) for t, who in w["timeline"]]
    if not any(who == site and t < t0 for t, who in timeline):
        raise LabError(f"{client}: no answer from {site} before the withdrawal to time from")
    after = [(t, who) for t, who in timeline if t >= t0 and who is not None]
    lost = sum(1 for _, who in timeline if who is None)
    if not after or after[-1][1] == site:
        return Failover(site, speaker, client, None, None, lost, len(timeline))
    final = after[-1][1]
    arrived = after[-1][0]
    for t, who in reversed(after):
        if who != final:
            break
        arrived = t
    return Failover(site, speaker, client, final, arrived - t0, lost, len(timeline))
