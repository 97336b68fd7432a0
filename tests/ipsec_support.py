"""The IPsec interop lab: strongSwan (kernel-libipsec, ESP in user space) as the
customer's initiator in one namespace, ``anyedge ipsec serve`` in another, and a host
behind each side.

    hostc 203.0.113.10 -- 203.0.113.1 cust 192.0.2.2
      -- 192.0.2.1 edge 198.51.100.1 -- 198.51.100.10 hoste

Namespaces are ``aeip<pid><role>``; charon runs with its own strongswan.conf
(STRONGSWAN_CONF), its own vici socket in the lab directory and a private /run (its pid
file path is compiled in), and is ended by its pid like every process here.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from anyedge.adapters import netns
from anyedge.lab.verfploeter import echo_request, parse_reply

CHARON = "/usr/lib/ipsec/charon"
PSK = "correct horse battery staple"
STRONGSWAN_CONF = """\
charon {{
  load = random nonce openssl aes sha1 sha2 hmac gcm kdf pem pkcs1 pubkey x509 \
kernel-libipsec kernel-netlink socket-default vici updown
  port = 500
  port_nat_t = 4500
  retransmit_tries = 3
  retransmit_timeout = 1.0
  plugins {{
    vici {{ socket = unix://{dir}/charon.vici }}
  }}
  filelog {{
    log {{ path = {dir}/charon.log
          flush_line = yes
          default = 1
          ike = 2
          knl = 2
          net = 1 }}
  }}
}}
"""
SWANCTL_CONF = """\
connections {{
  edge {{
    version = 2
    local_addrs = 192.0.2.2
    remote_addrs = 192.0.2.1
    proposals = {proposals}
    encap = {encap}
    rekey_time = 0
    dpd_delay = 0
    local {{ auth = psk
            id = customer.example }}
    remote {{ auth = psk
             id = edge.example }}
    children {{
      net {{
        local_ts = 203.0.113.0/24
        remote_ts = 198.51.100.0/24
        esp_proposals = {esp}
        rekey_time = 0
        start_action = none
      }}
    }}
  }}
}}
secrets {{
  ike-edge {{
    id-1 = customer.example
    id-2 = edge.example
    secret = "{psk}"
  }}
}}
"""


def serve_argv(psk: Path, remote_ts: str, tun: str, *extra: str) -> list[str]:
    """``anyedge ipsec serve`` as the tests and the benchmark start it: the edge at
    192.0.2.1 (id edge.example), 198.51.100.0/24 behind it, ``remote_ts`` behind the
    customer."""
    return [
        sys.executable, "-m", "anyedge", "ipsec", "serve", "--listen", "192.0.2.1",
        "--psk-file", str(psk), "--id", "edge.example", "--local-ts", "198.51.100.0/24",
        "--remote-ts", remote_ts, "--tun", tun, *extra,
    ]  # fmt: skip


class IpsecLab:
    def __init__(
        self,
        root: Path,
        encap: bool = True,
        proposals: str = "aes256gcm16-prfsha256-ecp256",
        esp: str = "aes256gcm16",
        customer_psk: str = PSK,
        certs: bool = False,
    ) -> None:
        self.dir = root
        self.certs = certs
        self.prefix = f"aeip{os.getpid()}"
        self.ns = {r: f"{self.prefix}{r}" for r in ("c", "hc", "e", "he")}
        self.encap, self.proposals, self.esp, self.customer_psk = (
            encap,
            proposals,
            esp,
            customer_psk,
        )
        self.pids: list[int] = []
        self.vici = f"unix://{root}/charon.vici"
        self.status = root / "edge-status.json"

    def up(self) -> None:
        c, hc, e, he = (self.ns[r] for r in ("c", "hc", "e", "he"))
        for ns in self.ns.values():
            netns.add(ns)
        netns.veth(hc, "eth0", c, "lan")
        netns.veth(c, "wan", e, "wan")
        netns.veth(e, "lan", he, "eth0")
        netns.batch(hc, ["addr add 203.0.113.10/24 dev eth0", "route add default via 203.0.113.1"])
        netns.batch(c, ["addr add 203.0.113.1/24 dev lan", "addr add 192.0.2.2/24 dev wan"])
        netns.batch(e, ["addr add 192.0.2.1/24 dev wan", "addr add 198.51.100.1/24 dev lan"])
        netns.batch(
            he, ["addr add 198.51.100.10/24 dev eth0", "route add default via 198.51.100.1"]
        )
        (self.dir / "psk").write_text(PSK)
        (self.dir / "strongswan.conf").write_text(STRONGSWAN_CONF.format(dir=self.dir))
        conf = SWANCTL_CONF.format(
            proposals=self.proposals,
            encap="yes" if self.encap else "no",
            esp=self.esp,
            psk=self.customer_psk,
        )
        if self.certs:
            conf = self._write_certs(conf)
        (self.dir / "swanctl.conf").write_text(conf)

    def _write_certs(self, conf: str) -> str:
        """A CA, the edge's certificate and key (for ``serve --cert``) and the customer's,
        in strongSwan's credential directories (beside swanctl.conf); the connection then
        authenticates both sides with ECDSA certificates instead of the PSK."""
        from cryptography.hazmat.primitives import serialization as ser

        from ike_support import make_ca, make_cert

        ca = make_ca()
        edge, customer = make_cert(ca, "edge.example"), make_cert(ca, "customer.example")
        pem = ser.Encoding.PEM
        for sub in ("x509ca", "x509", "ecdsa"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "x509ca" / "ca.pem").write_bytes(ca[0].public_bytes(pem))
        (self.dir / "x509" / "customer.pem").write_bytes(customer[0].public_bytes(pem))
        (self.dir / "edge.pem").write_bytes(edge[0].public_bytes(pem))
        for key, path in ((customer[1], self.dir / "ecdsa" / "customer.key"),
                          (edge[1], self.dir / "edge.key")):  # fmt: skip
            path.write_bytes(
                key.private_bytes(pem, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption())
            )
        conf = conf.replace(
            "local { auth = psk", "local { auth = pubkey\n            certs = customer.pem"
        )
        return conf.replace("remote { auth = psk", "remote { auth = pubkey")

    def cert_args(self) -> tuple[str, ...]:
        d = self.dir
        return (
            "--cert",
            str(d / "edge.pem"),
            "--key",
            str(d / "edge.key"),
            "--ca",
            str(d / "x509ca" / "ca.pem"),
        )

    def start_edge(self, *extra: str) -> int:
        log = self.dir / "edge.log"
        pid = netns.spawn(
            self.ns["e"],
            serve_argv(
                self.dir / "psk", "203.0.113.0/24", "aeipt0", "--status", str(self.status), *extra
            ),
            log,
        )
        self.pids.append(pid)
        end = time.monotonic() + 20
        while '"ready"' not in log.read_text():
            if time.monotonic() > end or not netns.alive(pid):
                raise RuntimeError(f"anyedge ipsec serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        return pid

    def start_charon(self) -> int:
        log = self.dir / "charon.out"
        shell = f"mount -t tmpfs tmpfs /run && exec {CHARON}"
        pid = netns.spawn(
            self.ns["c"],
            ["unshare", "-m", "--propagation", "private", "sh", "-c", shell],
            log,
            env={"STRONGSWAN_CONF": str(self.dir / "strongswan.conf")},
        )
        self.pids.append(pid)
        end = time.monotonic() + 20
        while not (self.dir / "charon.vici").exists():
            if time.monotonic() > end or not netns.alive(pid):
                raise RuntimeError(f"charon did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        self.swanctl("--load-all", "--file", str(self.dir / "swanctl.conf"))
        return pid

    def swanctl(self, *args: str, timeout: float = 30) -> str:
        p = subprocess.run(
            ["swanctl", *args, "--uri", self.vici],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if p.returncode != 0:
            raise RuntimeError(f"swanctl {' '.join(args)}: {p.stdout}{p.stderr}")
        return p.stdout

    def edge_status(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.status.read_text()) if self.status.exists() else {}

    def wait_status(self, pred, timeout: float = 10.0) -> dict:  # type: ignore[no-untyped-def,type-arg]
        end = time.monotonic() + timeout
        while True:
            st = self.edge_status()
            if st and pred(st):
                return st
            if time.monotonic() > end:
                raise AssertionError(f"edge status never matched: {st}")
            time.sleep(0.05)

    def down(self) -> None:
        netns.stop(self.pids)
        for ns in self.ns.values():
            netns.remove(ns)
        shutil.rmtree(self.dir, ignore_errors=True)


def ping(ns: str, dst: str, seq: int = 1, timeout: float = 3.0) -> bool:
    """One ICMP echo from ``ns`` to ``dst`` over a raw socket: did the reply come?"""
    with netns.entered(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    with sock:
        ident = os.getpid() & 0xFFFF
        sock.sendto(echo_request(ident, seq), (dst, 0))
        deadline = time.monotonic() + timeout
        while select.select([sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
            reply, (src, _) = sock.recvfrom(2000)
            if src == dst and parse_reply(reply) == (ident, seq):
                return True
    return False


def tcp_stream(server_ns: str, client_ns: str, server_ip: str, size: int = 1 << 20) -> bytes:
    """Send ``size`` random bytes from ``client_ns`` to a listener in ``server_ns``, which
    echoes them back; returns what came back (the caller compares)."""
    with netns.entered(server_ns):
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind((server_ip, 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    data = os.urandom(size)

    def serve() -> None:
        conn, _ = lsock.accept()
        with conn:
            while chunk := conn.recv(65536):
                conn.sendall(chunk)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with netns.entered(client_ns):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    got = bytearray()
    with c, lsock:
        c.settimeout(20)
        c.connect((server_ip, port))
        sender = threading.Thread(
            target=lambda: (c.sendall(data), c.shutdown(socket.SHUT_WR)), daemon=True
        )
        sender.start()
        while chunk := c.recv(65536):
            got += chunk
        sender.join(5)
    t.join(5)
    return data if bytes(got) == data else bytes(got)


class AnycastIpsecLab(IpsecLab):
    """Edge servers in several sites, all holding the anycast address 192.0.2.1 behind
    one router, every server a replica of the store (whose writer has a namespace of its
    own), and one host behind all of them (a bridge).  With ``sites={"a": 2, "b": 2}``:

        hostc -- cust 100.64.0.2 -- 100.64.0.1 router -+- 100.64.1.2 a1 (192.0.2.1) -+
                                                        +- 100.64.2.2 a2 (192.0.2.1) -+
                                                        +- 100.64.3.2 b1 (192.0.2.1) -+- hoste
                                                        +- 100.64.4.2 b2 (192.0.2.1) -+  (br0)
                                                        +- 100.64.10.2 store   198.51.100.10

    Server k (from 1, in site order) has 198.51.100.k on the host's LAN, server index
    k - 1 of all of them.  The router's route to 192.0.2.1 and the host's default route
    are ECMP over the serving site's servers (a flow hashes to one of them):
    :meth:`withdraw` ends a site's processes and moves both routes to another site, as a
    withdrawn BGP announcement would.  The edges also take ``--remote-ts
    100.64.200.0/24``, which the in-process initiator's handshakes ask for
    (:func:`handshakes`), so that their Child SAs never cover strongSwan's traffic."""

    def __init__(self, root: Path, sites: dict[str, int] | None = None) -> None:
        super().__init__(root)
        self.sites = sites or {"a": 2, "b": 2}
        self.edges = [f"{site}{j}" for site, n in self.sites.items() for j in range(1, n + 1)]
        roles = ("c", "hc", "r", "he", "st", *self.edges)
        self.ns = {r: f"{self.prefix}{r}" for r in roles}
        self.edge_pids: dict[str, int] = {}

    def number(self, edge: str) -> int:
        return self.edges.index(edge) + 1

    def site_edges(self, site: str) -> list[str]:
        return [e for e in self.edges if e.rstrip("0123456789") == site]

    def up(self) -> None:
        n = self.ns
        for ns in n.values():
            netns.add(ns)
        netns.veth(n["hc"], "eth0", n["c"], "lan")
        netns.veth(n["c"], "wan", n["r"], "cust")
        netns.veth(n["r"], "st", n["st"], "uplink")
        netns.batch(
            n["hc"], ["addr add 203.0.113.10/24 dev eth0", "route add default via 203.0.113.1"]
        )
        netns.batch(n["c"], ["addr add 203.0.113.1/24 dev lan", "addr add 100.64.0.2/30 dev wan",
                             "route add default via 100.64.0.1"])  # fmt: skip
        netns.batch(n["r"], ["addr add 100.64.0.1/30 dev cust", "addr add 100.64.10.1/30 dev st"])
        netns.batch(n["he"], ["link add br0 type bridge", "link set br0 up",
                              "addr add 198.51.100.10/24 dev br0"])  # fmt: skip
        for edge in self.edges:
            k = self.number(edge)
            netns.veth(n["r"], edge, n[edge], "uplink")
            netns.veth(n[edge], "lan", n["he"], edge)
            netns.batch(n["r"], [f"addr add 100.64.{k}.1/30 dev {edge}"])
            netns.batch(n[edge], [
                "addr add 192.0.2.1/32 dev lo",
                f"addr add 100.64.{k}.2/30 dev uplink",
                f"route add default via 100.64.{k}.1",
                f"addr add 198.51.100.{k}/24 dev lan",
            ])  # fmt: skip
            netns.batch(n["he"], [f"link set {edge} master br0"])
        netns.batch(
            n["st"], ["addr add 100.64.10.2/30 dev uplink", "route add default via 100.64.10.1"]
        )
        self.serve_from(next(iter(self.sites)))
        (self.dir / "psk").write_text(PSK)
        (self.dir / "fleet.key").write_text(os.urandom(32).hex())
        (self.dir / "strongswan.conf").write_text(STRONGSWAN_CONF.format(dir=self.dir))
        conf = SWANCTL_CONF.format(proposals=self.proposals, encap="yes", esp=self.esp, psk=PSK)
        (self.dir / "swanctl.conf").write_text(
            conf.replace("local_addrs = 192.0.2.2", "local_addrs = 100.64.0.2")
        )
        self._start_store()

    def serve_from(self, site: str) -> None:
        """Route the anycast address and the host's way back to ``site``'s servers."""
        ks = [self.number(e) for e in self.site_edges(site)]
        hops = " ".join(f"nexthop via 100.64.{k}.2" for k in ks)
        back = " ".join(f"nexthop via 198.51.100.{k}" for k in ks)
        netns.batch(self.ns["r"], [f"route replace 192.0.2.1/32 {hops}"])
        netns.batch(self.ns["he"], [f"route replace default {back}"])

    def _start_store(self) -> None:
        log = self.dir / "store.log"
        pid = netns.spawn(
            self.ns["st"],
            [sys.executable, "-m", "anyedge", "store", "serve", "--db", str(self.dir / "store.db"),
             "--listen", "100.64.10.2:7400"],
            log,
        )  # fmt: skip
        self.pids.append(pid)
        self._wait_line(log, '"store_id"', pid, "anyedge store serve")

    def _wait_line(self, log: Path, text: str, pid: int, what: str) -> None:
        end = time.monotonic() + 30
        while not log.exists() or text not in log.read_text():
            if time.monotonic() > end or not netns.alive(pid):
                raise RuntimeError(
                    f"{what} did not start: {log.read_text()[-2000:] if log.exists() else ''}"
                )
            time.sleep(0.05)

    def start_edges(self) -> None:
        """Start every server at once, then wait for each to be ready."""
        for edge in self.edges:
            pid = netns.spawn(
                self.ns[edge],
                serve_argv(
                    self.dir / "psk", "203.0.113.0/24", "aeipt0",
                    "--remote-ts", "100.64.200.0/24",
                    "--status", str(self.dir / f"edge-{edge}.json"),
                    "--server-index", str(self.number(edge) - 1),
                    "--servers", str(len(self.edges)),
                    "--store", "100.64.10.2:7400",
                    "--fleet-key-file", str(self.dir / "fleet.key"),
                ),
                self.dir / f"edge-{edge}.log",
            )  # fmt: skip
            self.pids.append(pid)
            self.edge_pids[edge] = pid
        for edge in self.edges:
            log = self.dir / f"edge-{edge}.log"
            self._wait_line(log, '"ready"', self.edge_pids[edge], f"edge {edge}")

    def log_of(self, edge: str) -> str:
        return (self.dir / f"edge-{edge}.log").read_text()

    def status_of(self, edge: str) -> dict:  # type: ignore[type-arg]
        path = self.dir / f"edge-{edge}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def wait_edge(self, edge: str, pred, timeout: float = 10.0) -> dict:  # type: ignore[no-untyped-def,type-arg]
        end = time.monotonic() + timeout
        while True:
            st = self.status_of(edge)
            if st and pred(st):
                return st
            if time.monotonic() > end:
                raise AssertionError(f"{edge} status never matched: {st}")
            time.sleep(0.05)

    def withdraw(self, site: str, to: str) -> None:
        """``site`` goes dark: its servers' processes end, the routes move to ``to``."""
        netns.stop([self.edge_pids[e] for e in self.site_edges(site)])
        self.serve_from(to)


def handshakes(client_ns: str, n: int, timeout: float = 30.0) -> list[int]:
    """``n`` IKE_SA_INIT + IKE_AUTH exchanges, one after another, from ``client_ns``
    (100.64.0.2) to 192.0.2.1 with the in-process initiator, handshake k asking for
    100.64.200.k/32 behind it; returns the Child SAs' SPIs at the edge (its SPI in)."""
    from anyedge.proto.ike import Selector
    from anyedge.proto.ike import codec as c
    from anyedge.proto.ike.initiator import Initiator

    def one(addr: str) -> tuple[Selector]:
        b = socket.inet_aton(addr)
        return (Selector(b, b),)

    with netns.entered(client_ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    spis: list[int] = []
    with sock:
        sock.bind(("100.64.0.2", 0))
        sock.settimeout(timeout)
        edge_net = (Selector(bytes([198, 51, 100, 0]), bytes([198, 51, 100, 255])),)
        for k in range(1, n + 1):
            i = Initiator(PSK.encode(), b"customer.example", one(f"100.64.200.{k}"), edge_net)
            sock.sendto(i.sa_init(), ("192.0.2.1", 500))
            i.take_sa_init(sock.recv(65535))
            sock.sendto(i.auth(), ("192.0.2.1", 500))
            m = i.open(sock.recv(65535))
            (sa,) = m.find(c.SA)
            spis.append(int.from_bytes(sa.proposals[0].spi, "big"))
    return spis
