"""Benchmark: Magic Transit's firewall changes and its anycast GRE forwarding.

1. **A rule into 100 customer namespaces**, in process (one libnftables JSON batch per
   namespace, through a :class:`NamespaceNft` opened in each, kept as the applier
   keeps them) against the baseline of the post's way, one
   ``ip netns exec NS nft add rule ...`` process per namespace.
2. **From a store write to the rule applied**, for 100 customers on one server: the
   applier's moment of applying (``Applier.stats``) minus the moment before the write.
   Rows: one transaction that changes all 100 customers (the time until each is
   applied: the last one is the whole fan-in), and 200 single-customer writes paced at
   50 per second.
   And **10 sites × 4 servers**: 40 server namespaces, each with its own replica and
   applier, one customer; 40 writes paced at 5 per second, each timed until it is
   applied on every server.
3. **GRE forwarding**: a sender process in the customer router's namespace blasts GRE
   packets (64-byte inner UDP) at the anycast endpoint for 2 s; the forwarder
   decapsulates them into the customer's namespace and they reach the client.  Counted
   as packets received on the client's interface, beside the baseline of the same
   sender's same inner packets sent without GRE and forwarded by the kernel alone.

``--against REV`` measures the fan-in of 2. (one transaction changing all 100
customers) for git revision ``REV``'s ``src`` and for this tree, alternately, each in
a process of its own (``--pairs`` times each): the old code path beside the new one on
the same machine in the same minutes.  ``--part`` picks parts (all three by default,
none with ``--against``).

Needs root.  Run: ``python bench/bench_transit.py [--against REV] [--part rules]``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from anyedge.adapters import netns  # noqa: E402
from anyedge.transit.config import Customer, key_of, put_customer  # noqa: E402
from anyedge.transit.nsnft import NamespaceNft  # noqa: E402
from transit_support import ANYCAST, CLIENT, ROUTER, Server, server  # noqa: E402

N = 100
ROUNDS = 10


def customer(i: int, port: int, router: str = "198.51.100.2") -> Customer:
    return Customer.model_validate(
        {
            "id": f"c{i}",
            "prefixes": [f"10.{i // 256}.{i % 256}.0/24"],
            "tunnel": {"router": router, "key": i + 1},
            "rules": [{"action": "accept", "protocol": "tcp", "ports": [port]}],
        }
    )


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def fill(s: Server) -> None:
    t0 = time.perf_counter()
    seqs = [put_customer(s.writer, customer(i, 80)) for i in range(N)]
    for i, seq in enumerate(seqs):
        assert s.applier.wait(f"c{i}", seq, timeout=300)
    print(f"{N} customers' namespaces made and filled: {time.perf_counter() - t0:.2f} s")


def fanin(s: Server, rounds: int) -> tuple[list[float], list[float]]:
    """Store write -> applied, one transaction changing every customer, ``rounds`` times:
    (time until all are applied, per round; time until each is applied)."""
    lat: list[float] = []
    whole: list[float] = []
    for r in range(rounds):
        puts = {key_of(f"c{i}"): customer(i, 2000 + r).model_dump_json().encode() for i in range(N)}
        t0 = time.monotonic()
        seq = s.writer.txn(puts)
        for i in range(N):
            assert s.applier.wait(f"c{i}", seq, timeout=60)
        at = [s.applier.stats.by_customer[f"c{i}"].at - t0 for i in range(N)]
        lat += at
        whole.append(max(at))
    return whole, lat


def fanin_only(rounds: int) -> None:
    """One process's fan-in measurement, as JSON (what ``--against`` runs per revision)."""
    with server("bi") as s:
        fill(s)
        c0 = time.process_time()
        whole, _ = fanin(s, rounds)
        cpu = (time.process_time() - c0) / rounds
    print(json.dumps({"whole": whole, "cpu": cpu}))


def against(rev: str, rounds: int, pairs: int) -> None:
    """The fan-in of this tree beside revision ``rev``'s, alternating, in this run.

    ``rev``'s ``src`` is taken out of git into a temporary directory; each side runs
    this file's fan-in (``--fanin-only``) in a process of its own, ``pairs`` times."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tar = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=tar, check=True)
        sides = {rev: os.path.join(tmp, "src"), "this tree": str(ROOT / "src")}
        got: dict[str, list[float]] = {k: [] for k in sides}
        cpu: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(pairs):
            for name, src in sides.items():
                env = {**os.environ, "PYTHONPATH": src}
                argv = [sys.executable, __file__, "--fanin-only", str(rounds)]
                out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                got[name] += r["whole"]
                cpu[name].append(r["cpu"])
        load = os.getloadavg()[0]
        for name in sides:
            print(
                f"{name}: one txn changing all {N} customers, all applied: median "
                f"{statistics.median(got[name]) * 1e3:.1f} ms, p90 {pct(got[name], 90) * 1e3:.1f}"
                f" ms ({len(got[name])} rounds); process CPU per round "
                f"{statistics.median(cpu[name]) * 1e3:.1f} ms"
            )
        old, new = statistics.median(got[rev]), statistics.median(got["this tree"])
        print(f"{rev}/this tree = ×{old / new:.2f} (load average {load:.1f} at the end)")


def rules_part() -> None:
    with server("bn") as s:
        fill(s)
        names = [s.applier.namespace(f"c{i}") for i in range(N)]
        ctxs = {ns: NamespaceNft(ns) for ns in names}

        def rule(port: int) -> list[dict[str, object]]:
            expr = [
                {
                    "match": {
                        "op": "==",
                        "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                        "right": port,
                    }
                },
                {"drop": None},
            ]
            return [
                {
                    "add": {
                        "rule": {
                            "family": "inet",
                            "table": "transit",
                            "chain": "inbound",
                            "expr": expr,
                        }
                    }
                }
            ]

        t0 = time.perf_counter()
        for ns in names:
            ctxs[ns].run(rule(1001))
        inproc = time.perf_counter() - t0
        t0 = time.perf_counter()
        for ns in names:
            subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "nft",
                    "add",
                    "rule",
                    "inet",
                    "transit",
                    "inbound",
                    "tcp",
                    "dport",
                    "1002",
                    "drop",
                ],
                check=True,
            )
        cli = time.perf_counter() - t0
        for c in ctxs.values():
            c.close()
        print(
            f"a rule into {N} namespaces: in process {inproc * 1e3:.0f} ms, "
            f"nft CLI {cli * 1e3:.0f} ms: CLI/in process = ×{cli / inproc:.1f}"
        )

        whole, lat = fanin(s, ROUNDS)
        print(
            f"one txn changing all {N} customers, write -> applied per customer: "
            f"p50 {pct(lat, 50) * 1e3:.1f} ms, p99 {pct(lat, 99) * 1e3:.1f} ms; "
            f"all {N} applied: median {statistics.median(whole) * 1e3:.1f} ms, "
            f"worst {max(whole) * 1e3:.1f} ms (of {ROUNDS})"
        )
        single: list[float] = []
        for k in range(200):
            i = k % N
            t0 = time.monotonic()
            seq = put_customer(s.writer, customer(i, 3000 + k))
            assert s.applier.wait(f"c{i}", seq, timeout=30)
            single.append(s.applier.stats.by_customer[f"c{i}"].at - t0)
            time.sleep(max(0.0, 0.02 - (time.monotonic() - t0)))
        print(
            f"single-customer writes (200 at 50/s, {N} customers): write -> applied "
            f"p50 {pct(single, 50) * 1e3:.2f} ms, p99 {pct(single, 99) * 1e3:.2f} ms"
        )


def fleet_part(sites: int = 10, servers: int = 4, writes: int = 40) -> None:
    import os
    import secrets
    import tempfile

    from anyedge.store import EmbeddedReplica, EmbeddedWriter
    from anyedge.transit.applier import Applier

    base = f"aetrfl{os.getpid() % 10000}{secrets.token_hex(2)}"
    appliers: list[Applier] = []
    replicas: list[EmbeddedReplica] = []
    with tempfile.TemporaryDirectory() as tmp:
        writer = EmbeddedWriter(os.path.join(tmp, "config.db"))
        try:
            for k in range(sites * servers):
                host = f"{base}-s{k}"
                netns.add(host)
                replicas.append(EmbeddedReplica(writer.address))
                appliers.append(Applier(replicas[-1], host=host, ns_prefix=f"{host}-").start())
            seq = put_customer(writer, customer(0, 80))
            for a in appliers:
                assert a.wait("c0", seq, timeout=120)
            each: list[float] = []
            every: list[float] = []
            for w in range(writes):
                t0 = time.monotonic()
                seq = put_customer(writer, customer(0, 4000 + w))
                for a in appliers:
                    assert a.wait("c0", seq, timeout=30)
                at = [a.stats.by_customer["c0"].at - t0 for a in appliers]
                each += at
                every.append(max(at))
                time.sleep(max(0.0, 0.2 - (time.monotonic() - t0)))
            print(
                f"{sites} sites x {servers} servers, one customer, {writes} writes: "
                f"write -> applied on a server p50 {pct(each, 50) * 1e3:.1f} ms, "
                f"p99 {pct(each, 99) * 1e3:.1f} ms; on every server p50 "
                f"{pct(every, 50) * 1e3:.1f} ms, p99 {pct(every, 99) * 1e3:.1f} ms"
            )
        finally:
            for a in appliers:
                a.close()
            for r in replicas:
                r.close()
            writer.close()
            for ns in netns.listed(base):
                netns.remove(ns)


SENDER = r"""
import socket, struct, sys, time
from scapy.layers.inet import GRE, IP, UDP
mode, dst, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
inner = bytes(IP(src="10.0.0.10", dst=sys.argv[4]) / UDP(sport=53, dport=9) / (b"p" * 36))
if mode == "gre":
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
    pkt = bytes(GRE(key_present=1, key=1, proto=0x0800) / inner)
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    pkt = inner
end = time.monotonic() + secs
n = 0
while time.monotonic() < end:
    for _ in range(100):
        try:
            s.sendto(pkt, (dst, 0))
            n += 1
        except OSError:
            pass
print(n)
"""


def rx(ns: str) -> int:
    out = netns.run(ns, ["ip", "-j", "-s", "link", "show", "dev", "eth0"])
    return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


def blast(s: Server, mode: str, dst: str, secs: float = 2.0) -> tuple[int, float]:
    before = rx(s.client)
    p = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            s.router,
            sys.executable,
            "-c",
            SENDER,
            mode,
            dst,
            str(secs),
            CLIENT,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    time.sleep(0.5)
    got = rx(s.client) - before
    return int(p.stdout), got / secs


def gre_part() -> None:
    with server("bg", gre=True) as s:
        assert s.applier.wait("c0", put_customer(s.writer, customer(0, 9, ROUTER)))
        # the customer's replies leave through the customer's namespace, to the client
        sent_k, kernel = blast(s, "plain", CLIENT)
        sent_g, gre = blast(s, "gre", ANYCAST)
        print(
            f"GRE decapsulation: sender {sent_g / 2:,.0f} pkt/s, delivered {gre:,.0f} pkt/s; "
            f"kernel forwarding of the same packets without GRE: sender {sent_k / 2:,.0f} "
            f"pkt/s, delivered {kernel:,.0f} pkt/s; user-space GRE/kernel = {gre / kernel:.2f}"
        )


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["rules", "fleet", "gre"], action="append")
    p.add_argument("--against", metavar="REV", help="also the fan-in of git revision REV")
    p.add_argument("--pairs", type=int, default=2, help="with --against: runs of each side")
    p.add_argument("--fanin-only", type=int, metavar="ROUNDS", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.fanin_only:
        fanin_only(a.fanin_only)
        return
    if a.against:
        against(a.against, ROUNDS, a.pairs)
    parts = {"rules": rules_part, "fleet": fleet_part, "gre": gre_part}
    for name in a.part or ([] if a.against else list(parts)):
        parts[name]()


if __name__ == "__main__":
    main()
