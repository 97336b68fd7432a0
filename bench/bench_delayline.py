"""Benchmark: how close a delay line's round trips come to what was configured.

Two namespaces joined by one link, as the lab joins nodes: first a plain veth pair (the
baseline: what a round trip costs with no delay line at all), then a delay line
(:mod:`anyedge.lab.delayline`, two TAP devices and a process between them) configured
with 0, 1, 2, 5 and 10 ms one way.  For each, ``--count`` UDP echoes from one side to a
socket on the other, one at a time; printed: the median and 99th percentile round trip,
what the configuration asks for (twice the one-way delay), and the overhead of the line
over the baseline per direction — the figure to subtract when a lab measurement is read
against a model.  Then jitter (5 ms ± 1 ms one way: the round trip's standard deviation
asked, √2 ms, against the one measured) and loss (10 % one way: 19 % of round trips asked
to fail, against the share that did).

Needs root.  Run: ``python bench/bench_delayline.py [--count 500]`` (under a minute).
Every namespace and process it makes is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from anyedge.adapters import netns
from anyedge.lab.delayline import End, LinkSpec, Shape

SRC = str(Path(__file__).resolve().parent.parent / "src")
A_IP, B_IP = "192.0.2.1", "192.0.2.2"


def round_trips(a: str, b: str, count: int, lost: list[int] | None = None) -> list[float]:
    """``count`` echoes one at a time; with ``lost``, a lost one is counted there."""
    with netns.entered(b):
        echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        echo.bind((B_IP, 7))
    with netns.entered(a):
        cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wait = 0.3 if lost is not None else 2.0
    echo.settimeout(wait)
    cli.settimeout(wait)
    out = []
    try:
        for i in range(count + 5):
            payload = i.to_bytes(4, "big") * 25
            t0 = time.perf_counter()
            cli.sendto(payload, (B_IP, 7))
            try:
                data, peer = echo.recvfrom(2048)
                echo.sendto(data, peer)
                while cli.recv(2048) != payload:
                    pass
            except TimeoutError:
                if lost is None or i < 5:
                    raise
                lost[0] += 1
                continue
            if i >= 5:  # the first few warm ARP and the caches
                out.append((time.perf_counter() - t0) * 1e3)
    finally:
        echo.close()
        cli.close()
    return out


def with_line(
    a: str, b: str, shape: Shape, tmp: Path, count: int, lost: list[int] | None = None
) -> list[float]:
    spec, ready = tmp / "links.json", tmp / "ready.json"
    spec.write_text(json.dumps([LinkSpec(End(a, "eth1"), End(b, "eth1"), shape).to_dict()]))
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "anyedge.lab.delayline", str(spec), "--ready", str(ready)],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.DEVNULL,
    )
    try:
        end = time.monotonic() + 30
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > end:
                raise SystemExit("the delay line did not start")
            time.sleep(0.05)
        netns.batch(a, [f"addr add {A_IP}/24 dev eth1"])
        netns.batch(b, [f"addr add {B_IP}/24 dev eth1"])
        return round_trips(a, b, count, lost)
    finally:
        proc.terminate()
        proc.wait(10)


def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[98]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=500)
    args = ap.parse_args()
    tag = secrets.token_hex(3)
    a, b = f"aebdl-{tag}-a", f"aebdl-{tag}-b"
    tmp = Path(tempfile.mkdtemp(prefix="anyedge-bench-dl-"))
    try:
        for ns in (a, b):
            netns.add(ns)
        netns.veth(a, "eth1", b, "eth1")
        netns.batch(a, [f"addr add {A_IP}/24 dev eth1"])
        netns.batch(b, [f"addr add {B_IP}/24 dev eth1"])
        base = round_trips(a, b, args.count)
        base_med = statistics.median(base)
        print(f"veth pair (baseline): median {base_med:6.3f} ms, p99 {p99(base):6.3f} ms")
        netns.batch(a, ["link del eth1"])
        print(" one way | asked RTT | median RTT |  p99 RTT | overhead per direction")
        for delay in (0.0, 1.0, 2.0, 5.0, 10.0):
            rtt = with_line(a, b, Shape(delay_ms=delay), tmp, args.count)
            med = statistics.median(rtt)
            over = (med - base_med - 2 * delay) / 2
            print(
                f"{delay:5.1f} ms | {2 * delay:6.1f} ms | {med:7.3f} ms | {p99(rtt):6.3f} ms"
                f" | {over:6.3f} ms (x{med / max(2 * delay, 1e-9):.3f} of asked)"
                if delay
                else f"{delay:5.1f} ms | {0:6.1f} ms | {med:7.3f} ms | {p99(rtt):6.3f} ms"
                f" | {over:6.3f} ms"
            )
        rtt = with_line(a, b, Shape(delay_ms=5.0, jitter_ms=1.0), tmp, args.count)
        print(
            f"jitter 5 ± 1 ms one way: median {statistics.median(rtt):.3f} ms,"
            f" p99 {p99(rtt):.3f} ms; standard deviation asked {2**0.5:.3f} ms,"
            f" measured {statistics.stdev(rtt):.3f} ms"
        )
        lost = [0]
        with_line(a, b, Shape(loss=0.1), tmp, args.count, lost)
        print(
            f"loss 10 % one way: round trips lost asked {1 - 0.9**2:.1%},"
            f" measured {lost[0] / args.count:.1%} of {args.count}"
        )
    finally:
        for ns in (a, b):
            netns.remove(ns)
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


if __name__ == "__main__":
    main()
