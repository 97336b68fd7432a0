"""Benchmark: the backbone lab with SRv6 under a cut — how fast Argo and Orpheus move,
and what the requests see, against an oracle that always knows the best path.

Builds :class:`anyedge.lab.backbone.BackboneLab` (three sites, two providers, an origin,
delay lines on the backbone) and runs :mod:`anyedge.lab.srcontrol` on it.  Printed:

1. each path's round trip: what the delay lines ask for, the median and p99 measured
   through the head end and the kernel's SRH input, and the overhead;
2. a slower link (a–b ×3): seconds and probe rounds from the cut to the new path, and
   the median round trip of the requests during the cut over the oracle's (the
   baseline, measured alternating with them), as a ratio;
3. a dead link (a–b 100 % loss): seconds to the new path and failed requests during the
   outage with Orpheus, then with Argo alone.

Needs root.  Run: ``python bench/bench_backbone_lab.py [--seconds 5]`` (under a minute).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

from anyedge.adapters import netns
from anyedge.lab.backbone import DELAYS, ECHO_PORT, ORIGIN, PATHS, BackboneLab, oracle, path_rtt
from anyedge.lab.delayline import Shape
from anyedge.lab.srcontrol import Client, Controller


def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[98]


def path_rtts(lab: BackboneLab, count: int) -> None:
    print("path | asked RTT | median RTT |  p99 RTT | overhead")
    for p in PATHS:
        with netns.entered(lab.ns("a")):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((p.source, 0))
        s.settimeout(1.0)
        out = []
        for i in range(count + 3):
            t0 = time.perf_counter()
            s.sendto(i.to_bytes(4, "big"), (ORIGIN, ECHO_PORT))
            try:
                while s.recv(64) != i.to_bytes(4, "big"):
                    pass
            except TimeoutError:
                continue
            if i >= 3:
                out.append((time.perf_counter() - t0) * 1e3)
        s.close()
        asked, med = path_rtt(p, DELAYS), statistics.median(out)
        print(
            f"{p.name:>4} | {asked:6.1f} ms | {med:7.2f} ms | {p99(out):6.2f} ms"
            f" | {med - asked:5.2f} ms"
        )


def scenario(lab: BackboneLab, orpheus: bool, shape: Shape, seconds: float) -> None:
    lab.delays = dict(DELAYS)
    for link, d in DELAYS.items():
        lab.shape(link, Shape(delay_ms=d))
    lab.install(oracle(lab.delays))
    ctl = Controller(lab, orpheus_on=orpheus)
    ctl.start()
    cli = Client(lab, ctl)
    try:
        time.sleep(1.0)
        n = len(ctl.events)
        lab.delays[("a", "b")] = shape.delay_ms
        at, at_round = time.monotonic(), ctl.rounds
        lab.shape(("a", "b"), shape)
        ours, best = [], []
        end = at + seconds
        while time.monotonic() < end:
            ours.append(cli.request())
            if not shape.loss:
                best.append(cli.along(oracle(lab.delays).name))
        moved = ctl.events[n:]
        who = "Argo and Orpheus" if orpheus else "Argo alone"
        if moved:
            r, t, path, why = moved[0]
            print(
                f"  {who}: to {path} ({why}) {t - at:.3f} s and {r - at_round} probe rounds"
                f" after the cut (interval {ctl.interval} s)"
            )
        else:
            print(f"  {who}: stayed on {ctl.installed}")
        failed = sum(not r.ok for r in ours)
        print(
            f"  requests during the cut: {len(ours)}, failed {failed}"
            f" ({100 * failed / len(ours):.2f} %), retried {sum(r.retried for r in ours)}"
        )
        if best:
            m_ours = statistics.median(r.rtt_ms for r in ours if r.ok)
            m_best = statistics.median(r.rtt_ms for r in best if r.ok)
            print(
                f"  median RTT {m_ours:.2f} ms against the oracle's {m_best:.2f} ms:"
                f" x{m_ours / m_best:.3f}"
            )
    finally:
        cli.close()
        ctl.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each cut")
    ap.add_argument("--count", type=int, default=200, help="round trips per path")
    args = ap.parse_args()
    lab = BackboneLab(f"aes6b{os.getpid()}", Path(tempfile.mkdtemp(prefix="anyedge-bench-s6-")))
    lab.up()
    try:
        path_rtts(lab, args.count)
        print(f"a-b one way {DELAYS[('a', 'b')]} -> {3 * DELAYS[('a', 'b')]} ms:")
        scenario(lab, True, Shape(delay_ms=3 * DELAYS[("a", "b")]), args.seconds)
        print("a-b loses every frame:")
        for orpheus in (True, False):
            scenario(lab, orpheus, Shape(delay_ms=DELAYS[("a", "b")], loss=1.0), args.seconds)
    finally:
        lab.down()
        for f in lab.workdir.iterdir():
            f.unlink()
        lab.workdir.rmdir()


if __name__ == "__main__":
    main()
