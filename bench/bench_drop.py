"""Benchmark: one attack dropped three ways — L4Drop in XDP, an nftables rule, a
user-space reader — with real packets across a veth pair.

The attack is a memcached reflection: UDP from port 11211 to 192.0.2.2:5000, the
payload starting (after memcached's 8-byte frame header) ``VALUE ``.  Namespace
``ae-bdrop-XXXXXX-a`` sends it; ``-b`` drops it, in one of these ways:

- ``xdp``: L4Drop in native XDP on b's veth, one rule (port and signature); counted
  by the rule's counter.
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
share a CPU.  Per way, the best of ``--rounds`` runs:

- **dropped/s** — the drop counter over the send's wall time;
- **receive CPU per packet** — the CPU time of the run (the sender's and the reader's
  own, from ``time.process_time``; plus ``ksoftirqd``'s, in 10 ms ticks) per packet
  sent, minus the baseline's: what the drop path costs the receiving side.

And the XDP program's own time on the same frame, with ``BPF_PROG_TEST_RUN``.

Needs root, clang, bpftool, nft.  Run: ``python bench/bench_drop.py`` (two to three
minutes; ``--senders kernel`` for the first half).  Every run is bounded in count or
time; the namespaces are removed at the end.
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


def _softirqd_ticks() -> int:
    total = 0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        if "(ksoftirqd/" in stat:
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
        self, way: str, sent: int, dropped: int, cpu: float, seconds: float, extra: str = ""
    ) -> None:
        self.way, self.sent, self.dropped, self.cpu, self.seconds = way, sent, dropped, cpu, seconds
        self.extra = extra

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

    def send_kernel(self, count: int) -> tuple[int, float, float]:
        """``count`` frames from the in-kernel generator: (sent, seconds, CPU seconds)."""
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
            prog.send_live(f, count)
            return count, time.monotonic() - t0, time.process_time() - cpu0

    def send_python(self, seconds: float) -> tuple[int, float, float]:
        out = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.a,
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
        if sender == "kernel":
            sent, elapsed, cpu = lab.send_kernel(int(KERNEL_PPS * seconds))
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
            extra = f"socket buffer overflows: {_udp_rcvbuf_errors(b) - rcvbuf0:,}"
        cpu += (_softirqd_ticks() - ticks0) / os.sysconf("SC_CLK_TCK")
        if l4 is not None:
            dropped = sum(c.packets for c in l4.counters())
        elif way.startswith("nft"):
            dropped = _nft_count(b)
        return Result(way, sent, dropped, cpu, elapsed, extra)
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
    "kernel": "baseline,xdp,nft-ingress,nft-prerouting,user",
    "python": "baseline,xdp,xdp-generic,nft-ingress,nft-prerouting,user",
}


def table(sender: str, results: dict[str, Result], rounds: int) -> None:
    what = {
        "kernel": "in-kernel sender (XDP live frames, bpf_redirect into the veth)",
        "python": "Python sender (AF_PACKET, sendmmsg of 64)",
    }[sender]
    print(f"\n{what}, best of {rounds}")
    base_ns = results["baseline"].cpu_ns if "baseline" in results else 0.0
    print(f"{'way':<15} {'sent/s':>11} {'dropped/s':>11} {'CPU ns/pkt':>10} {'receive ns/pkt':>14}")
    for way, r in results.items():
        recv = 0.0 if way == "baseline" else r.cpu_ns - base_ns
        print(
            f"{way:<15} {r.sent / r.seconds:>11,.0f} {r.rate:>11,.0f} {r.cpu_ns:>10,.0f} "
            f"{recv:>14,.0f}  {r.extra}"
        )
    x = results.get("xdp")
    if x is None:
        return
    for other in ("xdp-generic", "nft-ingress", "nft-prerouting", "user"):
        o = results.get(other)
        if o is None:
            continue
        rx_x, rx_o = x.cpu_ns - base_ns, o.cpu_ns - base_ns
        ratio_cpu = rx_o / rx_x if rx_x > 0 else float("inf")
        print(
            f"xdp / {other}: dropped/s × {x.rate / max(o.rate, 1):.2f}, "
            f"receive CPU per packet ÷ {ratio_cpu:.1f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
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
    if not 0 < args.seconds <= 10 or not 0 < args.rounds <= 5:
        ap.error("at most 10 seconds and 5 rounds a way")

    from anyedge.edge.l4drop import L4Drop
    from anyedge.edge.rules import parse_rules

    size = len(frame(bytes(6), bytes(6), "203.0.113.1"))
    print(f"memcached reflection, {size}-byte frames; {os.cpu_count()} CPUs")
    lab = Lab()
    try:
        for sender in args.senders.split(","):
            results: dict[str, Result] = {}
            for way in WAYS[sender].split(","):
                runs = [run_once(lab, sender, way, args.seconds) for _ in range(args.rounds)]
                best = max(runs, key=lambda r: r.rate)
                cheapest = min(runs, key=lambda r: r.cpu_ns)  # the least disturbed run
                best.cpu = cheapest.cpu_ns * best.sent / 1e9
                results[way] = best
            table(sender, results, args.rounds)
    finally:
        lab.close()

    with L4Drop() as l4:
        l4.replace(parse_rules(RULES))
        f = frame(bytes(6), bytes(6), "203.0.113.7")
        prog_ns = min(l4.program.test_run(f, repeat=200_000).duration_ns for _ in range(5))
    print(f"\nL4Drop's program alone (BPF_PROG_TEST_RUN): {prog_ns} ns per packet")


if __name__ == "__main__":
    main()
