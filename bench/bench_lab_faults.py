"""Benchmark: what each fault costs the lab's clients, and how fast ``lab heal`` mends it.

The three-site lab (``tests/data/lab3.yaml``) comes up; first the baseline: the
convergence of a plain withdrawal at AKL, timed as ``anyedge lab failover`` times it.
Then each fault in turn, while the lab's probe watches from the clients it touches
(one datagram every 10 ms, one flow each): the fault is made (``anyedge.lab.faults``),
left for ``--dwell`` seconds, and healed (``anyedge.lab.heal``).  Printed per fault:
the probes lost while it lasted, where the client moved and when, how long ``heal``
took, when the client was answered again and when by its own site after the heal
began — the last also as a ratio to the baseline withdrawal's convergence.

The backbone flap is measured on forwarding: CHC forwards 33 % to AKL; printed, the
share of 300 flows AKL answers before, during and after.

Needs root.  Run: ``python bench/bench_lab_faults.py [--dwell 4]`` (about two
minutes).  Every namespace and process it makes is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anyedge.adapters import nft
from anyedge.lab import build, faults
from anyedge.lab.failover import _wait_started, measure
from anyedge.lab.forward import Forwarder
from anyedge.lab.heal import heal
from anyedge.lab.measure import probe_all, probe_argv
from anyedge.lab.plan import make_plan
from anyedge.model.files import load_world

TOPOLOGY = Path(__file__).resolve().parent.parent / "tests" / "data" / "lab3.yaml"
INTERVAL = 0.01


def watch(
    plan: Any, client: str, make: Callable[[], None], mend: Callable[[], float], dwell: float
) -> dict[str, Any]:
    argv = [*probe_argv(plan, client, "watch"), "--interval", str(INTERVAL)]
    p = subprocess.Popen(
        [*argv, "--duration", str(dwell + 12)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_started(client, p)
        time.sleep(1.0)
        t_fault = time.time()
        make()
        time.sleep(dwell)
        t_heal = time.time()
        took = mend()
        w = json.loads(p.communicate(timeout=60)[0])
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    line = [(w["start"] + float(t), who) for t, who in w["timeline"]]
    during = [(t, who) for t, who in line if t_fault <= t < t_heal]
    after = [(t, who) for t, who in line if t >= t_heal]
    lost_during = sum(1 for _, who in during if who is None)
    gaps = [t for t, who in during if who is None]
    served_again = next(
        (t - t_fault for t, who in during if who and (not gaps or t > gaps[-1])), None
    )
    home = next((who for t, who in reversed(line) if t < t_fault and who), None)
    moved = next(((t, who) for t, who in during if who and who != home), None)
    home_again = next((t for t, who in after if who == home), None)
    missing_after = [t for t, who in after if who is None]
    back = (missing_after[-1] + INTERVAL - t_heal) if missing_after else 0.0
    return {
        "client": client,
        "lost during the fault": lost_during,
        "served again in the fault (s)": None
        if served_again is None or not gaps
        else round(served_again, 2),
        "answered by during": sorted({who for _, who in during if who}),
        "moved to": None if moved is None else moved[1],
        "moved after (s)": None if moved is None else round(moved[0] - t_fault, 2),
        "heal took (s)": round(took, 2),
        "home again after heal began (s)": None
        if home_again is None
        else round(home_again - t_heal, 2),
        "back after heal began (s)": round(back, 2),
        "answered by at the end": line[-1][1],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dwell", type=float, default=4.0, help="seconds each fault lasts")
    args = ap.parse_args()
    name = "ftb" + secrets.token_hex(2)
    world = load_world(TOPOLOGY)
    plan = make_plan(world, name)
    d = Path(tempfile.mkdtemp(prefix="anyedge-bench-"))
    os.chmod(d, 0o755)
    try:
        build.up(world, plan, d)
        base = next(m for m in measure(plan, d, "AKL", interval=INTERVAL) if m.client == "c2")
        print(
            f"baseline: AKL withdrawn, c2 moved to {base.moved_to} in {base.seconds:.2f} s, "
            f"{base.lost} probes lost"
        )

        def healed() -> float:
            t0 = time.monotonic()
            heal(plan, d)
            return time.monotonic() - t0

        cases = [
            ("kill -9 isp1's bgpd (c1's only ISP)", "c1", lambda: faults.kill(plan, d, "isp1")),
            ("kill -9 CHC's FRR bgpd", "c1", lambda: faults.kill(plan, d, "chc")),
            ("kill -9 AKL's BIRD", "c2", lambda: faults.kill(plan, d, "akl")),
            (
                "link isp2-akl down (AKL's transit)",
                "c2",
                lambda: faults.link_down(plan, d, "isp2", "akl"),
            ),
            ("partition AKL (tcp/179 dropped)", "c2", lambda: faults.partition(plan, d, "AKL")),
        ]
        for what, client, make in cases:
            r = watch(plan, client, make, healed, args.dwell)
            home = r["home again after heal began (s)"]
            ratio = home / base.seconds if base.seconds and home is not None else float("nan")
            print(
                f"{what}: {json.dumps(r)}; "
                f"home again after heal / withdrawal convergence = {ratio:.1f}"
            )
        fwd = Forwarder(plan, d)
        fwd.set("CHC", [nft.Share(p, "AKL", 0.33) for p in plan.ports])
        share = lambda: probe_all(plan, ["c1"], flows=300)["c1"]["answers"].get("AKL", 0) / 300  # noqa: E731
        before = share()
        faults.link_down(plan, d, "chc", "akl")
        during = share()
        faults.link_up(plan, d, "chc", "akl")
        after = share()
        print(
            f"backbone chc-akl flap, 33 % recorded: AKL answered {100 * before:.1f} % before, "
            f"{100 * during:.1f} % while down, {100 * after:.1f} % after link-up"
        )
    finally:
        build.down(d, name)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
