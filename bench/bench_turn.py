"""Benchmark: a TURN relay on loopback -- coturn today, anyedge's own when it exists.

Every server in ``tests/turn_peers.py``'s ``TURN_SERVERS`` is measured the same way, with
the same number of workers (coturn: ``relay-threads``); a server not in it (anyedge, for
now) gets "n/a", and so does the ratio anyedge/coturn.

1. **Relay rate.**  A client of our own allocates, binds a channel to a peer socket and
   sends ChannelData with 100- and 1,200-byte payloads for ``--seconds`` (as fast as it
   can, in its own process: ``python tests/turn_peers.py blast``).  The peer, in this
   process, lets the kernel count what arrives: it reads nothing until the sender is done
   (what its buffer cannot hold is dropped and counted in ``/proc/net/udp``), then drains
   the queue -- read + dropped is what the relay delivered, and the peer costs almost no
   CPU.  Delivered packets per second = that / the sender's seconds; the median of
   ``--repeat`` runs is shown, with the server's CPU use over it (``/proc/PID/stat``).
   "Lossless" is the highest paced rate of 25k/50k/75k/100k/150k/200k frames/s that
   lost under 0.1 % (1 s steps, median of the repeats).
2. **Allocation setup.**  Sequential: ``--allocs`` allocations one after another, each
   from a fresh socket (401 challenge, then the authenticated Allocate: two round trips):
   latency p50/p99 and allocations per second.  Concurrent: ``--concurrent`` allocations,
   64 in flight: allocations per second and latency p50/p99 (queueing included).
3. **Memory per allocation.**  A fresh server; its VmRSS before and after 1,000 and
   10,000 allocations (each from its own socket, kept open), divided by the allocations
   made.  coturn needs no quota raised for this -- its per-user and total quotas default
   to 0, i.e. none -- but a relay port range larger than the count (here below the
   kernel's ephemeral ports) and a file descriptor per allocation: its ``ulimit -n``
   (20,000 here, not raisable in this sandbox) caps it near 19,000 allocations.

Everything runs on 127.0.0.1, every step is bounded in time, and every process started is
ended by its pid.  On this machine (2 cores) the sender and the server share the CPUs with
each other and with whatever else runs: the rates are for comparing servers measured in
the same run, not a server's peak; rerun when the machine is busy.

``--unbatched`` adds a server: anyedge with ``udp_batch: 0`` (one datagram per system
call through asyncio's transports, as before batching), measured in the same run;
``--nogso`` one with batches but ``udp_gso: false`` (no UDP segmentation offload);
``--down`` measures the other direction too (a peer sends as fast as it can, in its own
process, and the client's socket counts); ``--rate`` paces the relay-rate runs (CPU
per packet at a load a relay can keep up with, where batches are small).  The server's
CPU is summed over its process tree, so ``--workers 2`` counts anyedge's worker
processes, not only the supervisor.

Run: ``python bench/bench_turn.py`` (``--quick`` for small sizes; ``--json FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import turn_peers as tp  # noqa: E402

SERVERS = ("coturn", "anyedge")
# anyedge configured otherwise, measured in the same run (--unbatched, --nogso)
VARIANTS = {"anyedge-unbatched": "udp_batch: 0\n", "anyedge-nogso": "udp_gso: false\n"}
USER, PASSWORD = "bench", "bench-password"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads) and of its live descendants:
    ``--workers 2`` of anyedge are two worker processes under a supervisor that relays
    nothing itself."""
    total = 0
    for p in tp.process_tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


@contextlib.contextmanager
def server(name: str, workers: int, relay_count: int) -> Iterator[tp.TurnServer | None]:
    """A fresh server ``name`` in a temporary directory, or None if there is none here."""
    factory = tp.TURN_SERVERS.get(name)
    if name in VARIANTS:
        factory = functools.partial(tp.anyedge_server, extra_yaml=VARIANTS[name])
    if factory is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix=f"bench-turn-{name}-") as d:
        try:
            s = factory(
                Path(d),
                tp.free_port(),
                users={USER: PASSWORD},
                relay_ports=tp.free_port_range(relay_count),
                workers=workers,
            )
        except tp.ServerUnavailable as exc:
            print(f"  {name}: {exc}", file=sys.stderr)
            yield None
            return
        with s:
            yield s


# -- 1. relay rate


def relay_rate(
    s: tp.TurnServer, size: int, seconds: float, rate: float | None = None
) -> dict[str, float]:
    """One run of the load generator: ``rate`` ChannelData frames/s (None: as fast as it
    can) for ``seconds``, counted at the peer by the kernel (see ``tp.count_until``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind((tp.LOOPBACK, 0))
        argv = tp.blast_argv(
            (s.host, s.port), USER, PASSWORD, peer.getsockname(), size, seconds, rate
        )
        cpu0 = cpu_seconds(s.pid)
        t0 = time.monotonic()
        with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
            try:
                count = tp.count_until(
                    peer, lambda: proc.poll() is not None, t0 + seconds + 20, 0.2, read=False
                )
                out, _ = proc.communicate(timeout=20)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        cpu = cpu_seconds(s.pid) - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"blast failed ({proc.returncode}): {out}")
    sent = json.loads(out)
    took = sent["seconds"]
    return {
        "offered_pps": sent["sent"] / took,
        "delivered_pps": count.delivered / took,
        "loss_percent": 100 * (1 - count.delivered / sent["sent"]) if sent["sent"] else 0.0,
        "delivered_mbit_s": count.delivered * size * 8 / took / 1e6,
        "server_cpu_percent": 100 * cpu / took,
        # what a worker costs per packet, and so could deliver with a core of its own:
        # on a shared machine the delivered rate follows the scheduler, this does not
        "server_cpu_us_per_packet": 1e6 * cpu / count.delivered if count.delivered else 0.0,
        "delivered_per_cpu_second": count.delivered / cpu if cpu else 0.0,
    }


PEER_BLAST = """
import os, socket, sys, time
fd, host, port, size, seconds = sys.argv[1:]
s = socket.socket(fileno=int(fd))
data, dest, send = os.urandom(int(size)), (host, int(port)), s.sendto
sent, t0 = 0, time.perf_counter()
end = t0 + float(seconds)
while time.perf_counter() < end:
    for _ in range(64):
        try:
            send(data, dest)
            sent += 1
        except OSError:
            pass
print(sent, time.perf_counter() - t0)
"""


def relay_rate_down(s: tp.TurnServer, size: int, seconds: float) -> dict[str, float]:
    """The other direction (``--down``): a peer sends ``size``-byte datagrams to a
    client's relayed address as fast as it can, in its own process (the peer socket is
    handed to it); the client's socket counts what arrives as ChannelData, as the peer
    does in :func:`relay_rate`.  A few datagrams each way first, so that a relay that
    learns from them (anyedge's lanes) has."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer,
        tp.TurnUdpClient((s.host, s.port), USER, PASSWORD) as c,
    ):
        peer.bind((tp.LOOPBACK, 0))
        peer.settimeout(2)
        relayed = c.allocate()
        c.channel_bind(0x4000, peer.getsockname())
        for _ in range(3):
            c.send_channel(0x4000, b"hello")
            peer.recvfrom(100)
            peer.sendto(b"back", relayed)
            c.receive()
        argv = [sys.executable, "-c", PEER_BLAST, str(peer.fileno()), relayed[0]]
        argv += [str(relayed[1]), str(size), str(seconds)]
        cpu0 = cpu_seconds(s.pid)
        t0 = time.monotonic()
        with subprocess.Popen(
            argv, pass_fds=(peer.fileno(),), stdout=subprocess.PIPE, text=True
        ) as proc:
            try:
                count = tp.count_until(
                    c.sock, lambda: proc.poll() is not None, t0 + seconds + 20, 0.2, read=False
                )
                out, _ = proc.communicate(timeout=20)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        cpu = cpu_seconds(s.pid) - cpu0
    sent, took = int(out.split()[0]), float(out.split()[1])
    return {
        "offered_pps": sent / took,
        "delivered_pps": count.delivered / took,
        "loss_percent": 100 * (1 - count.delivered / sent) if sent else 0.0,
        "delivered_mbit_s": count.delivered * size * 8 / took / 1e6,
        "server_cpu_percent": 100 * cpu / took,
        "server_cpu_us_per_packet": 1e6 * cpu / count.delivered if count.delivered else 0.0,
        "delivered_per_cpu_second": count.delivered / cpu if cpu else 0.0,
    }


SWEEP = (25_000, 50_000, 75_000, 100_000, 150_000, 200_000)


def lossless_rate(s: tp.TurnServer, size: int, seconds: float) -> float:
    """The highest of ``SWEEP``'s offered rates (frames/s) delivered with under 0.1 % loss;
    the sweep stops at the first lossy step, or where the sender cannot keep the pace."""
    best = 0.0
    for rate in SWEEP:
        r = relay_rate(s, size, seconds, rate)
        if r["loss_percent"] >= 0.1:
            break
        best = r["offered_pps"]
        if r["offered_pps"] < 0.95 * rate:
            break
    return best


# -- 2. allocation setup


def settle() -> None:
    """Let the server forget deleted allocations before the next phase.  coturn keeps one
    for 1-2 s after a Refresh with LIFETIME 0: meanwhile its relay port stays taken (508
    Cannot create socket when the range runs out) and a new client socket that gets the
    old one's port back is refused with 437 Allocation Mismatch."""
    time.sleep(2.5)


def sequential_setup(s: tp.TurnServer, n: int) -> dict[str, float]:
    clients: list[tp.TurnUdpClient] = []
    latencies: list[float] = []
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            c = tp.TurnUdpClient((s.host, s.port), USER, PASSWORD)
            clients.append(c)
            a = time.perf_counter()
            c.allocate()
            latencies.append(time.perf_counter() - a)
        took = time.perf_counter() - t0
        for c in clients:
            c.release()
    finally:
        for c in clients:
            c.close()
    return {
        "seq_allocs_per_s": n / took,
        "seq_latency_p50_ms": 1000 * percentile(latencies, 0.5),
        "seq_latency_p99_ms": 1000 * percentile(latencies, 0.99),
    }


def concurrent_setup(s: tp.TurnServer, n: int, in_flight: int = 64) -> dict[str, float]:
    async def run() -> tp.ManyAllocations:
        many = await tp.allocate_many(
            (s.host, s.port), USER, PASSWORD, n, concurrency=in_flight, timeout=10
        )
        try:
            sem = asyncio.Semaphore(in_flight)

            async def release(a: tp.AsyncAllocation) -> None:
                async with sem:
                    with contextlib.suppress(tp.TurnError, OSError):
                        await tp.async_release(a)

            await asyncio.wait_for(asyncio.gather(*(release(a) for a in many.allocations)), 60)
        finally:
            many.close()
        return many

    many = asyncio.run(asyncio.wait_for(run(), 120))
    return {
        "conc_allocs_per_s": len(many.allocations) / many.seconds,
        "conc_latency_p50_ms": 1000 * percentile(many.latencies, 0.5),
        "conc_latency_p99_ms": 1000 * percentile(many.latencies, 0.99),
        "conc_failed": float(len(many.errors)),
    }


# -- 3. memory per allocation


def memory_per_allocation(name: str, workers: int, count: int) -> dict[str, float] | None:
    with server(name, workers, count + 500) as s:
        if s is None:
            return None

        async def run() -> dict[str, float]:
            warm = await tp.allocate_many((s.host, s.port), USER, PASSWORD, 10)
            await asyncio.gather(*(tp.async_release(a) for a in warm.allocations))
            warm.close()
            await asyncio.sleep(2.5)  # see settle()
            before, fds0 = s.rss_kib(), tp.open_fds(s.pid)
            many = await tp.allocate_many(
                (s.host, s.port), USER, PASSWORD, count, concurrency=128, timeout=10
            )
            try:
                await asyncio.sleep(0.5)
                after, fds1 = s.rss_kib(), tp.open_fds(s.pid)
            finally:
                many.close()
            ok = len(many.allocations)
            return {
                "allocations": float(ok),
                "failed": float(len(many.errors)),
                "rss_before_mib": before / 1024,
                "rss_after_mib": after / 1024,
                "bytes_per_allocation": (after - before) * 1024 / ok if ok else float("nan"),
                "fds_per_allocation": (fds1 - fds0) / ok if ok else float("nan"),
                "setup_s": many.seconds,
            }

        return asyncio.run(asyncio.wait_for(run(), 180))


# -- the table


Row = tuple[str, str, Callable[[dict[str, Any]], float | None], str]


def fmt(v: float | None, spec: str) -> str:
    if v is None or v != v:
        return "n/a"
    return format(v, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, short runs")
    p.add_argument("--workers", type=int, default=1, help="server worker threads (both)")
    p.add_argument("--seconds", type=float, default=None, help="seconds per relay-rate run")
    p.add_argument("--allocs", type=int, default=None, help="sequential allocations")
    p.add_argument("--concurrent", type=int, default=None, help="concurrent allocations")
    p.add_argument(
        "--memory", type=int, nargs="*", default=None, help="allocation counts for memory"
    )
    p.add_argument("--repeat", type=int, default=None, help="relay runs (median is kept)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument(
        "--relay-only",
        action="store_true",
        help="only the delivered rates (no lossless sweep, setup or memory)",
    )
    p.add_argument(
        "--unbatched",
        action="store_true",
        help="also anyedge with udp_batch: 0 (one datagram per system call), same run",
    )
    p.add_argument(
        "--down",
        action="store_true",
        help="also the other direction: a peer sends, the client counts (no lossless sweep)",
    )
    p.add_argument(
        "--nogso",
        action="store_true",
        help="also anyedge with udp_gso: false (batches without segmentation), same run",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="pace the relay-rate runs at this many frames/s (default: as fast as it can)",
    )
    args = p.parse_args(argv)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    repeat = args.repeat or (1 if args.quick else 3)
    n_seq = args.allocs or (50 if args.quick else 300)
    n_conc = args.concurrent or (200 if args.quick else 2000)
    memory_counts = (
        args.memory if args.memory is not None else ([1000] if args.quick else [1000, 10000])
    )
    if args.relay_only:
        memory_counts = []

    results: dict[str, dict[str, Any]] = {}
    servers = SERVERS + ("anyedge-nogso",) * args.nogso + ("anyedge-unbatched",) * args.unbatched
    for name in servers:
        print(f"{name}:", file=sys.stderr)
        r: dict[str, Any] = {}
        with server(name, args.workers, n_seq + n_conc + 500) as s:
            if s is None:
                print("  not available: n/a", file=sys.stderr)
                results[name] = {}
                continue
            for size in (100, 1200):
                runs = sorted(
                    (relay_rate(s, size, seconds, args.rate) for _ in range(repeat)),
                    key=lambda x: x["delivered_pps"],
                )
                r[f"rate_{size}"] = runs[len(runs) // 2]  # the median run
                if not args.relay_only:
                    r[f"rate_{size}"]["lossless_pps"] = statistics.median(
                        lossless_rate(s, size, min(seconds, 1.0)) for _ in range(repeat)
                    )
                print(f"  relay {size} B: {r[f'rate_{size}']}", file=sys.stderr)
                if args.down:
                    down = sorted(
                        (relay_rate_down(s, size, seconds) for _ in range(repeat)),
                        key=lambda x: x["delivered_pps"],
                    )
                    r[f"down_{size}"] = down[len(down) // 2]
                    print(f"  down {size} B: {r[f'down_{size}']}", file=sys.stderr)
            if args.relay_only:
                results[name] = r
                continue
            settle()
            seq = sequential_setup(s, n_seq)
            settle()
            r["setup"] = seq | concurrent_setup(s, n_conc)
            print(f"  setup: {r['setup']}", file=sys.stderr)
        for count in memory_counts:
            r[f"memory_{count}"] = memory_per_allocation(name, args.workers, count)
            print(f"  memory {count}: {r[f'memory_{count}']}", file=sys.stderr)
        results[name] = r

    def get(*keys: str) -> Callable[[dict[str, Any]], float | None]:
        def f(r: dict[str, Any]) -> float | None:
            v: Any = r
            for k in keys:
                if not isinstance(v, dict) or k not in v:
                    return None
                v = v[k]
            return float(v) if v is not None else None

        return f

    rows: list[Row] = []
    ways = [("relay", "rate")] + [("peer to client", "down")] * args.down
    for (way, key), size in itertools.product(ways, (100, 1200)):
        k = f"{key}_{size}"
        rows += [
            (f"{way} {size} B: delivered pkt/s", "higher", get(k, "delivered_pps"), ",.0f"),
            (f"{way} {size} B: lossless pkt/s", "higher", get(k, "lossless_pps"), ",.0f"),
            (f"{way} {size} B: offered pkt/s", "", get(k, "offered_pps"), ",.0f"),
            (f"{way} {size} B: loss %", "lower", get(k, "loss_percent"), ".1f"),
            (f"{way} {size} B: Mbit/s delivered", "higher", get(k, "delivered_mbit_s"), ",.0f"),
            (f"{way} {size} B: server CPU %", "", get(k, "server_cpu_percent"), ".0f"),
            (
                f"{way} {size} B: server CPU us/packet",
                "lower",
                get(k, "server_cpu_us_per_packet"),
                ".2f",
            ),
            (
                f"{way} {size} B: pkt per CPU-second",
                "higher",
                get(k, "delivered_per_cpu_second"),
                ",.0f",
            ),
        ]
    rows += [
        ("setup sequential: allocs/s", "higher", get("setup", "seq_allocs_per_s"), ",.0f"),
        ("setup sequential: p50 ms", "lower", get("setup", "seq_latency_p50_ms"), ".2f"),
        ("setup sequential: p99 ms", "lower", get("setup", "seq_latency_p99_ms"), ".2f"),
        ("setup concurrent (64): allocs/s", "higher", get("setup", "conc_allocs_per_s"), ",.0f"),
        ("setup concurrent (64): p50 ms", "lower", get("setup", "conc_latency_p50_ms"), ".2f"),
        ("setup concurrent (64): p99 ms", "lower", get("setup", "conc_latency_p99_ms"), ".2f"),
        ("setup concurrent (64): failed", "lower", get("setup", "conc_failed"), ".0f"),
    ]
    for count in memory_counts:
        m = f"memory_{count}"
        rows += [
            (f"memory @{count}: allocations made", "", get(m, "allocations"), ",.0f"),
            (f"memory @{count}: bytes/allocation", "lower", get(m, "bytes_per_allocation"), ",.0f"),
            (f"memory @{count}: RSS after, MiB", "lower", get(m, "rss_after_mib"), ".1f"),
            (f"memory @{count}: fds/allocation", "", get(m, "fds_per_allocation"), ".2f"),
        ]

    print(
        f"\nTURN relay on loopback, {args.workers} worker(s) each, "
        f"{os.cpu_count()} CPUs; relay: median of {repeat} runs of {seconds:g} s; "
        f"{n_seq} sequential and "
        f"{n_conc} concurrent allocations\n"
    )
    width = max(len(r[0]) for r in rows) + 2
    ours = servers[1:]
    head = f"{'':{width}}" + "".join(f"{n:>{max(14, len(n) + 2)}}" for n in servers)
    head += "".join(f"{n + '/coturn':>{max(16, len(n) + 9)}}" for n in ours) + "  better"
    print(head)
    print("-" * len(head))
    for label, better, f, spec in rows:
        a = f(results.get("coturn", {}))
        line = f"{label:{width}}{fmt(a, spec):>14}"
        ratios = ""
        for n in ours:
            b = f(results.get(n, {}))
            ratio = b / a if a and b is not None and a == a and b == b else None
            line += f"{fmt(b, spec):>{max(14, len(n) + 2)}}"
            ratios += f"{fmt(ratio, '.2f'):>{max(16, len(n) + 9)}}"
        print(f"{line}{ratios}  {better}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
