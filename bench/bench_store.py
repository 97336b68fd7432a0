"""Benchmark: the store's fan-out, the embedded back end beside etcd on the same machine.

For N = 1, 10 and 40 replicas (threads of this process, each a full replica with its own
connection: a TCP stream from the embedded fan-out, an HTTP watch stream from etcd), it
measures

- updates per second: one writer puts as fast as it can; the rate is the number of
  puts over the time until every replica has applied the last one;
- write-to-applied latency: a second run paced at a modest rate (``--rate``, default
  200 puts/s); for each put, the time from just before the call to the moment a
  replica applied it, over every replica; p50 and p99.

etcd is a real 3-member cluster on 127.0.0.1 (free ports, a temporary directory, ended
by pid at the end).  It prints each back end's numbers and the ratio embedded/etcd.
The machine is shared: read the ratios, not the absolute numbers.

Run: ``python bench/bench_store.py [--quick]`` (``--quick``: fewer writes).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anyedge.store import Batch, EmbeddedReplica, EmbeddedWriter, EtcdReplica, EtcdWriter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from store_support import EtcdCluster  # noqa: E402

Factory = Callable[[], tuple[Any, Callable[[], Any]]]


def run(make: Factory, n: int, writes: int, rate: float) -> tuple[float, float, float]:
    """(updates/s, p50 ms, p99 ms) for ``n`` replicas."""
    writer, new_replica = make()
    replicas = [new_replica() for _ in range(n)]
    applied: list[dict[int, float]] = [{} for _ in replicas]
    for r, out in zip(replicas, applied, strict=True):

        def record(b: Batch, out: dict[int, float] = out) -> None:
            out[b.seq] = time.perf_counter()

        r.watch("", callback=record)
    try:
        first = writer.put("warm", b"up")
        for r in replicas:
            assert r.wait(first, 60)
        # throughput: as fast as the writer goes, until the last replica has it all
        value = b"x" * 100
        t0 = time.perf_counter()
        for i in range(writes):
            last = writer.put(f"k/{i % 1000}", value)
        for r in replicas:
            assert r.wait(last, 300)
        ups = writes / (time.perf_counter() - t0)
        # latency: paced writes, each timed from just before the call to each replica
        sent: dict[int, float] = {}
        count = max(50, writes // 10)
        t0 = time.perf_counter()
        for i in range(count):
            pause = t0 + i / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            t = time.perf_counter()
            sent[writer.put(f"lat/{i % 100}", value)] = t
        for r in replicas:
            assert r.wait(max(sent), 300)
        lat = [(out[s] - t) * 1e3 for out in applied for s, t in sent.items()]
        q = statistics.quantiles(lat, n=100)
        return ups, q[49], q[98]
    finally:
        for r in replicas:
            r.close()
        writer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 writes per run, not 5,000")
    ap.add_argument("--rate", type=float, default=200.0, help="puts/s of the latency run")
    ap.add_argument("--replicas", default="1,10,40", help="replica counts, comma-separated")
    args = ap.parse_args()
    writes = 1_000 if args.quick else 5_000
    counts = [int(x) for x in args.replicas.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="anyedge-bench-store-"))
    cluster = None
    try:

        def embedded() -> tuple[Any, Callable[[], Any]]:
            w = EmbeddedWriter(tmp / f"{uuid.uuid4().hex}.db")
            return w, lambda: EmbeddedReplica(w.address)

        results: dict[str, dict[int, tuple[float, float, float]]] = {"embedded": {}}
        makers: dict[str, Factory] = {"embedded": embedded}
        if shutil.which("etcd"):
            (tmp / "etcd").mkdir()
            cluster = EtcdCluster(tmp / "etcd")
            cluster.wait_ready()
            urls = cluster.client_urls

            def etcd() -> tuple[Any, Callable[[], Any]]:
                prefix = f"/b-{uuid.uuid4().hex[:8]}/"
                return EtcdWriter(urls, prefix), lambda: EtcdReplica(urls, prefix)

            makers["etcd"] = etcd
            results["etcd"] = {}
        else:
            print("(no etcd binary: apt-get install etcd-server; etcd is left out)")
        for n in counts:
            for name, make in makers.items():
                ups, p50, p99 = run(make, n, writes, args.rate)
                results[name][n] = (ups, p50, p99)
                print(
                    f"{name:>8}, {n:>2} replicas: {ups:8,.0f} updates/s applied everywhere; "
                    f"write-to-applied p50 {p50:6.2f} ms, p99 {p99:7.2f} ms",
                    flush=True,
                )
            if "etcd" in results:
                e, c = results["embedded"][n], results["etcd"][n]
                print(
                    f"    ratio embedded/etcd at {n} replicas: updates/s x{e[0] / c[0]:.1f}, "
                    f"p50 x{e[1] / c[1]:.2f}, p99 x{e[2] / c[2]:.2f}",
                    flush=True,
                )
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
