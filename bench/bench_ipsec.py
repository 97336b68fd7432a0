"""Benchmark: anycast IPsec -- IKEv2 handshakes per second (ours beside strongSwan's
charon as the responder), ESP encryption and decryption throughput, and the time from a
Child SA's record written to the store to the SA usable on every replica.

1. **Handshakes.**  One client of our own (``anyedge.proto.ike.initiator``, in this
   process) runs complete IKE_SA_INIT + IKE_AUTH exchanges (ECP-256, AES-256-GCM,
   PRF-HMAC-SHA256, a PSK, one Child SA each with its own /32 selector), ``--window``
   in flight, over UDP to a responder in a network namespace of its own: first
   ``anyedge ipsec serve``, then charon (kernel-libipsec, its DoS thresholds raised so
   that one client address may have the window half-open).  The client's NAT detection
   hashes match no address, so both responders take it to be behind a NAT and set up
   UDP-encapsulated Child SAs (kernel-libipsec supports no others).  Handshakes per second =
   completed / elapsed; the ratio is ours / charon's.  The client costs CPU too (its
   own DH and key derivation), on the same 2 cores, so both rates are below each
   responder's own ceiling; the in-process line gives ours: the CPU time spent inside
   ``Responder.receive`` per handshake.
2. **ESP.**  ``EspEndpoint.encrypt`` and ``decrypt`` of 1,400-byte IPv4 packets (AES-256-
   GCM, in process, one core): packets/s and Gbit/s of inner packets, beside the floor
   of the same work: ``AESGCM.encrypt`` / ``decrypt`` of the same bytes alone (ratio =
   ours / the bare cipher).
3. **Distribution.**  An embedded store's writer and ``--replicas`` replicas (threads of
   this process, each with an ``SaInstaller`` and an ``EspEndpoint``); ``--sas`` Child SA
   records published one at a time (paced 100/s); for each, the time from just before
   the write to the moment it is installed on each replica: p50 / p99 / max.

Every process started is ended by its pid, every namespace made (``aeipb<pid>...``) is
removed.  Run: ``python bench/bench_ipsec.py`` (root; ``--quick`` for small sizes;
``--json FILE``).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from anyedge.adapters import netns  # noqa: E402
from anyedge.proto.esp import EspEndpoint  # noqa: E402
from anyedge.proto.ike import ChildSA, Responder, ResponderConfig, Selector  # noqa: E402
from anyedge.proto.ike import codec as c  # noqa: E402
from anyedge.proto.ike.initiator import Initiator  # noqa: E402
from ike_support import mirror  # noqa: E402
from ipsec_support import CHARON, PSK, STRONGSWAN_CONF, serve_argv  # noqa: E402

RESPONDER_CONF = """\
connections {
  bench {
    version = 2
    local_addrs = 192.0.2.1
    proposals = aes256gcm16-prfsha256-ecp256
    local { auth = psk
            id = edge.example }
    remote { auth = psk }
    children {
      net {
        local_ts = 198.51.100.0/24
        remote_ts = 100.64.0.0/10
        esp_proposals = aes256gcm16
      }
    }
  }
}
secrets {
  ike-any { secret = "%s" }
}
"""
DOS_LIMITS = """\
charon {
  cookie_threshold = 100000
  block_threshold = 100000
  init_limit_half_open = 0
}
"""


def sel(cidr: str) -> Selector:
    n = ipaddress.ip_network(cidr)
    return Selector(n.network_address.packed, n.broadcast_address.packed)


def host_ts(k: int) -> tuple[Selector, ...]:
    return (sel(f"{ipaddress.IPv4Address('100.64.0.0') + k}/32"),)


def responder_config() -> ResponderConfig:
    return ResponderConfig(
        {b"": PSK.encode()},
        (c.ID_FQDN, b"edge.example"),
        (sel("198.51.100.0/24"),),
        (sel("100.64.0.0/10"),),
        cookie_threshold=100_000,
    )


def handshakes_in_process(n: int) -> dict[str, float]:
    r = Responder(responder_config(), 0.0)
    spent = 0.0
    peer, local = ("192.0.2.2", 500), ("192.0.2.1", 500)
    for k in range(n):
        i = Initiator(PSK.encode(), b"customer.example", host_ts(k), (sel("198.51.100.0/24"),))
        req = i.sa_init()
        t = time.process_time()
        out = r.receive(0.0, req, peer, local)
        spent += time.process_time() - t
        i.take_sa_init(out[0].data)  # type: ignore[union-attr]
        req = i.auth()
        t = time.process_time()
        r.receive(0.0, req, peer, local)
        spent += time.process_time() - t
    return {"handshakes": n, "responder_cpu_s": spent, "per_second": n / spent}


def handshakes_over_udp(
    client_ns: str, n: int, window: int, timeout: float = 60.0
) -> dict[str, float]:
    """``n`` complete handshakes against 192.0.2.1:500, ``window`` in flight."""
    with netns.entered(client_ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("192.0.2.2", 500))
    sock.setblocking(False)
    pending: dict[bytes, tuple[Initiator, int]] = {}  # SPIi -> (initiator, step)
    started = done = failed = 0
    notes: set[str] = set()
    t0 = time.monotonic()

    def start() -> None:
        nonlocal started
        i = Initiator(
            PSK.encode(), b"customer.example", host_ts(started), (sel("198.51.100.0/24"),)
        )
        started += 1
        pending[i.spi_i] = (i, 1)
        sock.sendto(i.sa_init(fake_nat=True), ("192.0.2.1", 500))

    with sock:
        while started < min(window, n):
            start()
        while done + failed < n and time.monotonic() - t0 < timeout:
            if not select.select([sock], [], [], 1.0)[0]:
                continue
            while True:
                try:
                    data = sock.recv(65535)
                except BlockingIOError:
                    break
                spi_i = data[:8]
                if spi_i not in pending:
                    continue
                i, step = pending[spi_i]
                try:
                    if step == 1:
                        m = i.take_sa_init(data)
                        if m.find(c.Notify, c.COOKIE):
                            sock.sendto(i.sa_init(fake_nat=True), ("192.0.2.1", 500))
                            continue
                        if not i.sk_ei:
                            notes.update(str(p.type) for p in m.find(c.Notify))
                            raise c.IkeDecodeError("no SA")
                        pending[spi_i] = (i, 2)
                        sock.sendto(i.auth(), ("192.0.2.1", 500))
                        continue
                    m = i.open(data)
                    ok = bool(m.find(c.SA))
                    notes.update(str(p.type) for p in m.find(c.Notify))
                except (c.IkeDecodeError, IndexError):
                    ok = False
                del pending[spi_i]
                done, failed = done + ok, failed + (not ok)
                if started < n:
                    start()
    elapsed = time.monotonic() - t0
    if notes:
        print("  notifies seen:", sorted(notes), flush=True)
    return {"completed": done, "failed": failed, "seconds": elapsed, "per_second": done / elapsed}


def udp_comparison(n: int, window: int) -> dict[str, Any]:
    prefix = f"aeipb{os.getpid()}"
    cl, sv = prefix + "c", prefix + "s"
    pids: list[int] = []
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="aeipb") as tmp:
        d = Path(tmp)
        try:
            for ns in (cl, sv):
                netns.add(ns)
            netns.veth(cl, "wan", sv, "wan")
            netns.batch(cl, ["addr add 192.0.2.2/24 dev wan"])
            netns.batch(sv, ["addr add 192.0.2.1/24 dev wan", "addr add 198.51.100.1/32 dev lo"])
            (d / "psk").write_text(PSK)
            log = d / "edge.log"
            pid = netns.spawn(
                sv,
                serve_argv(d / "psk", "100.64.0.0/10", "aeipbt0", "--cookie-threshold", "100000"),
                log,
                env={"PYTHONPATH": str(ROOT / "src")},
            )
            pids.append(pid)
            _wait(lambda: '"ready"' in log.read_text(), pid, log)
            out["anyedge"] = handshakes_over_udp(cl, n, window)
            netns.stop([pid])
            (d / "strongswan.conf").write_text(STRONGSWAN_CONF.format(dir=d) + DOS_LIMITS)
            (d / "swanctl.conf").write_text(RESPONDER_CONF % PSK)
            shell = f"mount -t tmpfs tmpfs /run && exec {CHARON}"
            pid = netns.spawn(
                sv,
                ["unshare", "-m", "--propagation", "private", "sh", "-c", shell],
                d / "charon.out",
                env={"STRONGSWAN_CONF": str(d / "strongswan.conf")},
            )
            pids.append(pid)
            _wait(lambda: (d / "charon.vici").exists(), pid, d / "charon.out")
            subprocess.run(
                [
                    "swanctl",
                    "--load-all",
                    "--file",
                    str(d / "swanctl.conf"),
                    "--uri",
                    f"unix://{d}/charon.vici",
                ],
                check=True,
                capture_output=True,
            )
            out["strongswan"] = handshakes_over_udp(cl, n, window)
            if os.environ.get("AEIP_DEBUG"):
                print((d / "charon.log").read_text()[-3000:])
        finally:
            netns.stop(pids)
            for ns in (cl, sv):
                netns.remove(ns)
    out["ratio"] = out["anyedge"]["per_second"] / max(out["strongswan"]["per_second"], 1e-9)
    return out


def _wait(cond: Any, pid: int, log: Path) -> None:
    end = time.monotonic() + 20
    while not cond():
        if time.monotonic() > end or not netns.alive(pid):
            raise RuntimeError(f"did not start: {log.read_text()[-1500:]}")
        time.sleep(0.05)


def _child(spi: int) -> ChildSA:
    ts = (sel("203.0.113.0/24"),)
    return ChildSA(
        spi,
        spi + 1,
        os.urandom(36),
        os.urandom(36),
        ts,
        (sel("198.51.100.0/24"),),
        ("192.0.2.2", 4500),
        bytes(16),
        time.time(),
    )


def esp_throughput(packets: int) -> dict[str, Any]:
    ch = _child(0x1001)
    edge = EspEndpoint()
    edge.install(ch)
    peer = EspEndpoint()
    peer.install(mirror(ch))
    inner = (
        bytes([0x45, 0, 0x05, 0x78])
        + bytes(8)
        + ipaddress.IPv4Address("198.51.100.10").packed
        + ipaddress.IPv4Address("203.0.113.10").packed
        + os.urandom(1380)
    )
    now = time.time()
    for _ in range(1000):  # warm up
        edge.encrypt(inner, now)
    t = time.perf_counter()
    sealed = [edge.encrypt(inner, now)[1] for _ in range(packets)]  # type: ignore[index]
    enc = time.perf_counter() - t
    t = time.perf_counter()
    for p in sealed:
        peer.decrypt(p)
    dec = time.perf_counter() - t
    aead, nonce, aad = AESGCM(os.urandom(32)), os.urandom(12), os.urandom(8)
    plain = inner + b"\x00\x00\x04\x04"
    for _ in range(1000):
        aead.encrypt(nonce, plain, aad)
    t = time.perf_counter()
    cts = [aead.encrypt(nonce, plain, aad) for _ in range(packets)]
    bare_enc = time.perf_counter() - t
    t = time.perf_counter()
    for ct in cts:
        aead.decrypt(nonce, ct, aad)
    bare_dec = time.perf_counter() - t
    assert peer.counters.decrypted == packets
    bits = len(inner) * 8 * packets

    def rate(s: float) -> dict[str, float]:
        return {"packets_per_s": packets / s, "gbit_per_s": bits / s / 1e9}

    return {
        "packets": packets,
        "inner_bytes": len(inner),
        "encrypt": rate(enc),
        "decrypt": rate(dec),
        "bare_encrypt": rate(bare_enc),
        "bare_decrypt": rate(bare_dec),
        "ratio_encrypt": bare_enc / enc,
        "ratio_decrypt": bare_dec / dec,
    }


def distribution(sas: int, replicas: int) -> dict[str, Any]:
    from anyedge.store import EmbeddedReplica, EmbeddedWriter
    from anyedge.transit.ipsec_store import FleetKey, SaInstaller, publish

    fleet = FleetKey(os.urandom(32))
    lat: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="aeipb") as tmp,
        EmbeddedWriter(Path(tmp) / "s.db") as writer,
    ):
        reps = [EmbeddedReplica(writer.address) for _ in range(replicas)]
        eps = [EspEndpoint(k, replicas) for k in range(replicas)]
        inst = [SaInstaller(r, fleet, e.install, e.remove) for r, e in zip(reps, eps, strict=True)]
        try:
            for k in range(sas):
                t = time.perf_counter()
                seq = publish(writer, fleet, "up", _child(0x10000 + 2 * k))
                for i in inst:
                    i.wait(seq, 10)
                    lat.append(time.perf_counter() - t)
                time.sleep(0.01)
        finally:
            for i in inst:
                i.close()
            for r in reps:
                r.close()
    lat.sort()
    return {
        "sas": sas,
        "replicas": replicas,
        "p50_ms": 1e3 * statistics.median(lat),
        "p99_ms": 1e3 * lat[int(0.99 * (len(lat) - 1))],
        "max_ms": 1e3 * lat[-1],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    n = 200 if a.quick else 1000
    res: dict[str, Any] = {}
    res["in_process"] = handshakes_in_process(n)
    print(
        f"in process: {res['in_process']['per_second']:.0f} handshakes per responder CPU second",
        flush=True,
    )
    if os.geteuid() == 0 and Path(CHARON).exists():
        res["udp"] = udp_comparison(n, a.window)
        for name in ("anyedge", "strongswan"):
            r = res["udp"][name]
            print(
                f"{name:>10} over UDP: {r['per_second']:.0f} handshakes/s "
                f"({r['completed']} completed, {r['failed']} failed)",
                flush=True,
            )
        print(f"ratio anyedge/strongswan: {res['udp']['ratio']:.2f}")
    else:
        print("strongSwan comparison skipped (needs root and charon)")
    res["esp"] = esp_throughput(20_000 if a.quick else 100_000)
    e = res["esp"]
    for what in ("encrypt", "decrypt"):
        ours, bare = e[what], e["bare_" + what]
        print(
            f"ESP {what}: {ours['packets_per_s']:.0f} packets/s, {ours['gbit_per_s']:.2f} Gbit/s "
            f"(bare AES-GCM {bare['gbit_per_s']:.2f} Gbit/s, ratio {e['ratio_' + what]:.2f})"
        )
    res["distribution"] = distribution(50 if a.quick else 200, a.replicas)
    d = res["distribution"]
    print(
        f"store -> usable on {d['replicas']} replicas: p50 {d['p50_ms']:.2f} ms, "
        f"p99 {d['p99_ms']:.2f} ms, max {d['max_ms']:.2f} ms ({d['sas']} SAs)"
    )
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
