"""Benchmark: where the XDP way of ``bench_drop.py`` spends its time per dropped packet.

Three views of the same memcached reflection frame (``bench_drop.frame``), each a
median [lowest–highest] over ``--rounds``:

1. **The program alone**, ``BPF_PROG_TEST_RUN`` 200,000 times: a program that drops
   everything (the test run's own cost, the floor), L4Drop with no rules (parsing and
   the index), L4Drop with the attack's rule (its drop).  Above the floor is what the
   program costs.
2. **The program in the path**, with the kernel's run-time statistics (turned on by
   ``BPF_ENABLE_STATS`` for the run — a reference that ends with its file descriptor,
   leaving ``kernel.bpf_stats_enabled`` and anyone else's to them): ``run_time_ns /
   run_cnt`` of L4Drop and of the drop-everything program, each attached in native XDP
   to the receiving veth (read by the id attached there) while the in-kernel sender
   sends 1,000,000 frames.  The
   statistics read the clock twice per run, which costs more than the floor program
   itself: their difference is L4Drop's own time in the path.
3. **The whole receive path**, the test run's time per frame of the in-kernel sender
   (as ``bench_drop.py``) minus the sender alone: the drop-everything program, L4Drop,
   and nftables at the netdev ingress hook with the veth's receive path turned on in
   each of the ways a veth allows it — an XDP program that passes everything (the
   benchmark's way), GRO on the veth instead, or both — to show that the nftables
   way is given its cheapest setting.

``bpftool prog profile`` needs hardware performance counters, which this machine's
kernel does not expose (and Debian's bpftool is built without it), hence the
statistics and the differences.  Needs root, clang, bpftool, nft, ethtool.  Run:
``python bench/bench_drop_profile.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
from collections.abc import Callable

import bench_drop as bd
from anyedge.adapters import netns
from anyedge.edge import build
from anyedge.edge.l4drop import L4Drop
from anyedge.edge.libbpf import BpfObject, Program, detach_xdp, lib
from anyedge.edge.rules import parse_rules

COUNT = 1_000_000


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):,.1f} [{min(xs):,.1f}–{max(xs):,.1f}]"


def alone(rounds: int) -> None:
    f = bd.frame(bytes(6), bytes(6), "203.0.113.7")
    gen = BpfObject(build.object_path("trafficgen"))
    rows: dict[str, list[float]] = {}
    try:
        with L4Drop() as l4:
            for _ in range(rounds):
                rows.setdefault("drop everything (floor)", []).append(
                    gen.program("xdp_drop").test_run(f, repeat=200_000).duration_ns
                )
                l4.replace(parse_rules("rules: []\n"))
                rows.setdefault("L4Drop, no rules", []).append(
                    l4.program.test_run(f, repeat=200_000).duration_ns
                )
                l4.replace(parse_rules(bd.RULES))
                rows.setdefault("L4Drop, the attack's rule", []).append(
                    l4.program.test_run(f, repeat=200_000).duration_ns
                )
    finally:
        gen.close()
    print(f"1. the program alone (BPF_PROG_TEST_RUN), ns per run ({bd.stats_state()} at the end):")
    floor = statistics.median(rows["drop everything (floor)"])
    for name, xs in rows.items():
        print(f"   {name:<28} {med(xs):>22}   above the floor {statistics.median(xs) - floor:.0f}")


def _stats(lab: bd.Lab) -> tuple[int, int]:
    """run_time_ns and run_cnt of the program attached to the receiving veth."""
    link = json.loads(
        subprocess.run(
            ["ip", "-n", lab.b, "-d", "-j", "link", "show", "eth0"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )[0]
    prog_id = link["xdp"]["prog"]["id"]
    out = subprocess.run(
        ["bpftool", "-j", "prog", "show", "id", str(prog_id)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    prog = json.loads(out)
    return prog.get("run_time_ns", 0), prog.get("run_cnt", 0)


def in_path(lab: bd.Lab, rounds: int) -> None:
    assert lab.gen is not None
    drop_all = lab.gen.program("xdp_drop")
    per: dict[str, list[float]] = {}
    stats_fd = lib().bpf_enable_stats(0)  # BPF_STATS_RUN_TIME
    if stats_fd < 0:
        raise OSError(-stats_fd, "BPF_ENABLE_STATS")
    try:
        with L4Drop() as l4:
            l4.replace(parse_rules(bd.RULES))
            for _ in range(rounds):
                for name, prog in (("xdp_drop", drop_all), ("l4drop", l4.program)):
                    _attach(lab, prog)
                    t0, n0 = _stats(lab)
                    lab.send_kernel(COUNT)
                    t1, n1 = _stats(lab)
                    _detach(lab)
                    per.setdefault(name, []).append((t1 - t0) / max(n1 - n0, 1))
    finally:
        os.close(stats_fd)
    own = [a - b for a, b in zip(per["l4drop"], per["xdp_drop"], strict=True)]
    print("2. in the path, run-time statistics, ns per run (the clock's cost included):")
    print(f"   drop everything {med(per['xdp_drop'])}, L4Drop {med(per['l4drop'])}")
    print(f"   L4Drop's own time in the path: {med(own)} by round")


def _attach(lab: bd.Lab, prog: Program) -> None:
    with netns.entered(lab.b):
        prog.attach_xdp(socket.if_nametoindex("eth0"), "native")


def _detach(lab: bd.Lab) -> None:
    with netns.entered(lab.b):
        detach_xdp(socket.if_nametoindex("eth0"), "native")


def _sh(lab: bd.Lab, *argv: str) -> None:
    subprocess.run(["ip", "netns", "exec", lab.b, *argv], check=True)


def whole_path(lab: bd.Lab, rounds: int) -> None:
    assert lab.gen is not None
    gen = lab.gen
    nft = (
        "table netdev ae_bench {\n chain in {\n  type filter hook ingress device eth0 "
        f"priority -500;\n  {bd.MATCH}\n }}\n}}\n"
    )
    l4 = L4Drop()
    l4.replace(parse_rules(bd.RULES))

    def setup(pass_prog: bool, gro: bool, table: bool) -> Callable[[], None]:
        def on() -> None:
            if pass_prog:
                _attach(lab, gen.program("xdp_pass"))
            if gro:
                _sh(lab, "ethtool", "-K", "eth0", "gro", "on")
            if table:
                bd._nft(lab.b, nft)

        return on

    def off() -> None:
        _detach(lab)
        _sh(lab, "ethtool", "-K", "eth0", "gro", "off")
        _sh(lab, "nft", "flush", "ruleset")

    ways: dict[str, Callable[[], None]] = {
        "sender alone": lambda: None,
        "drop everything": lambda: _attach(lab, gen.program("xdp_drop")),
        "L4Drop": lambda: _attach(lab, l4.program),
        "nft, XDP pass, GRO off": setup(True, False, True),
        "nft, no XDP, GRO on": setup(False, True, True),
        "nft, XDP pass, GRO on": setup(True, True, True),
    }
    got: dict[str, list[float]] = {}
    try:
        off()
        for i in range(2 * rounds):  # a round during others' BPF statistics is run again
            if len(got.get("sender alone", [])) == rounds:
                break
            names = list(ways)
            names = names[i % len(names) :] + names[: i % len(names)]
            this: dict[str, float] = {}
            timed = bd.stats_on()
            for name in names:
                ways[name]()
                this[name] = float(lab.send_kernel(COUNT)[3])
                off()
            if timed or bd.stats_on():
                print(f"   round {i + 1} left out: BPF run-time statistics were on during it")
                continue
            for name, ns in this.items():
                got.setdefault(name, []).append(ns)
    finally:
        l4.close()
    base = got.pop("sender alone")
    print("3. the whole receive path, ns per frame minus the sender alone's:")
    print(f"   (the sender alone: {med(base)})")
    for name, xs in got.items():
        print(f"   {name:<28} {med([x - b for x, b in zip(xs, base, strict=True)]):>22}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if not 3 <= args.rounds <= 9:
        ap.error("3 to 9 rounds")
    print(
        f"{os.cpu_count()} CPUs, pinned to CPU {bd.CPU}; load average {os.getloadavg()[0]:.1f}; "
        f"{bd.stats_state()}"
    )
    os.sched_setaffinity(0, {bd.CPU})
    alone(args.rounds)
    lab = bd.Lab()
    try:
        in_path(lab, args.rounds)
        whole_path(lab, args.rounds)
    finally:
        lab.close()
    print(f"load average at the end {os.getloadavg()[0]:.1f}; {bd.stats_state()}")


if __name__ == "__main__":
    main()
