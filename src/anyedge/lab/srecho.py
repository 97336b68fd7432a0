"""The origin of the backbone lab: a UDP echo server (``python -m anyedge.lab.srecho
ADDRESS PORT``).  Each datagram goes back to its sender unchanged, so a client's round
trip is the network's, both ways, plus one read and one write here."""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m anyedge.lab.srecho ADDRESS PORT", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((args[0], int(args[1])))
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(65_535)
        s.sendto(data, peer)


if __name__ == "__main__":
    sys.exit(main())
