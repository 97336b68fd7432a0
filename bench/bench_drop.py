"""Benchmark: one attack dropped three ways — L4Drop in XDP, an nftables rule, a
user-space reader — with real packets across a veth pair.

The attack is a memcached reflection: UDP from port 11211 to 192.0.2.2:5000, the
payload starting (after memcached's 8-byte frame header) ``VALUE ``.  Namespace
``ae-bdrop-XXXXXX-a`` sends it; ``-b`` drops it, in one of these ways:

- ``xdp``: L4Drop in native XDP on b's veth, one rule (port and signature); counted
  by the rule's counter.
- ``xdp-floor`` (kernel sender): a program that drops every frame, in native XDP:
  the floor of the XDP way, what the veth's poll and returning the frame cost with a
  program that costs nothing; ``xdp`` minus it is L4Drop's own part.
- ``xdp-generic``: the same in generic XDP (on the socket buffer, in
  ``netif_receive_skb``; Python sender only).
- ``nft-ingress``: an nftables rule in the netdev ``ingress`` hook of b's veth, same
  match (``udp sport 11211 @ih,64,48 "VALUE "``), ``counter drop``.
- ``nft-prerouting``: the same rule in the ``ip`` family's ``prerouting`` hook at
  priority ``raw``.
- ``user``: a Python process reads the datagrams from a UDP socket bound to port
  5000, checks the signature and discards them; what it read is what it dropped
  (what it could not read the kernel drops at its socket buffer, shown apart).
- ``baseline``: nothing receives — the cost of sending alone.

Two senders, each for a fixed count or time:

- ``kernel`` (first): an XDP program run with ``BPF_PROG_TEST_RUN`` in live-frames
  mode (``bpf/trafficgen.bpf.c``, Linux 5.18) redirects 1,000,000 frames per second
  asked for into a's veth.  The frames cross as XDP frames: native XDP on b sees them
  before any socket buffer exists, as in a NIC driver, and the other ways get a socket
  buffer built by veth (b runs an XDP program that passes everything, which turns on
  the veth's receive path for redirected frames).  Baseline: no program on b, so the
  veth refuses the frames at once.
- ``python``: a packet socket (``AF_PACKET``, ``sendmmsg`` of 64 prebuilt frames per
  call, from 256 spoofed sources, through ctypes) for ``--seconds``.  The sender builds
  a socket buffer per frame, so XDP on b has nothing to save; the sender is the
  bottleneck.  Baseline: b's veth down.

On a veth the receiving side runs on the sending CPU (inside the send), so the two
share a CPU.  The method, chosen for a shared machine where other work runs beside:

- **Interleaved rounds.**  Every way runs once per round, in an order that rotates from
  round to round, so that what else the machine does falls on every way alike; each
  figure is the **median over the rounds**, with the lowest and highest.  Ratios are
  taken within a round (XDP against nftables measured a few seconds apart) and their
  median reported: never the best of one way against the best of another.
- **CPU per packet, timed by the kernel** (in-kernel sender): ``BPF_PROG_TEST_RUN``
  returns its own time per frame, which holds the generator, the redirect and the
  receiving veth's NAPI poll — run in the same call when the batch's bottom halves are
  enabled again — and leaves out the time the task is rescheduled, so other work on
  the CPU does not count.  The baseline's time (the generator alone) is subtracted:
  **receive ns/pkt** is what the drop path costs the receiving side.  The sender is
  pinned to one CPU, and the softirq time that CPU's ``ksoftirqd`` took (work left
  over from the call, in 4 ms ticks) is shown apart; the reader's CPU time (``user``)
  is added to its way.
- **CPU per packet from process time** (both senders): the sender's and the reader's
  CPU time (``time.process_time``) plus the pinned CPU's ``ksoftirqd``, per packet —
  for the Python sender the only measure, and for the kernel sender a check on the
  first.
- **Drop capacity**: ``1 / receive ns`` — dropped packets per second of one CPU given
  to the receiving side; the target's measure.
- **Drop rate**: **dropped/s**, the counter over the send's wall time, under the same
  offered load (the same frames, as fast as the one CPU sends them): its ratio is shown
  too, per round and of the medians.  It holds the sender's own time (the same for
  every way, and in the kernel sender's case about as large as XDP's receive cost) and
  any time the machine gave to other work meanwhile, so it understates what separates
  the ways; the load average is printed with every round.

Hooks: nftables in the netdev ``ingress`` hook is the fair comparison (the earliest
netfilter hook, the one a modern setup uses for this); ``prerouting`` at priority
``raw`` is where an iptables-era setup (``-t raw -A PREROUTING``) drops.  XDP is native
(in the veth's NAPI poll, on the XDP frame: as in a NIC driver), and generic for the
Python sender (after a socket buffer exists).  With the kernel sender the nftables and
user ways also run an XDP program that passes everything (a veth takes redirected
frames only with one attached): a few ns of theirs that a NIC would not charge.

And the XDP program's own time on the same frame, with ``BPF_PROG_TEST_RUN``.

Needs root, clang, bpftool, nft.  Run: ``python bench/bench_drop.py`` (about four
minutes at the defaults: 5 rounds of 2 s; ``--senders kernel`` for the first half).
Every run is bounded in count or time; the namespaces are removed at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import ipaddress
import os
import re
import secrets
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

ADDR_A, ADDR_B, PORT = "192.0.2.1", "192.0.2.2", 5000
BATCH = 64
SIGNATURE = b"VALUE "
PAYLOAD = b"\x00\x01\x00\x00\x00\x01\x00\x00VALUE k 0 4096\r\n" + b"x" * 40
RULES = """\
rules:
  - name: memcached-reflection
    protocol: udp
    source_ports: 11211
    payload: {offset: 8, text: "VALUE "}
"""
MATCH = "udp sport 11211 @ih,64,48 0x56414c554520 counter drop"  # "VALUE " at 8


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(dst_mac: bytes, src_mac: bytes, src: str) -> bytes:
    """Ethernet + IPv4 (checksummed) + UDP (checksum 0: none, allowed in IPv4)."""
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(ADDR_B).packed
    udp = struct.pack("!HHHH", 11211, PORT, 8 + len(PAYLOAD), 0) + PAYLOAD
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, s, d)
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return dst_mac + src_mac + b"\x08\x00" + hdr + udp


# -- the sender and the reader, each a process inside its namespace --------------------


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_Iovec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("hdr", _Msghdr), ("len", ctypes.c_uint))


def send(ifname: str, dst_mac: str, seconds: float) -> None:
    """Blast the attack out of ``ifname`` for ``seconds``; print how many were sent."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    src_mac = Path(f"/sys/class/net/{ifname}/address").read_text().strip()
    frames = [
        frame(
            bytes.fromhex(dst_mac.replace(":", "")),
            bytes.fromhex(src_mac.replace(":", "")),
            f"203.0.113.{i}",
        )
        for i in range(256)
    ]
    bufs = [ctypes.create_string_buffer(f, len(f)) for f in frames]
    batches = []
    for start in range(0, 256, BATCH):
        iovs = (_Iovec * BATCH)()
        msgs = (_Mmsghdr * BATCH)()
        for j in range(BATCH):
            b = bufs[start + j]
            iovs[j] = _Iovec(ctypes.cast(b, ctypes.c_void_p), len(b))
            msgs[j].hdr.iov = ctypes.pointer(iovs[j])
            msgs[j].hdr.iovlen = 1
        batches.append((iovs, msgs))
    sent, fd = 0, s.fileno()
    cpu0 = time.process_time()
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        for _ in range(16):
            n = libc.sendmmsg(fd, batches[i % len(batches)][1], BATCH, 0)
            i += 1
            if n < 0:
                err = ctypes.get_errno()
                if err not in (105, 11):  # ENOBUFS, EAGAIN: count what went
                    raise OSError(err, os.strerror(err))
            else:
                sent += n
    print(sent, time.process_time() - cpu0, flush=True)


def read(seconds: float) -> None:
    """Read and discard the attack on port 5000 until ``seconds`` pass with the sender."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((ADDR_B, PORT))
    s.settimeout(0.2)
    buf = bytearray(2048)
    print("ready", flush=True)
    n = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    cpu0 = time.process_time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop:
        try:
            got = s.recv_into(buf)
        except TimeoutError:
            continue
        if got >= 14 and buf[8:14] == SIGNATURE:
            n += 1
    print(n, time.process_time() - cpu0, flush=True)


# -- the run -------------------------------------------------------------------------


CPU = (os.cpu_count() or 1) - 1  # the CPU the sender is pinned to


def stats_on() -> bool:
    """Whether the kernel times every BPF program run now (someone's
    ``kernel.bpf_stats_enabled`` or ``BPF_ENABLE_STATS``, another benchmark's say): two
    clock reads a run, on every program of the machine, which inflates every way here
    (the test run's floor goes from about 27 to about 105 ns on this machine)."""
    return Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip() != "0"


def stats_state() -> str:
    return "BPF run-time statistics " + ("ON (figures inflated)" if stats_on() else "off")


def _softirqd_ticks() -> int:
    """CPU ticks of the pinned CPU's ksoftirqd."""
    total = 0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        if f"(ksoftirqd/{CPU})" in stat:
            fields = stat.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def _nft(ns: str, script: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True, check=True
    )


def _nft_count(ns: str) -> int:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "list", "ruleset"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(int(m) for m in re.findall(r"packets (\d+)", out))


def _udp_rcvbuf_errors(ns: str) -> int:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


class Result:
    def __init__(
        self,
        way: str,
        sent: int,
        dropped: int,
        cpu: float,
        seconds: float,
        kernel_ns: float = float("nan"),
        softirqd: float = 0.0,
        extra: str = "",
    ) -> None:
        self.way, self.sent, self.dropped, self.cpu, self.seconds = way, sent, dropped, cpu, seconds
        self.kernel_ns = kernel_ns  # the test run's own time per frame, plus a reader's CPU
        self.softirqd = softirqd  # seconds the pinned CPU's ksoftirqd took
        self.extra = extra
        self.stats_on = False  # BPF run-time statistics were on at its start or end

    @property
    def rate(self) -> float:
        return self.dropped / self.seconds

    @property
    def cpu_ns(self) -> float:
        return 1e9 * self.cpu / max(self.sent, 1)


class Lab:
    """The two namespaces and, for the kernel sender, the generator loaded in ``a``."""

    def __init__(self) -> None:
        from anyedge.adapters import netns
        from anyedge.edge import build
        from anyedge.edge.libbpf import BpfObject

        base = "ae-bdrop-" + secrets.token_hex(3)
        self.a, self.b = f"{base}-a", f"{base}-b"
        self.gen: BpfObject | None = None
        try:
            netns.add(self.a)
            netns.add(self.b)
            netns.veth(self.a, "eth0", self.b, "eth0")
            netns.batch(self.a, [f"addr add {ADDR_A}/24 dev eth0"])
            netns.batch(self.b, [f"addr add {ADDR_B}/24 dev eth0"])
            self.mac_a = netns.run(self.a, ["cat", "/sys/class/net/eth0/address"]).strip()
            self.mac_b = netns.run(self.b, ["cat", "/sys/class/net/eth0/address"]).strip()
            self.gen = BpfObject(build.object_path("trafficgen"))
            with netns.entered(self.a):
                ifindex = socket.if_nametoindex("eth0")
            self.gen.map("tg_config").update(ctypes.c_uint32(0), ctypes.c_uint32(ifindex))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        from anyedge.adapters import netns

        if self.gen is not None:
            self.gen.close()
        for ns in (self.a, self.b):
            if netns.exists(ns):
                netns.remove(ns)

    def send_kernel(self, count: int) -> tuple[int, float, float, float]:
        """``count`` frames from the in-kernel generator: (sent, seconds, CPU seconds,
        the kernel's time per frame in ns)."""
        from anyedge.adapters import netns

        assert self.gen is not None
        f = frame(
            bytes.fromhex(self.mac_b.replace(":", "")),
            bytes.fromhex(self.mac_a.replace(":", "")),
            "203.0.113.7",
        )
        prog = self.gen.program("trafficgen")
        with netns.entered(self.a):
            cpu0, t0 = time.process_time(), time.monotonic()
            ns = prog.send_live(f, count)
            return count, time.monotonic() - t0, time.process_time() - cpu0, float(ns)

    def send_python(self, seconds: float) -> tuple[int, float, float]:
        out = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.a,
                "taskset",
                "-c",
                str(CPU),
                sys.executable,
                __file__,
                "--send",
                self.mac_b,
                str(seconds),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 30,
        ).stdout
        sent, cpu = out.split()[-2:]
        return int(sent), seconds, float(cpu)


def run_once(lab: Lab, sender: str, way: str, seconds: float) -> Result:
    from anyedge.adapters import netns
    from anyedge.edge.l4drop import L4Drop
    from anyedge.edge.rules import parse_rules

    b = lab.b
    l4 = None
    reader = None
    passing = False
    extra = ""
    try:
        if way in ("nft-ingress", "nft-prerouting", "user") and sender == "kernel":
            # frames redirected into a veth reach the peer only with its NAPI on, which
            # an XDP program turns on: one that passes everything
            assert lab.gen is not None
            with netns.entered(b):
                lab.gen.program("xdp_pass").attach_xdp(socket.if_nametoindex("eth0"), "native")
            passing = True
        if way == "baseline":
            if sender == "python":
                netns.batch(b, ["link set eth0 down"])
        elif way == "xdp-floor":
            assert lab.gen is not None
            with netns.entered(b):
                lab.gen.program("xdp_drop").attach_xdp(socket.if_nametoindex("eth0"), "native")
            passing = True  # detached the same way
        elif way in ("xdp", "xdp-generic"):
            l4 = L4Drop()
            l4.replace(parse_rules(RULES))
            l4.attach("eth0", netns=b, mode="native" if way == "xdp" else "generic")
        elif way == "nft-ingress":
            _nft(
                b,
                "table netdev ae_bench {\n chain in {\n  type filter hook ingress device "
                f"eth0 priority -500;\n  {MATCH}\n }}\n}}\n",
            )
        elif way == "nft-prerouting":
            _nft(
                b,
                "table ip ae_bench {\n chain pre {\n  type filter hook prerouting "
                f"priority raw;\n  {MATCH}\n }}\n}}\n",
            )
        elif way == "user":
            reader = subprocess.Popen(
                ["ip", "netns", "exec", b, sys.executable, __file__, "--read", str(seconds + 10.0)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert reader.stdout is not None
            assert reader.stdout.readline().strip() == "ready"
        rcvbuf0 = _udp_rcvbuf_errors(b)
        ticks0 = _softirqd_ticks()
        kernel_ns = float("nan")
        timed = stats_on()
        if sender == "kernel":
            sent, elapsed, cpu, kernel_ns = lab.send_kernel(int(KERNEL_PPS * seconds))
        else:
            sent, elapsed, cpu = lab.send_python(seconds)
        dropped = sent  # baseline: freed by the veth, counted nowhere we read
        if reader is not None:
            time.sleep(0.3)  # let it drain its socket buffer
            reader.send_signal(signal.SIGTERM)
            assert reader.stdout is not None
            read_s, read_cpu = reader.stdout.read().split()[-2:]
            reader.wait(timeout=10)
            dropped, cpu = int(read_s), cpu + float(read_cpu)
            kernel_ns += 1e9 * float(read_cpu) / max(sent, 1)
            extra = f"socket buffer overflows: {_udp_rcvbuf_errors(b) - rcvbuf0:,}"
        softirqd = (_softirqd_ticks() - ticks0) / os.sysconf("SC_CLK_TCK")
        cpu += softirqd
        if l4 is not None:
            dropped = sum(c.packets for c in l4.counters())
        elif way.startswith("nft"):
            dropped = _nft_count(b)
        result = Result(way, sent, dropped, cpu, elapsed, kernel_ns, softirqd, extra)
        result.stats_on = timed or stats_on()
        return result
    finally:
        if reader is not None and reader.poll() is None:
            reader.kill()
            reader.wait()
        if l4 is not None:
            l4.close()
        if passing:
            from anyedge.edge.libbpf import detach_xdp

            with netns.entered(b):
                detach_xdp(socket.if_nametoindex("eth0"), "native")
        if way.startswith("nft"):
            subprocess.run(["ip", "netns", "exec", b, "nft", "flush", "ruleset"], check=True)
        if way == "baseline" and sender == "python":
            netns.batch(b, ["link set eth0 up"])


KERNEL_PPS = 1_000_000  # frames the kernel sender sends per second asked for
WAYS = {
    "kernel": "baseline,xdp-floor,xdp,nft-ingress,nft-prerouting,user",
    "python": "baseline,xdp,xdp-generic,nft-ingress,nft-prerouting,user",
}


def _med(xs: list[float]) -> str:
    """Median [lowest–highest]."""
    return f"{statistics.median(xs):,.0f} [{min(xs):,.0f}–{max(xs):,.0f}]"


def table(sender: str, rounds: list[dict[str, Result]]) -> dict[str, float]:
    """Print a sender's medians over its rounds; return the median ratios."""
    what = {
        "kernel": "in-kernel sender (XDP live frames, bpf_redirect into the veth)",
        "python": "Python sender (AF_PACKET, sendmmsg of 64)",
    }[sender]
    print(f"\n{what}: median [lowest–highest] of {len(rounds)} rounds")
    ways = list(rounds[0])
    timed = sender == "kernel"

    def recv(r: dict[str, Result], way: str, kernel: bool) -> float:
        x, b = r[way], r["baseline"]
        return x.kernel_ns - b.kernel_ns if kernel else x.cpu_ns - b.cpu_ns

    cols = "kernel ns/pkt  receive ns/pkt" if timed else "receive ns/pkt"
    print(f"{'way':<15} {'dropped/s':>27} {'process CPU ns/pkt':>25} {cols:>28}  ksoftirqd s")
    for way in ways:
        rs = [r[way] for r in rounds]
        line = f"{way:<15} {_med([x.rate for x in rs]):>27} {_med([x.cpu_ns for x in rs]):>25}"
        if timed:
            line += f" {_med([x.kernel_ns for x in rs]):>22}"
        if way != "baseline":
            line += f" {_med([recv(r, way, timed) for r in rounds]):>22}"
        else:
            line += f" {'':>22}"
        line += f"  {statistics.median(x.softirqd for x in rs):.2f}  {rs[-1].extra}"
        print(line)
    ratios: dict[str, float] = {}
    if "xdp" not in ways:
        return ratios
    if "xdp-floor" in ways:
        floor = [recv(r, "xdp-floor", timed) for r in rounds]
        part = [recv(r, "xdp", timed) - f for r, f in zip(rounds, floor, strict=True)]
        print(
            f"XDP's floor (a program dropping everything): {_med(floor)} ns/pkt; L4Drop's "
            f"part, xdp − floor: {_med(part)} ns/pkt by round"
        )
    for other in ("xdp-generic", "nft-ingress", "nft-prerouting", "user"):
        if other not in ways:
            continue
        per_round = [recv(r, other, timed) / recv(r, "xdp", timed) for r in rounds]
        proc = [recv(r, other, False) / recv(r, "xdp", False) for r in rounds]
        med = statistics.median(per_round)
        ratios[other] = med
        # the same from the medians of each way (a round's baseline drifts: both kept)
        x_med = statistics.median(recv(r, "xdp", timed) for r in rounds)
        o_med = statistics.median(recv(r, other, timed) for r in rounds)
        print(
            f"{other} ÷ xdp, receive CPU per packet: {med:.1f} "
            f"[{min(per_round):.1f}–{max(per_round):.1f}] by round, {o_med / x_med:.1f} "
            "of the medians"
            + (f" (process time: {statistics.median(proc):.1f})" if timed else "")
            + f"; drops per CPU-second: xdp {1e3 / x_med:.2f} M, {other} {1e3 / o_med:.2f} M"
        )
        rate = [r["xdp"].rate / r[other].rate for r in rounds]
        x_rate = statistics.median(r["xdp"].rate for r in rounds)
        o_rate = statistics.median(r[other].rate for r in rounds)
        print(
            f"  xdp ÷ {other}, dropped/s under the same offered load: {statistics.median(rate):.1f}"
            f" [{min(rate):.1f}–{max(rate):.1f}] by round, "
            f"{x_rate / o_rate:.1f} of the medians"
        )
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--senders", default="kernel,python")
    ap.add_argument("--send", nargs=2, metavar=("DST_MAC", "SECONDS"), help=argparse.SUPPRESS)
    ap.add_argument("--read", metavar="SECONDS", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.send:
        send("eth0", args.send[0], float(args.send[1]))
        return
    if args.read:
        read(float(args.read))
        return
    if not 0 < args.seconds <= 10 or not 3 <= args.rounds <= 9:
        ap.error("at most 10 seconds a run, and 3 to 9 rounds")

    from anyedge.edge import build
    from anyedge.edge.l4drop import L4Drop
    from anyedge.edge.libbpf import BpfObject
    from anyedge.edge.rules import parse_rules

    size = len(frame(bytes(6), bytes(6), "203.0.113.1"))
    print(
        f"memcached reflection, {size}-byte frames; {os.cpu_count()} CPUs, sender on CPU "
        f"{CPU}; Linux {os.uname().release}; {args.rounds} rounds of {args.seconds:g} s; "
        f"load average {os.getloadavg()[0]:.1f}; {stats_state()}"
    )
    os.sched_setaffinity(0, {CPU})  # the in-kernel sender, and its veth's softirq
    lab = Lab()
    try:
        for sender in args.senders.split(","):
            ways = WAYS[sender].split(",")
            rounds: list[dict[str, Result]] = []
            loads = []
            for i in range(2 * args.rounds):  # rounds left out are run again, up to twice
                if len(rounds) == args.rounds:
                    break
                load = os.getloadavg()[0]
                order = ways[i % len(ways) :] + ways[: i % len(ways)]  # rotates each round
                got = {w: run_once(lab, sender, w, args.seconds) for w in order}
                if any(r.stats_on for r in got.values()):
                    print(f"round {i + 1} left out: BPF run-time statistics were on during it")
                    continue
                loads.append(load)
                rounds.append({w: got[w] for w in ways})
            if len(rounds) < 3:
                print(f"{sender} sender: fewer than 3 rounds without BPF statistics; no table")
                continue
            table(sender, rounds)
            print("load average at each round's start: " + ", ".join(f"{x:.1f}" for x in loads))
    finally:
        lab.close()

    f = frame(bytes(6), bytes(6), "203.0.113.7")
    print(f"\nBefore the program alone: {stats_state()}")
    with L4Drop() as l4:
        l4.replace(parse_rules(RULES))
        runs = [l4.program.test_run(f, repeat=200_000).duration_ns for _ in range(5)]
    gen = BpfObject(build.object_path("trafficgen"))
    try:
        floor = [gen.program("xdp_drop").test_run(f, repeat=200_000).duration_ns for _ in range(5)]
    finally:
        gen.close()
    print(
        f"\nL4Drop's program alone (BPF_PROG_TEST_RUN): {_med([float(x) for x in runs])} ns; "
        f"a program dropping everything, the test run's own cost: "
        f"{_med([float(x) for x in floor])} ns"
    )
    print(f"load average at the end {os.getloadavg()[0]:.1f}; {stats_state()}")


if __name__ == "__main__":
    main()
