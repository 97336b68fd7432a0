"""A service with large answers, and its client, for the Path MTU lab.

``python -m anyedge.lab.bigreply serve --addr A [--addr B] --port P --size N`` listens
on TCP and UDP port ``P`` of each address given (bound to the anycast address, not the
wildcard, so replies leave from it) and answers every TCP connection's first line, and
every UDP datagram, with ``N`` bytes; ``ready`` on stdout when listening.

``python -m anyedge.lab.bigreply probe --target A --port P --proto tcp|udp --sources
S1,S2,..`` runs one flow per source address at once and prints JSON: which flows got
their whole answer within ``--timeout`` seconds and which did not (black-holed).  Over
UDP a request is sent again every ``--retry`` seconds until the answer comes (the first
large answer is the one a too-small link drops; once the server has learnt the path MTU
it fragments the next).  ``--sport N`` binds every flow's source port to ``N`` (0, the
default: any), so that a test can send the same flows again — the same 5-tuples, the
same buckets of the load balancer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _serve_tcp(sock: socket.socket, size: int) -> None:
    def answer(conn: socket.socket) -> None:
        # close with a reset once the client has closed (or after 10 s): a black-holed
        # answer is then not retransmitted for minutes, sending PTBs into later runs
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with conn:
            conn.settimeout(10)
            with contextlib.suppress(OSError):
                conn.recv(256)
                conn.sendall(b"x" * size)
                while conn.recv(256):
                    pass

    while True:
        conn, _ = sock.accept()
        threading.Thread(target=answer, args=(conn,), daemon=True).start()


def _serve_udp(sock: socket.socket, size: int) -> None:
    while True:
        _, peer = sock.recvfrom(2048)
        # EMSGSIZE while the path MTU is learnt: the client asks again
        with contextlib.suppress(OSError):
            sock.sendto(b"x" * size, peer)


def serve(addresses: Sequence[str], port: int, size: int) -> None:
    threads = []
    for a in addresses:
        t = socket.socket(_family(a), socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((a, port))
        t.listen(512)
        u = socket.socket(_family(a), socket.SOCK_DGRAM)
        u.bind((a, port))
        threads += [
            threading.Thread(target=_serve_tcp, args=(t, size), daemon=True),
            threading.Thread(target=_serve_udp, args=(u, size), daemon=True),
        ]
    for th in threads:
        th.start()
    print("ready", flush=True)
    threading.Event().wait()


def _tcp_flow(
    source: str, target: str, port: int, size: int, timeout: float, sport: int = 0
) -> bool:
    end = time.monotonic() + timeout
    with socket.socket(_family(target), socket.SOCK_STREAM) as s:
        s.bind((source, sport))
        s.settimeout(timeout)
        try:
            s.connect((target, port))
            s.sendall(b"get\n")
            got = 0
            while got < size:
                s.settimeout(max(0.01, end - time.monotonic()))
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
            return got >= size
        except OSError:
            return False


def _udp_flow(
    source: str, target: str, port: int, size: int, timeout: float, retry: float, sport: int = 0
) -> bool:
    end = time.monotonic() + timeout
    with socket.socket(_family(target), socket.SOCK_DGRAM) as s:
        s.bind((source, sport))
        while time.monotonic() < end:
            s.sendto(b"get\n", (target, port))
            s.settimeout(min(retry, max(0.01, end - time.monotonic())))
            try:
                data = s.recv(65536)
            except OSError:
                continue
            if len(data) >= size:
                return True
    return False


def probe(
    target: str,
    port: int,
    proto: str,
    sources: Sequence[str],
    size: int,
    timeout: float,
    retry: float,
    sport: int = 0,
) -> dict[str, object]:
    results: dict[str, bool] = {}

    def one(src: str) -> None:
        if proto == "tcp":
            results[src] = _tcp_flow(src, target, port, size, timeout, sport)
        else:
            results[src] = _udp_flow(src, target, port, size, timeout, retry, sport)

    threads = [threading.Thread(target=one, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [s for s in sources if results.get(s)]
    return {"flows": len(sources), "ok": ok, "blackholed": [s for s in sources if s not in ok]}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anyedge.lab.bigreply")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--addr", action="append", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--size", type=int, default=1400)
    p = sub.add_parser("probe")
    p.add_argument("--target", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--proto", choices=("tcp", "udp"), required=True)
    p.add_argument("--sources", required=True)
    p.add_argument("--size", type=int, default=1400)
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--retry", type=float, default=0.3)
    p.add_argument("--sport", type=int, default=0)
    a = ap.parse_args(argv)
    if a.cmd == "serve":
        serve(a.addr, a.port, a.size)
        return 0
    out = probe(
        a.target, a.port, a.proto, a.sources.split(","), a.size, a.timeout, a.retry, a.sport
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
