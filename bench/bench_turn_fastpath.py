"""Benchmark: TURN's kernel fast path beside coturn and anyedge in user space, with real
packets through namespaces, in one run.

    client ns  100.64.0.2 --eth0-- 100.64.0.1 [relay ns] 100.64.1.1 --eth1-- peer ns 100.64.1.2

Three relays in turn in the relay namespace, each with one worker: ``coturn``
(turnserver 4.6, ``relay-threads=1``), ``anyedge`` (``turn serve``, user space) and
``anyedge-xdp`` (the same with ``fast_path: {interfaces: [eth0, eth1]}``).  For each, a
real client (``turn_peers.TurnUdpClient``, in the client namespace) allocates and
binds a channel to the peer; then the in-kernel generator (``bpf/trafficgen.bpf.c``,
``BPF_PROG_TEST_RUN`` in live-frames mode, as ``bench_drop.py`` uses it) sends that
client's ChannelData -- the same 5-tuple, checksums right -- into the client's veth as
fast as it can for ``--seconds``, with 100- and 1,200-byte payloads.  A Python sender
would be the bottleneck (under 100k datagrams/s here); this one offers millions per
second, so each relay is measured at its own limit.

- **delivered/s**: frames the peer's interface received (its ``rx_packets``) over the
  time from the first frame sent to the last one delivered;
- **server CPU/pkt**: the relay process's CPU time (``/proc/PID/stat``: user and
  system, every thread) per delivered packet, plus for ``anyedge-xdp`` the XDP
  program's own run time per packet (``BPF_ENABLE_STATS``: the kernel's
  ``run_time_ns``/``run_cnt`` of ``turn_fast``).  Neither counts the kernel's work around
  them that no process is charged for (the veth's receive and transmit, softirq): for
  the user-space relays that is the UDP receive path, for the fast path the redirect;
- **program time**: the fast path's program alone on the same frames, with
  ``BPF_PROG_TEST_RUN`` (the median of 2,000 single runs each way, arriving on the
  relay's ``eth0``: a repeated run would see the frame its first run rewrote in place,
  which no entry matches; a single run's duration includes some 0.2-0.3 us of the
  kernel's own around the program, a miss's time);
- **machine CPU/pkt**: every CPU's busy time (``/proc/stat``) over the run per delivered
  packet -- sender, softirq and whatever else runs on this shared machine included --
  for context only.

The relay's interface that meets the client runs an XDP program in every case (``xdp_pass``
for the user-space relays), which a veth needs to take redirected frames.  The median of
``--repeat`` runs is shown, and the ratios to coturn of the same run.  Needs root, clang,
bpftool, ethtool and coturn.  Run: ``python bench/bench_turn_fastpath.py`` (about a
minute; ``--json FILE``).  Every process started is ended by its pid and the namespaces
are removed at the end.

``--relay-by`` picks what is relayed: ``channel`` (the default, above), ``send`` (the
client has a permission and no channel, and the generator sends its Send indications --
XOR-PEER-ADDRESS then DATA, no FINGERPRINT -- which leave for the peer as plain
datagrams) or ``data`` (the generator, loaded a second time for the peer's ``eth0``,
sends the peer's datagrams to the relayed address, which reach the client as Data
indications: delivered/s is then the client's ``rx_packets``); ``--fingerprint`` adds
FINGERPRINT to the Send indications (the fast path checks its CRC-32).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

import turn_peers as tp  # noqa: E402
from anyedge.adapters import netns  # noqa: E402
from anyedge.edge import build  # noqa: E402
from anyedge.edge.libbpf import BpfObject  # noqa: E402

SERVERS = ("coturn", "anyedge", "anyedge-xdp")
MODES = ("channel", "send", "data")
SIZES = (100, 1200)
SERVER, CLIENT, PEER = "100.64.0.1", ("100.64.0.2", 40000), ("100.64.1.2", 6000)
USER, PASSWORD = "bench", "bench-password-1"
TICKS = os.sysconf("SC_CLK_TCK")
BATCH = 50_000  # frames per live-frames call
FRAME_MAX = 1536  # the generator's frame record (struct tg_frame)
BPF_ENABLE_STATS, BPF_STATS_RUN_TIME = 32, 0


class Lab:
    """The three namespaces, the generator loaded for the client's ``eth0``."""

    def __init__(self) -> None:
        base = f"aetfb{os.getpid()}"
        self.c, self.r, self.p = f"{base}-c", f"{base}-r", f"{base}-p"
        self.gen: BpfObject | None = None
        self.gen_p: BpfObject | None = None
        self.relayed = (SERVER, 50000)  # the client's relayed address, once allocated
        self.fingerprint = False  # Send indications with FINGERPRINT (--fingerprint)
        for ns in (self.c, self.r, self.p):
            netns.add(ns)
        netns.veth(self.c, "eth0", self.r, "eth0")
        netns.veth(self.r, "eth1", self.p, "eth0")
        netns.batch(self.c, ["addr add 100.64.0.2/24 dev eth0", "route add default via 100.64.0.1"])
        netns.batch(self.r, ["addr add 100.64.0.1/24 dev eth0", "addr add 100.64.1.1/24 dev eth1"])
        netns.batch(self.p, ["addr add 100.64.1.2/24 dev eth0", "route add default via 100.64.1.1"])
        for ns in (self.c, self.p):  # whole checksums on the wire; NAPI for XDP frames
            netns.run(ns, ["ethtool", "-K", "eth0", "tx", "off", "gro", "on"])
        self.mac_c = netns.run(self.c, ["cat", "/sys/class/net/eth0/address"]).strip()
        self.mac_r = netns.run(self.r, ["cat", "/sys/class/net/eth0/address"]).strip()
        self.mac_p = netns.run(self.p, ["cat", "/sys/class/net/eth0/address"]).strip()
        self.mac_r1 = netns.run(self.r, ["cat", "/sys/class/net/eth1/address"]).strip()
        self.gen = BpfObject(build.object_path("trafficgen"))
        self.gen_p = BpfObject(build.object_path("trafficgen"))
        for gen, ns in ((self.gen, self.c), (self.gen_p, self.p)):
            with netns.entered(ns):
                ifindex = _ifindex("eth0")
            gen.map("tg_config").update(ctypes.c_uint32(0), ctypes.c_uint32(ifindex))

    def close(self) -> None:
        for gen in (self.gen, self.gen_p):
            if gen is not None:
                gen.close()
        for ns in (self.c, self.r, self.p):
            netns.remove(ns)

    def delivered(self, mode: str = "channel") -> int:
        """Frames received by the far end's ``eth0``: the peer's, or the client's for
        ``data``."""
        with netns.entered(self.c if mode == "data" else self.p):
            for line in Path("/proc/thread-self/net/dev").read_text().splitlines():
                name, _, rest = line.partition(":")
                if name.strip() == "eth0":
                    return int(rest.split()[1])
        raise RuntimeError("no eth0 in the peer's namespace")

    def frame(self, size: int, mode: str = "channel") -> bytes:
        """The generator's frame: the client's ChannelData or Send indication, or for
        ``data`` the peer's datagram to the relayed address."""
        if mode == "data":
            return bytes(
                Ether(src=self.mac_p, dst=self.mac_r1)
                / IP(src=PEER[0], dst=self.relayed[0])
                / UDP(sport=PEER[1], dport=self.relayed[1])
                / bytes(size)
            )
        if mode == "send":
            tid = bytes(range(12))
            attrs = [
                (tp.Attr.XOR_PEER_ADDRESS, tp.xor_address(PEER, tid)),
                (tp.Attr.DATA, bytes(size)),
            ]
            payload = tp.encode_message(
                tp.Method.SEND, tp.Class.INDICATION, tid, attrs, fingerprint=self.fingerprint
            )
        else:
            payload = tp.channel_data(0x4001, bytes(size))
        pkt = (
            Ether(src=self.mac_c, dst=self.mac_r)
            / IP(src=CLIENT[0], dst=SERVER)
            / UDP(sport=CLIENT[1], dport=3478)
            / payload
        )
        return bytes(pkt)

    def send(self, frame: bytes, seconds: float, mode: str = "channel") -> tuple[int, float]:
        """Frames for ``seconds``: (sent, the wall time it took).  Each is written whole
        before it leaves (``trafficgen_fill``): the fast path rewrites frames in place."""
        gen = self.gen_p if mode == "data" else self.gen
        assert gen is not None
        record = (ctypes.c_uint8 * (4 + FRAME_MAX))()
        ctypes.memmove(record, len(frame).to_bytes(4, "little") + frame, 4 + len(frame))
        gen.map("tg_frame").update(ctypes.c_uint32(0), record)
        prog, sent = gen.program("trafficgen_fill"), 0
        with netns.entered(self.p if mode == "data" else self.c):
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                prog.send_live(frame, BATCH)
                sent += BATCH
            return sent, time.monotonic() - t0


def _ifindex(name: str) -> int:
    import socket

    return socket.if_nametoindex(name)


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _machine_busy() -> float:
    cols = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(cols[:8]) - cols[3] - cols[4]) / TICKS  # all but idle and iowait


def _xdp_stats() -> tuple[int, int]:
    out = subprocess.run(
        ["bpftool", "prog", "show", "--json"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    progs = [p for p in json.loads(out or "[]") if p.get("name") == "turn_fast"]
    return (
        sum(p.get("run_time_ns", 0) for p in progs),
        sum(p.get("run_cnt", 0) for p in progs),
    )


def _enable_stats() -> int:
    """BPF_ENABLE_STATS: programs' run time is counted while the returned fd is open."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 4)(BPF_STATS_RUN_TIME)
    fd = libc.syscall(321, BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "BPF_ENABLE_STATS")
    return int(fd)


def start(lab: Lab, kind: str, work: Path) -> int:
    work.mkdir(parents=True, exist_ok=True)
    if kind == "coturn":
        conf = work / "turnserver.conf"
        conf.write_text(
            "\n".join(
                [
                    f"listening-ip={SERVER}",
                    "listening-port=3478",
                    f"relay-ip={SERVER}",
                    "min-port=50000",
                    "max-port=50999",
                    "allowed-peer-ip=100.64.1.0-100.64.1.255",
                    "no-cli",
                    "no-tls",
                    "no-dtls",
                    "no-tcp-relay",
                    "relay-threads=1",
                    "lt-cred-mech",
                    "realm=bench.test",
                    f"user={USER}:{PASSWORD}",
                    f"userdb={work / 'turndb'}",
                    f"log-file={work / 'turnserver.log'}",
                    f"pidfile={work / 'turnserver.pid'}",
                    "simple-log",
                ]
            )
            + "\n"
        )
        return netns.spawn(lab.r, ["turnserver", "-c", str(conf)], work / "out.log")
    fast = "fast_path: {interfaces: [eth0, eth1]}\n" if kind == "anyedge-xdp" else ""
    conf = work / "turn.yaml"
    conf.write_text(
        f"""realm: bench.test
listen: [{{transport: udp, address: {SERVER}, port: 3478}}]
relay: {{ipv4: {SERVER}, ports: [50000, 50999]}}
auth: {{users: {{{USER}: {PASSWORD}}}, fleet_keys: [bench-fleet-key]}}
limits: {{allow_peers: [100.64.1.0/24]}}
workers: 1
metrics: {{address: 127.0.0.1, port: 9641}}
{fast}"""
    )
    env = {"PYTHONPATH": str(ROOT / "src")}
    argv = [sys.executable, "-m", "anyedge", "turn", "serve", "-c", str(conf)]
    return netns.spawn(lab.r, argv, work / "out.log", env)


def _wait(what: str, ok: Callable[[], bool], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > end:
            raise RuntimeError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def _fast_entries(lab: Lab, what: str = "channels") -> float:
    import urllib.request

    try:
        with netns.entered(lab.r):
            text = urllib.request.urlopen("http://127.0.0.1:9641/metrics", timeout=2).read()
    except OSError:
        return 0.0
    for line in text.decode().splitlines():
        if line.startswith(f"anyedge_turn_fast_path_{what}{{"):
            return float(line.split()[-1])
    return 0.0


def measure(lab: Lab, pid: int, size: int, seconds: float, mode: str) -> dict[str, float]:
    frame = lab.frame(size, mode)
    d0, c0, m0, x0 = lab.delivered(mode), _cpu(pid), _machine_busy(), _xdp_stats()
    t0 = time.monotonic()
    sent, _ = lab.send(frame, seconds, mode)
    last, t_last, quiet_since = lab.delivered(mode), time.monotonic(), time.monotonic()
    while time.monotonic() - quiet_since < 0.5:  # until the relay has caught up
        time.sleep(0.05)
        now = lab.delivered(mode)
        if now != last:
            last, t_last, quiet_since = now, time.monotonic(), time.monotonic()
    delivered = last - d0
    x1 = _xdp_stats()
    cpu = _cpu(pid) - c0
    xdp_ns = (x1[0] - x0[0]) / max(x1[1] - x0[1], 1)
    per = max(delivered, 1)
    return {
        "sent": sent,
        "delivered": delivered,
        "delivered_per_s": delivered / (t_last - t0),
        "process_cpu_ns_per_pkt": 1e9 * cpu / per,
        "xdp_ns_per_pkt": xdp_ns if x1[1] > x0[1] else 0.0,
        "server_cpu_ns_per_pkt": 1e9 * cpu / per + (xdp_ns if x1[1] > x0[1] else 0.0),
        "machine_cpu_ns_per_pkt": 1e9 * (_machine_busy() - m0) / per,
    }


def run_server(
    lab: Lab, kind: str, work: Path, seconds: float, repeat: int, mode: str = "channel"
) -> dict[str, Any]:
    assert lab.gen is not None
    xdp_pass = None
    near = "eth1" if mode == "data" else "eth0"  # where the generator's frames arrive
    if kind != "anyedge-xdp":  # NAPI on the relay's veth for the generator's frames
        with netns.entered(lab.r):
            xdp_pass = lab.gen.program("xdp_pass")
            xdp_pass.attach_xdp(_ifindex(near), "native")
    pid = start(lab, kind, work / kind)
    try:
        with netns.entered(lab.c):
            _wait(f"{kind} answering", lambda: tp.stun_ping((SERVER, 3478)))
            client = tp.TurnUdpClient((SERVER, 3478), USER, PASSWORD, local=CLIENT)
        with netns.entered(lab.p):
            import socket

            peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with client, peer:
            peer.bind(PEER)
            relayed = lab.relayed = client.allocate()
            if mode == "channel":
                client.channel_bind(0x4001, PEER)
            else:
                client.create_permission(PEER)
            peer.sendto(b"hello", relayed)  # both neighbours resolved before the run
            client.receive(timeout=3.0)
            if kind == "anyedge-xdp":
                what = "channels" if mode == "channel" else "permissions"
                _wait(f"the {what} in the kernel", lambda: _fast_entries(lab, what) == 1)
            out: dict[str, Any] = {}
            for size in SIZES:
                runs = [measure(lab, pid, size, seconds, mode) for _ in range(repeat)]
                out[str(size)] = {k: statistics.median(r[k] for r in runs) for k in runs[0]} | {
                    "runs": runs
                }
            return out
    finally:
        netns.stop([pid], grace=10)
        if xdp_pass is not None:
            from anyedge.edge.libbpf import detach_xdp

            with netns.entered(lab.r):
                detach_xdp(_ifindex(near), "native")


def program_time(lab: Lab, mode: str = "channel") -> dict[str, float]:
    """ns per run of ``turn_fast`` on the bench's frames, each way (BPF_PROG_TEST_RUN)."""
    from anyedge.edge.turnfast import RelayedChannel, RelayedPermission, TurnFast

    relayed = lab.relayed = ("100.64.0.1", 50000)
    ch = RelayedChannel(CLIENT, (SERVER, 3478), 0x4001, relayed, PEER)
    perm = RelayedPermission(CLIENT, (SERVER, 3478), relayed, PEER[0])
    out = {}
    with netns.entered(lab.r), TurnFast() as fast:
        if mode == "channel":
            fast.install(ch, time.monotonic_ns() + 3600 * 10**9)
        else:
            fast.permit(perm, time.monotonic_ns() + 3600 * 10**9)
        ifindex = _ifindex("eth0")

        def single(frame: bytes) -> float:
            return float(
                statistics.median(
                    fast.program.test_run(frame, 1, ifindex).duration_ns for _ in range(2000)
                )
            )

        for size in SIZES:
            back = bytes(
                Ether(src=lab.mac_c, dst=lab.mac_r)
                / IP(src=PEER[0], dst=relayed[0])
                / UDP(sport=PEER[1], dport=relayed[1])
                / bytes(size)
            )
            out[f"to_peer {size} B"] = single(
                lab.frame(size, "send" if mode != "channel" else mode)
            )
            out[f"to_client {size} B"] = single(back)
        stranger = Ether(src=lab.mac_p, dst=lab.mac_r1) / IP(src="100.64.1.99", dst=relayed[0])
        out["a miss"] = single(bytes(stranger / UDP(sport=1, dport=relayed[1]) / bytes(100)))
    return out


def table(results: dict[str, dict[str, Any]]) -> None:
    print(
        f"{'server':<12} {'bytes':>5} {'delivered/s':>12} {'x coturn':>8} "
        f"{'server ns/pkt':>13} {'x coturn':>8} {'(xdp ns)':>8} {'machine ns/pkt':>14}"
    )
    for kind, by_size in results.items():
        for size, r in by_size.items():
            base = results.get("coturn", {}).get(size)
            rate_x = r["delivered_per_s"] / base["delivered_per_s"] if base else float("nan")
            cpu_x = (
                r["server_cpu_ns_per_pkt"] / base["server_cpu_ns_per_pkt"] if base else float("nan")
            )
            print(
                f"{kind:<12} {size:>5} {r['delivered_per_s']:>12,.0f} {rate_x:>8.2f} "
                f"{r['server_cpu_ns_per_pkt']:>13,.0f} {cpu_x:>8.2f} "
                f"{r['xdp_ns_per_pkt']:>8,.0f} {r['machine_cpu_ns_per_pkt']:>14,.0f}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="sending time per run")
    ap.add_argument("--repeat", type=int, default=3, help="runs per size; the median is shown")
    ap.add_argument("--servers", nargs="+", default=list(SERVERS), choices=SERVERS)
    ap.add_argument("--relay-by", choices=MODES, default="channel", help="what is relayed")
    ap.add_argument("--fingerprint", action="store_true", help="Send indications carry FINGERPRINT")
    ap.add_argument("--json", type=Path, help="write every run here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_turn_fastpath: needs root (namespaces, XDP)")
    lab = Lab()
    lab.fingerprint = args.fingerprint
    stats_fd = _enable_stats()
    results: dict[str, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="ae-bench-turnfast-") as tmp:
            for kind in args.servers:
                results[kind] = run_server(
                    lab, kind, Path(tmp), args.seconds, args.repeat, args.relay_by
                )
                print(f"{kind}: done", file=sys.stderr, flush=True)
        program = program_time(lab, args.relay_by)
    finally:
        os.close(stats_fd)
        lab.close()
    table(
        {
            k: {s: {n: v for n, v in r.items() if n != "runs"} for s, r in by.items()}
            for k, by in results.items()
        }
    )
    print(
        f"(relayed by {args.relay_by}; median of {args.repeat} runs of {args.seconds:g} s; "
        f"load: {os.getloadavg()[0]:.1f})"
    )
    print(
        "turn_fast alone (BPF_PROG_TEST_RUN, median of single runs), ns per packet: "
        + ", ".join(f"{k} {v:.0f}" for k, v in program.items())
    )
    if args.json:
        args.json.write_text(json.dumps({"servers": results, "program_ns": program}, indent=1))


if __name__ == "__main__":
    main()
