"""Benchmark: the CPU of one question to FRR, by ``vtysh`` and by the vty socket.

Two FRR routers in namespaces of their own (``aeb<pid>-a``, ``-b``: zebra, bfdd,
ospfd, bgpd; one eBGP session with BFD and an OSPF adjacency, as the lab's hot-potato
routers run) are asked the lab's polling questions (``show bgp summary json``, ``show
ip ospf neighbor json``, ``show bfd peers json``) N times each, round robin, two ways:

* ``vtysh --vty_socket DIR -c QUESTION``, one process per question, as
  :meth:`anyedge.adapters.bgp.frr.Frr.vtysh` did;
* :meth:`Frr.show`: a connection to the daemon's socket from this process
  (:mod:`anyedge.adapters.bgp.vty`).

CPU counted per question: this process's user+sys (``time.process_time``), its
children's (``getrusage(RUSAGE_CHILDREN)``: the vtysh processes) and the answering
daemons' (``/proc/PID/stat``), so that the daemon's own work is counted both ways.
The answers are checked to be the same sessions.  The ratio printed is vtysh's CPU
over the socket's; each way is run ``--rounds`` times, alternating, medians reported.

Needs root.  Run: ``python bench/bench_vty.py`` (``--questions N``, ``--rounds N``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from anyedge.adapters import netns
from anyedge.adapters.bgp.base import Neighbor, SpeakerConfig
from anyedge.adapters.bgp.frr import Frr, Igp, RouterNeighbor

QUESTIONS = ("show bgp summary json", "show ip ospf neighbor json", "show bfd peers json")
TICK = os.sysconf("SC_CLK_TCK")


def daemon_cpu(pids: list[int]) -> float:
    """User+sys seconds the processes ``pids`` have used."""
    total = 0
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / TICK


def shape(answer: object) -> object:
    """An answer's keys (a JSON object) or length (a list)."""
    return sorted(answer) if isinstance(answer, dict) else len(answer)  # type: ignore[arg-type]


def cpu_of(ask: Callable[[str], str], n: int, daemons: list[int]) -> tuple[float, float]:
    """(client CPU, daemon CPU) per question, in ms, over ``n`` questions."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    me, them = time.process_time(), daemon_cpu(daemons)
    for i in range(n):
        ask(QUESTIONS[i % len(QUESTIONS)])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = time.process_time() - me + (after.ru_utime - kids.ru_utime)
    client += after.ru_stime - kids.ru_stime
    return client / n * 1000, (daemon_cpu(daemons) - them) / n * 1000


def start_pair(d: Path, tag: str, made: list[str], every: list[int]) -> tuple[Frr, list[int]]:
    """Router a (asked) and its daemons' pids; the namespaces and pids made go into
    ``made`` and ``every`` as they are made (the caller removes them whatever happens)."""
    for side in "ab":
        netns.add(f"{tag}-{side}")
        made.append(f"{tag}-{side}")
    netns.veth(made[0], "eth1", made[1], "eth1")
    routers, pids = [], []
    for i, side in enumerate("ab"):
        ip, peer, lo = f"100.64.0.{i + 1}", f"100.64.0.{2 - i}", f"192.0.2.{i + 1}"
        netns.batch(made[i], [f"addr add {ip}/30 dev eth1", f"addr add {lo}/32 dev lo"])
        r = Frr(
            SpeakerConfig(side, made[i], d / side, 65001 + i, lo, ()),
            (RouterNeighbor(Neighbor(peer, 65002 - i, ip, "eth1", bfd=True), "peer"),),
            igp=Igp(lo, (("eth1", f"{ip}/30", 10),)),
        )
        routers.append(r)
        pids.append(r.start())
        every += pids[-1]
    a = routers[0]
    end = time.monotonic() + 60
    while not (a.established() and a.ospf_full() and a.bfd_peers().get("100.64.0.2") == "up"):
        if time.monotonic() > end:
            raise SystemExit("the routers did not come up in 60 s")
        time.sleep(0.2)
    return a, pids[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", type=int, default=200, help="questions per round and way")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="anyedge-bench-"))
    os.chmod(d, 0o755)
    made: list[str] = []
    every: list[int] = []
    try:
        a, a_pids = start_pair(d, f"aeb{os.getpid()}", made, every)
        for q in QUESTIONS:  # the same answers both ways (the sessions, not the clocks)
            assert shape(json.loads(a.show(q))) == shape(json.loads(a.vtysh(q))), q
        ways: dict[str, Callable[[str], str]] = {"vtysh": a.vtysh, "socket": a.show}
        got: dict[str, list[tuple[float, float]]] = {w: [] for w in ways}
        for _ in range(args.rounds):
            for way, ask in ways.items():
                got[way].append(cpu_of(ask, args.questions, a_pids))
        print(f"{args.questions} questions x {args.rounds} rounds each way; CPU ms/question")
        print(f"{'way':8} {'client':>8} {'daemon':>8} {'total':>8}")
        total = {}
        for way, runs in got.items():
            client = statistics.median(c for c, _ in runs)
            daemon = statistics.median(t for _, t in runs)
            total[way] = statistics.median(c + t for c, t in runs)
            print(f"{way:8} {client:8.2f} {daemon:8.2f} {total[way]:8.2f}")
        ratio = total["vtysh"] / total["socket"]
        print(f"ratio vtysh/socket (total CPU per question): {ratio:.1f}")
    finally:
        netns.stop(every)
        for ns in made:
            netns.remove(ns)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
