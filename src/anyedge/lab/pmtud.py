"""The Path MTU lab: clients behind a 1,280-byte link, a site of servers behind ECMP.

::

    client ──(MTU 1280)── r ──(1500)── g ══ br0 ══ s0, s1, ... (anycast on lo)
    100.64.0.0/16          198.51.100.0/30  192.0.2.0/24
    2001:db8:c::/64        2001:db8:1::/64  2001:db8:2::/64

* ``c``, the clients: one link of MTU 1,280 to their router and routes that advertise
  a larger MSS (``advmss``: 1,460 over IPv4, 1,440 over IPv6) — the misconfigured
  tunnel users of the IPv6 MTU post.  Every flow of a measurement takes a client
  address of its own, so that one flow's learnt path MTU (kept per destination by the
  server's kernel) does not help another;
* ``r``, their router: sends ICMP frag-needed / Packet Too Big for every server packet
  over 1,280 bytes (its ICMP rate limits off, so that the lab measures the site);
* ``g``, the site router: the anycast addresses (:data:`ANYCAST4`, :data:`ANYCAST6`)
  routed to the servers by one ECMP multipath route each, hashed on the L4 tuple
  (``fib_multipath_hash_policy = 1``, both families) — so a PTB, which has no ports,
  is hashed on its own addresses and lands on one server, whoever holds the flow;
* ``s0``...: the servers, the anycast addresses on ``lo``, :mod:`.bigreply` answering
  1,400 bytes over TCP and UDP from the anycast address, and (``balancer=True``) the
  XDP load balancer of :mod:`anyedge.edge.balancer` on ``eth0`` with one
  :class:`~anyedge.balance.Table` over the servers, so a flow's server is the table's
  first hop whatever ECMP chose (:meth:`PmtudLab.set_table` changes it on every
  server, as the edge agent does).  ``anyedge pmtud`` runs on each server when
  :meth:`PmtudLab.start_pmtud` is called, deciding by the site file or by the table the
  server's balancer has in force (``table="balancer"``).

Why not the BGP lab's sites with servers (:mod:`.edge`): they have no link narrower
than 1,500 bytes and no router to send PTBs, and need speakers and an agent; this
fixture builds only the path the problem needs, from the same namespace helpers
(:mod:`anyedge.adapters.netns`) and the same balancer.

Namespaces are ``<prefix>-c``, ``-r``, ``-g``, ``-s<i>``; the processes' logs go to a
temporary directory (:attr:`PmtudLab.dir`).  :meth:`PmtudLab.close` ends every process
started in the namespaces, removes them and the directory.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..adapters import netns
from ..balance.table import Table
from ..edge.balancer import Balancer

ANYCAST4, ANYCAST6 = "203.0.113.10", "2001:db8:a::10"
PORT = 8080
CLIENT_MTU = 1280
GROUP = 33


def server_mac(i: int) -> str:
    return f"02:ae:5e:00:00:{i:02x}"


def server_ip(i: int, family: int) -> str:
    return f"192.0.2.{11 + i}" if family == 4 else f"2001:db8:2::{11 + i:x}"


class PmtudLab:
    """The lab's namespaces and processes (a context manager)."""

    def __init__(self, prefix: str, servers: int = 3, *, balancer: bool = True) -> None:
        if not 2 <= servers <= 16:
            raise ValueError("2-16 servers")
        self.prefix = prefix
        self.n = servers
        self.client, self.router, self.gateway = f"{prefix}-c", f"{prefix}-r", f"{prefix}-g"
        self.servers = [f"{prefix}-s{i}" for i in range(servers)]
        self.dir = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
        self.table = Table.build([1.0] * servers)
        self._balancers: list[Balancer] = []
        self._pmtud: list[int] = []
        self._runs = 0
        self._next_client = {4: 0, 6: 0}
        self.use_balancer = balancer

    # -- building ------------------------------------------------------------------------

    def __enter__(self) -> PmtudLab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        c, r, g = self.client, self.router, self.gateway
        for ns in (c, r, g, *self.servers):
            netns.add(ns)
            netns.sysctl(ns, {"net.ipv6.conf.all.accept_dad": "0"})
        netns.veth(c, "eth0", r, "eth1")
        netns.veth(r, "eth0", g, "eth1")
        netns.batch(
            c,
            [
                f"link set eth0 mtu {CLIENT_MTU}",
                "addr add 100.64.0.2/16 dev eth0",
                "addr add 2001:db8:c::2/64 dev eth0 nodad",
                "route add default via 100.64.0.1 advmss 1460",
                "route add default via 2001:db8:c::1 advmss 1440",
            ],
        )
        netns.batch(
            r,
            [
                f"link set eth1 mtu {CLIENT_MTU}",
                "addr add 100.64.0.1/16 dev eth1",
                "addr add 2001:db8:c::1/64 dev eth1 nodad",
                "addr add 198.51.100.2/30 dev eth0",
                "addr add 2001:db8:1::2/64 dev eth0 nodad",
                "route add default via 198.51.100.1",
                "route add default via 2001:db8:1::1",
            ],
        )
        netns.sysctl(
            r,
            {
                "net.ipv4.icmp_ratelimit": "0",
                "net.ipv6.icmp.ratelimit": "0",
                "net.ipv4.icmp_msgs_per_sec": "100000",
                "net.ipv4.icmp_msgs_burst": "100000",
            },
        )
        netns.sysctl(
            g,
            {"net.ipv4.fib_multipath_hash_policy": "1", "net.ipv6.fib_multipath_hash_policy": "1"},
        )
        cmds = [
            "link add br0 type bridge",
            "link set br0 up",
            "addr add 192.0.2.1/24 dev br0",
            "addr add 2001:db8:2::1/64 dev br0 nodad",
            "addr add 198.51.100.1/30 dev eth1",
            "addr add 2001:db8:1::1/64 dev eth1 nodad",
            "route add 100.64.0.0/16 via 198.51.100.2",
            "route add 2001:db8:c::/64 via 2001:db8:1::2",
        ]
        for i, s in enumerate(self.servers):
            netns.veth(g, f"sv{i}", s, "eth0")
            cmds.append(f"link set sv{i} master br0")
            netns.batch(
                s,
                [
                    "link set eth0 down",
                    f"link set eth0 address {server_mac(i)}",
                    "link set eth0 up",
                    f"addr add {server_ip(i, 4)}/24 dev eth0",
                    f"addr add {server_ip(i, 6)}/64 dev eth0 nodad",
                    f"addr add {ANYCAST4}/32 dev lo",
                    f"addr add {ANYCAST6}/128 dev lo",
                    "route add default via 192.0.2.1",
                    "route add default via 2001:db8:2::1",
                ],
            )
        hops4 = " ".join(f"nexthop via {server_ip(i, 4)} dev br0" for i in range(self.n))
        hops6 = " ".join(f"nexthop via {server_ip(i, 6)} dev br0" for i in range(self.n))
        cmds += [f"route add {ANYCAST4}/32 {hops4}", f"route add {ANYCAST6}/128 {hops6}"]
        netns.batch(g, cmds)
        for s in self.servers:
            self._spawn_wait(
                s,
                [
                    "-m",
                    "anyedge.lab.bigreply",
                    "serve",
                    "--addr",
                    ANYCAST4,
                    "--addr",
                    ANYCAST6,
                    "--port",
                    str(PORT),
                    "--size",
                    "1400",
                ],
                f"{s}-bigreply.log",
            )
        if self.use_balancer:
            macs = [server_mac(i) for i in range(self.n)]
            for i, s in enumerate(self.servers):
                lb = Balancer(self_index=i)
                self._balancers.append(lb)
                lb.set_servers(macs)
                lb.set_services([ANYCAST4, ANYCAST6])
                lb.replace(self.table)
                lb.attach("eth0", netns=s)

    def _spawn_wait(self, ns: str, args: list[str], log_name: str, ready: str = "ready") -> int:
        log = self.dir / log_name
        pid = netns.spawn(ns, [sys.executable, *args], log)
        end = time.monotonic() + 20
        while ready not in (log.read_text() if log.exists() else ""):
            if not netns.alive(pid) or time.monotonic() > end:
                raise RuntimeError(f"{args}: not ready: {log.read_text() if log.exists() else ''}")
            time.sleep(0.05)
        return pid

    # -- pmtud ---------------------------------------------------------------------------

    def site_file(self) -> Path:
        path = self.dir / "site.json"
        servers = [{"mac": server_mac(i), "weight": 1} for i in range(self.n)]
        path.write_text(json.dumps({"seed": 0, "servers": servers}))
        return path

    def set_table(self, table: Table) -> None:
        """Put ``table`` in force in every server's balancer."""
        for lb in self._balancers:
            lb.replace(table)
        self.table = table

    def start_pmtud(
        self,
        mode: str,
        *,
        src_rate: float = 1.1,
        iface_rate: float = 10.0,
        table: str = "site",
    ) -> None:
        """``anyedge pmtud run`` on every server (ended by :meth:`stop_pmtud`); in flow
        mode by the site file (``table="site"``) or the balancer's table."""
        self.stop_pmtud()
        site = self.site_file()
        for s in self.servers:
            args = [
                "-m",
                "anyedge",
                "pmtud",
                "run",
                "--iface",
                "eth0",
                "--group",
                str(GROUP),
                "--mode",
                mode,
                "--src-rate",
                str(src_rate),
                "--iface-rate",
                str(iface_rate),
                "--metrics",
                "9109",
            ]
            if table == "balancer":
                args += ["--table", "balancer"]
            elif mode == "flow":
                args += ["--site", str(site)]
            self._runs += 1  # a log of its own: "ready" in an old one would not be this one's
            self._pmtud.append(self._spawn_wait(s, args, f"{s}-pmtud-{self._runs}.log"))

    def pmtud_counts(self) -> list[dict[str, Any]]:
        """Each server's daemon counters (its metrics endpoint) and PTB arrivals, once
        they have stopped changing (read again until two reads agree)."""
        code = (
            "import json,urllib.request\n"
            "from anyedge.edge.pmtud_daemon import arrived\n"
            "t=urllib.request.urlopen('http://127.0.0.1:9109/metrics',timeout=5).read().decode()\n"
            "c={}\n"
            "for ln in t.splitlines():\n"
            "  if ln.startswith('anyedge_pmtud_packets_total{'):\n"
            "    c[ln.split('reason=\"')[1].split('\"')[0]]=int(float(ln.rsplit(' ',1)[1]))\n"
            "  elif ln.startswith('anyedge_pmtud_copies_total{'):\n"
            "    c['copies']=int(float(ln.rsplit(' ',1)[1]))\n"
            "  elif ln.startswith('anyedge_pmtud_overruns_total{'):\n"
            "    c['overruns']=int(float(ln.rsplit(' ',1)[1]))\n"
            "  elif ln.startswith('anyedge_pmtud_table_reloads_total{'):\n"
            "    r=ln.split('result=\"')[1].split('\"')[0]\n"
            "    c['reloads_'+r]=int(float(ln.rsplit(' ',1)[1]))\n"
            "c['arrived']=arrived()\n"
            "print(json.dumps(c))\n"
        )
        last: list[dict[str, Any]] = []
        for _ in range(20):
            now = [json.loads(netns.run(s, [sys.executable, "-c", code])) for s in self.servers]
            if now == last:
                break
            last = now
            time.sleep(0.2)
        return last

    def stop_pmtud(self) -> None:
        netns.stop(self._pmtud)
        self._pmtud = []

    # -- measuring -----------------------------------------------------------------------

    def clients(self, count: int, family: int) -> list[str]:
        """``count`` fresh client addresses (never used by an earlier flow)."""
        start = self._next_client[family]
        self._next_client[family] += count
        if family == 4:
            if self._next_client[family] > 50000:
                raise RuntimeError("out of IPv4 client addresses")
            addrs = [f"100.64.{1 + (i >> 8)}.{i & 0xFF}" for i in range(start, start + count)]
            netns.batch(self.client, [f"addr add {a}/16 dev eth0" for a in addrs])
        else:
            addrs = [f"2001:db8:c::1:{i:x}" for i in range(start, start + count)]
            netns.batch(self.client, [f"addr add {a}/64 dev eth0 nodad" for a in addrs])
        return addrs

    def probe(
        self,
        proto: str,
        family: int,
        flows: int = 0,
        timeout: float = 3.0,
        *,
        sources: list[str] | None = None,
        sport: int = 0,
    ) -> dict[str, Any]:
        """``flows`` concurrent flows of ``proto`` to the anycast address, each from a
        fresh client address (or from ``sources``, addresses :meth:`clients` gave, and
        source port ``sport``: the same flows again): which got their 1,400-byte answer
        and which were black-holed."""
        if sources is None:
            sources = self.clients(flows, family)
        target = ANYCAST4 if family == 4 else ANYCAST6
        out = netns.run(
            self.client,
            [
                sys.executable,
                "-m",
                "anyedge.lab.bigreply",
                "probe",
                "--target",
                target,
                "--port",
                str(PORT),
                "--proto",
                proto,
                "--sources",
                ",".join(sources),
                "--timeout",
                str(timeout),
                "--sport",
                str(sport),
            ],
            timeout=timeout + 30,
        )
        result: dict[str, Any] = json.loads(out)
        return result

    def flood(self, family: int, count: int, sources: int) -> dict[str, Any]:
        """``count`` spoofed PTBs from ``sources`` addresses, sent by the clients' router
        to the site router as fast as it can (:mod:`.ptbgen`)."""
        mac = netns.run(self.gateway, ["cat", "/sys/class/net/eth1/address"]).strip()
        out = netns.run(
            self.router,
            [
                sys.executable,
                "-m",
                "anyedge.lab.ptbgen",
                "--iface",
                "eth0",
                "--dst-mac",
                mac,
                "--family",
                str(family),
                "--anycast",
                ANYCAST4 if family == 4 else ANYCAST6,
                "--client",
                "100.64.250.1" if family == 4 else "2001:db8:c::ffff",
                "--count",
                str(count),
                "--sources",
                str(sources),
            ],
            timeout=120,
        )
        result: dict[str, Any] = json.loads(out)
        return result

    def forget_path_mtus(self) -> None:
        """Every server forgets the path MTUs it has learnt (the kernel's route
        exceptions), so the next large reply to any client needs a PTB again."""
        for s in self.servers:
            for family in ("-4", "-6"):
                netns.run(s, ["ip", family, "route", "flush", "cache"])

    def ptbs_sent(self) -> int:
        """ICMP frag-needed and Packet Too Big the clients' router has sent so far."""
        out = netns.run(self.router, ["nstat", "-az", "-j"])
        kernel = json.loads(out)["kernel"]
        return int(kernel.get("IcmpOutDestUnreachs", 0)) + int(kernel.get("Icmp6OutPktTooBigs", 0))

    # -- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        self.stop_pmtud()
        for lb in self._balancers:
            lb.detach()
            lb.close()
        self._balancers = []
        for ns in (*self.servers, self.gateway, self.router, self.client):
            netns.remove(ns)
        shutil.rmtree(self.dir, ignore_errors=True)
