"""The service a lab site runs: answer on the anycast address(es) with the site's code.

One process per site, started inside the site's namespace::

    python -m anyedge.lab.service --site CHC --address 198.51.100.1 \\
        --ports 7001,7002,7003,7004 --metrics 127.0.0.1:0 --metrics-sd CHC.json

Data flow:

* For every (address, port) there is a UDP endpoint and a TCP listener, both bound to
  that exact address, so every reply leaves from the address and port the client sent
  to (a reply from another address would not match the client's flow).  One port per
  customer plan: the port tells plans apart.
* UDP: every datagram is answered with one datagram, the *reply*.  TCP: per connection
  one line is read (up to the newline, EOF or :data:`TCP_READ_TIMEOUT`), the reply and a
  newline are written and the connection is closed.
* The reply is the site code (ASCII, e.g. ``b"CHC"``); when the request starts with
  ``b"seq "`` the request is echoed after a space (``b"CHC seq 17"``), so that a client
  sending tagged probes can match each answer to its probe (see :func:`reply_for`).
* With ``--hold PORT`` (the servers of a site with servers, :mod:`.edge`) there is
  also a TCP listener on that port that answers *every* line with the reply and keeps
  the connection open until the client closes it: long-lived connections, for tests
  that change the load balancer's table under them.  Not counted.
* Per port the service counts requests (UDP datagrams plus TCP connections) and bytes
  received and sent, cumulatively from start.
* With ``--metrics ADDRESS:PORT`` the counters are served over HTTP for Prometheus
  (``GET /metrics``, :mod:`.service_metrics`), possibly in another namespace than the
  service's (``--metrics-netns``), and registered in a file_sd target file
  (``--metrics-sd``): the lab starts every service so, and Prometheus and the lab's own
  telemetry read them there.
* With ``--stats PATH`` a Unix stream socket also serves a snapshot of the counters (a
  quick look without HTTP, :func:`read_stats`): each connection receives one JSON
  object and is closed::

      {"site": "CHC", "time": 1712345678.9, "pid": 4242,
       "requests": {"7001": 12, "7002": 0},
       "bytes_in": {"7001": 60, "7002": 0}, "bytes_out": {"7001": 36, "7002": 0}}

Lifecycle: a stale socket file at ``--stats`` (nothing listening) is removed at start;
once every listener is bound the service prints ``ready`` on stdout, so whoever started
it can wait for that line.  A bind error is reported on stderr with exit status 2.
SIGTERM or SIGINT closes every listener, removes the stats socket and exits with 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

SEQ_PREFIX = b"seq "
"""Requests starting with this are echoed after the code (tagged probes)."""

TCP_READ_TIMEOUT = 2.0
"""Seconds a TCP connection may take to send its line before it is answered anyway."""

TCP_LINE_LIMIT = 4096
"""Longest request line read from a TCP connection; the rest is ignored."""

TCP_BACKLOG = 1024
"""Pending TCP connections the kernel queues per listener (a probe opens many at once)."""

UDP_RECEIVE_BUFFER = 4 << 20
"""Bytes of UDP receive buffer asked for, so that a burst of probes is queued, not dropped."""

EXIT_USAGE = 2


class ServiceError(RuntimeError):
    """The service cannot start (a listener or the stats socket cannot be bound)."""


def reply_for(code: bytes, request: bytes) -> bytes:
    """The reply to ``request``: the code, plus a space and the request if it is tagged."""
    if request.startswith(SEQ_PREFIX):
        return code + b" " + request
    return code


@dataclass
class Counters:
    """Cumulative per-port counts: requests (UDP datagrams + TCP connections) and bytes."""

    ports: Sequence[int]
    requests: dict[int, int] = field(init=False)
    bytes_in: dict[int, int] = field(init=False)
    bytes_out: dict[int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.requests = dict.fromkeys(self.ports, 0)
        self.bytes_in = dict.fromkeys(self.ports, 0)
        self.bytes_out = dict.fromkeys(self.ports, 0)

    def snapshot(self, site: str) -> dict[str, Any]:
        """The JSON object the stats socket serves."""
        return {
            "site": site,
            "time": time.time(),
            "pid": os.getpid(),
            "requests": {str(p): n for p, n in self.requests.items()},
            "bytes_in": {str(p): n for p, n in self.bytes_in.items()},
            "bytes_out": {str(p): n for p, n in self.bytes_out.items()},
        }


class _UdpAnswer(asyncio.DatagramProtocol):
    """Answers each datagram on one (address, port) endpoint."""

    def __init__(self, code: bytes, port: int, counters: Counters) -> None:
        self.code = code
        self.port = port
        self.counters = counters
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        reply = reply_for(self.code, data)
        self.counters.requests[self.port] += 1
        self.counters.bytes_in[self.port] += len(data)
        self.counters.bytes_out[self.port] += len(reply)
        if self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier reply; the client is gone, nothing to do.
        pass


@dataclass(frozen=True)
class MetricsOptions:
    """Where and what ``/metrics`` serves (see :mod:`.service_metrics`)."""

    address: str
    port: int
    netns: str | None = None  # the namespace to listen in (a name or path; None: ours)
    sd: Path | None = None  # a Prometheus file_sd target list to write
    plans: tuple[str, ...] = ()  # the ports' plans
    cpu_ms: tuple[float, ...] = ()  # CPU ms a request of each port's plan costs
    capacity: float | None = None  # CPU ms/s this service stands for


@dataclass
class Service:
    """The listeners of one site; :meth:`start` binds them all, :meth:`close` ends them."""

    site: str
    addresses: Sequence[str]
    ports: Sequence[int]
    stats_path: Path | None  # the counters as JSON on a Unix socket (None: none)
    hold: int | None = None  # a port whose TCP connections stay open, a reply per line
    metrics: MetricsOptions | None = None  # /metrics over HTTP (.service_metrics)
    counters: Counters = field(init=False)
    _servers: list[asyncio.Server] = field(default_factory=list, init=False)
    _udp: list[asyncio.DatagramTransport] = field(default_factory=list, init=False)
    _conns: set[asyncio.StreamWriter] = field(default_factory=set, init=False)
    _stats_inode: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.counters = Counters(self.ports)

    @property
    def code(self) -> bytes:
        return self.site.encode("ascii")

    async def start(self) -> None:
        """Bind every listener and the stats socket; raise :class:`ServiceError` if one fails."""
        loop = asyncio.get_running_loop()
        for address in self.addresses:
            for port in self.ports:
                try:
                    server = await asyncio.start_server(
                        self._make_tcp_handler(port),
                        host=address,
                        port=port,
                        reuse_address=True,
                        backlog=TCP_BACKLOG,
                        limit=TCP_LINE_LIMIT,
                    )
                except OSError as e:
                    raise ServiceError(f"cannot listen on TCP {address} port {port}: {e}") from e
                self._servers.append(server)
                try:
                    transport, _ = await loop.create_datagram_endpoint(
                        functools.partial(_UdpAnswer, self.code, port, self.counters),
                        local_addr=(address, port),
                    )
                except OSError as e:
                    raise ServiceError(f"cannot bind UDP {address} port {port}: {e}") from e
                self._udp.append(transport)
                _grow_receive_buffer(transport.get_extra_info("socket"))
        if self.hold is not None:
            for address in self.addresses:
                try:
                    server = await asyncio.start_server(
                        self._held,
                        host=address,
                        port=self.hold,
                        reuse_address=True,
                        backlog=TCP_BACKLOG,
                        limit=TCP_LINE_LIMIT,
                    )
                except OSError as e:
                    raise ServiceError(
                        f"cannot listen on TCP {address} port {self.hold}: {e}"
                    ) from e
                self._servers.append(server)
        if self.stats_path is not None:
            _remove_stale_socket(self.stats_path)
            try:
                stats = await asyncio.start_unix_server(
                    self._serve_stats, path=str(self.stats_path)
                )
            except OSError as e:
                raise ServiceError(f"cannot bind stats socket {self.stats_path}: {e}") from e
            self._servers.append(stats)
            self._stats_inode = self.stats_path.stat().st_ino
        if self.metrics is not None:
            await self._start_metrics(self.metrics)

    async def _start_metrics(self, m: MetricsOptions) -> None:
        from prometheus_client import CollectorRegistry

        from . import service_metrics

        try:
            sock = service_metrics.listen(m.address, m.port, m.netns)
        except OSError as e:
            where = f" in {m.netns}" if m.netns else ""
            raise ServiceError(
                f"cannot listen for /metrics on {m.address}:{m.port}{where}: {e}"
            ) from e
        registry = CollectorRegistry()
        registry.register(
            service_metrics.ServiceMetrics(self.counters, self.site, m.plans, m.cpu_ms, m.capacity)
        )
        self._servers.append(await service_metrics.serve(sock, registry))
        if m.sd is not None:
            service_metrics.write_target(m.sd, sock)

    def _make_tcp_handler(
        self, port: int
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.counters.requests[port] += 1
            self._conns.add(writer)
            try:
                try:
                    line = await asyncio.wait_for(reader.readline(), TCP_READ_TIMEOUT)
                except (TimeoutError, ValueError):
                    # No line in time, or a line longer than the limit: answer anyway.
                    line = b""
                self.counters.bytes_in[port] += len(line)
                reply = reply_for(self.code, line.rstrip(b"\r\n")) + b"\n"
                writer.write(reply)
                self.counters.bytes_out[port] += len(reply)
                await writer.drain()
            except OSError:
                pass  # the client went away
            finally:
                self._conns.discard(writer)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        return handle

    async def _held(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A held connection: a reply to every line, until the client closes."""
        self._conns.add(writer)
        try:
            while line := await reader.readline():
                writer.write(reply_for(self.code, line.rstrip(b"\r\n")) + b"\n")
                await writer.drain()
        except (OSError, ValueError):
            pass
        finally:
            self._conns.discard(writer)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _serve_stats(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            snapshot = self.counters.snapshot(self.site)
            writer.write(json.dumps(snapshot).encode() + b"\n")
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        """Close every listener and connection and remove the stats socket (if still ours)."""
        for server in self._servers:
            server.close()
        for transport in self._udp:
            transport.close()
        for writer in list(self._conns):
            writer.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._udp.clear()
        if self._stats_inode is not None and self.stats_path is not None:
            with contextlib.suppress(OSError):
                if self.stats_path.stat().st_ino == self._stats_inode:
                    self.stats_path.unlink()
            self._stats_inode = None
        if self.metrics is not None and self.metrics.sd is not None:
            self.metrics.sd.unlink(missing_ok=True)  # Prometheus stops scraping it
        # Let the closed transports and cancelled handlers finish their callbacks.
        await asyncio.sleep(0)


def _grow_receive_buffer(sock: Any) -> None:
    """Ask for :data:`UDP_RECEIVE_BUFFER`: forced past ``rmem_max`` as root, else capped."""
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, UDP_RECEIVE_BUFFER)
            return
        except OSError:
            pass  # not privileged: the plain option, which the kernel caps
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file nothing listens on; refuse a live socket or a non-socket file."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ServiceError(f"stats path {path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
            return
    raise ServiceError(f"stats socket {path} is in use by another process")


def read_stats(path: str | Path, timeout: float = 2.0) -> dict[str, Any]:
    """Connect to a service's stats socket and return the JSON object it sends."""
    chunks: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    data = json.loads(b"".join(chunks))
    if not isinstance(data, dict):
        raise ValueError(f"stats socket {path} sent {type(data).__name__}, not an object")
    return data


async def serve(service: Service) -> None:
    """Run ``service`` until SIGTERM or SIGINT; print ``ready`` once everything is bound."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
        print("ready", flush=True)
        await stop.wait()
    finally:
        await service.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _site_code(text: str) -> str:
    if not text or not text.isascii() or not text.isprintable() or " " in text:
        raise argparse.ArgumentTypeError(
            f"site code must be printable ASCII without spaces: {text!r}"
        )
    return text


def _port_list(text: str) -> list[int]:
    ports: list[int] = []
    for part in text.split(","):
        try:
            port = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a port number: {part!r}") from None
        if not 1 <= port <= 65535:
            raise argparse.ArgumentTypeError(f"port out of range 1..65535: {port}")
        if port in ports:
            raise argparse.ArgumentTypeError(f"port given twice: {port}")
        ports.append(port)
    return ports


def _address(text: str) -> str:
    try:
        socket.getaddrinfo(text, None, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m anyedge.lab.service",
        description="Answer UDP and TCP requests on anycast addresses with a site code.",
    )
    p.add_argument("--site", required=True, type=_site_code, help="site code sent as reply")
    p.add_argument(
        "--address",
        required=True,
        action="append",
        type=_address,
        help="address to answer on (repeatable)",
    )
    p.add_argument(
        "--ports", required=True, type=_port_list, help="comma-separated ports, one per plan"
    )
    p.add_argument("--stats", type=Path, help="Unix socket serving the counters as JSON")
    p.add_argument(
        "--hold",
        type=int,
        default=None,
        help="TCP port whose connections stay open (a reply per line)",
    )
    p.add_argument("--metrics", type=_listen, help="ADDRESS:PORT to serve /metrics on")
    p.add_argument("--metrics-netns", help="network namespace (name or path) to serve it in")
    p.add_argument("--metrics-sd", type=Path, help="Prometheus file_sd target file to write")
    p.add_argument("--plans", type=_names, default=(), help="the ports' plans, comma-separated")
    p.add_argument("--cpu-ms", type=_costs, default=(), help="CPU ms per request, per port")
    p.add_argument("--capacity", type=float, help="CPU ms/s this service stands for")
    return p


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"not ADDRESS:PORT: {text!r}")
    return _address(host), int(port)


def _names(text: str) -> tuple[str, ...]:
    return tuple(x for x in text.split(",") if x)


def _costs(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not numbers: {text!r}") from None
    if not all(x >= 0 for x in out):
        raise argparse.ArgumentTypeError(f"costs are numbers >= 0: {text!r}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    addresses: list[str] = list(dict.fromkeys(args.address))
    for opt, values in (("--plans", args.plans), ("--cpu-ms", args.cpu_ms)):
        if values and len(values) != len(args.ports):
            parser.error(f"{opt}: one per port ({len(args.ports)}), got {len(values)}")
    metrics = None
    if args.metrics is not None:
        address, port = args.metrics
        metrics = MetricsOptions(
            address, port, args.metrics_netns, args.metrics_sd, args.plans, args.cpu_ms,
            args.capacity,
        )  # fmt: skip
    service = Service(args.site, addresses, args.ports, args.stats, args.hold, metrics)
    try:
        asyncio.run(serve(service))
    except ServiceError as e:
        print(f"anyedge.lab.service: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
