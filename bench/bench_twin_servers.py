"""Benchmark: what servers inside sites cost the twin's default day.

The default world and scenario under the Traffic Manager, 24 simulated hours at 10 s
ticks, run twice over, alternating: as it is (no server event: the sections keep their
first tables and a tick only checks that nothing is dead), and with two server events
added (2 of LHR03's 7 servers fail at Europe's evening for an hour, 1 of SYD01's 13 is
drained for two hours), which give those sections tables of their own, fail what is
hashed to the failed servers until Unimog removes them, and record each server's
utilisation a minute.  Prints each run's CPU time (``time.process_time``: on a shared
machine, the time other work takes is not charged), the medians and their ratio.

Run: ``python bench/bench_twin_servers.py [--rounds N]`` (about a minute of CPU a round).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from anyedge.model.worldgen import build_world
from anyedge.sim import Twin, default_scenario, parse_scenario

EXTRA = """\
events:
  - {at: 18h, for: 1h, kind: server_fail, section: LHR03, count: 2}
  - {at: 9h, for: 2h, kind: server_drain, section: SYD01, count: 1}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    world = build_world()
    day = default_scenario(world)
    extra = parse_scenario(EXTRA, world, "<servers>").events
    events = tuple(sorted(day.events + extra, key=lambda e: e.start))
    with_servers = dataclasses.replace(day, events=events)
    twins = {"default day": Twin(world, day), "with server events": Twin(world, with_servers)}
    cpu: dict[str, list[float]] = {k: [] for k in twins}
    for i in range(args.rounds):
        for name, twin in twins.items():
            t0 = time.process_time()
            twin.run("manager")
            cpu[name].append(time.process_time() - t0)
            print(f"round {i + 1}: {name}: {cpu[name][-1]:.1f} s CPU", flush=True)
    base = statistics.median(cpu["default day"])
    other = statistics.median(cpu["with server events"])
    print(
        f"median CPU: default day {base:.1f} s, with server events {other:.1f} s; "
        f"ratio {other / base:.3f}"
    )


if __name__ == "__main__":
    main()
