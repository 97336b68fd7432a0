"""The process ExaBGP runs for a site: commands in through a FIFO, state out to a file.

ExaBGP's process API reads commands from the stdout of the processes it starts and
writes what it has to say (acknowledgements, neighbour changes) to their stdin.  This
program is such a process::

    python -m anyedge.adapters.bgp.exabgp_pipe FIFO STATE

* every complete line written into the named pipe ``FIFO`` is copied to stdout and
  flushed, so whoever may write the FIFO drives ExaBGP (:class:`.exabgp.ExaBgp` does);
  the FIFO is opened read-write, so that writers closing it never end the loop;
* what ExaBGP writes to stdin is folded into the JSON file ``STATE`` (replaced
  atomically after each read)::

      {"pid": 4242, "up": ["100.64.0.1"], "done": 3, "error": 0, "running": true}

  ``up`` is the neighbours whose session is up ("neighbor A up" / "neighbor A down"),
  ``done`` and ``error`` count ExaBGP's acknowledgements of the commands;
* when stdin ends (ExaBGP exited) the state says ``"running": false`` with no
  neighbour up, and the program exits.
"""

from __future__ import annotations

import json
import os
import selectors
import sys
from pathlib import Path
from typing import Any


class State:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "pid": os.getpid(),
            "up": [],
            "done": 0,
            "error": 0,
            "running": True,
        }

    def feed(self, line: str) -> None:
        words = line.split()
        up: list[str] = self.data["up"]
        if words in (["done"], ["error"]):
            self.data[words[0]] += 1
        elif len(words) >= 3 and words[0] == "neighbor":
            peer, event = words[1], words[2]
            if event == "up" and peer not in up:
                up.append(peer)
            elif event == "down" and peer in up:
                up.remove(peer)
        elif words and words[0] == "shutdown":
            up.clear()

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data) + "\n")
        tmp.replace(self.path)


def _lines(buffer: bytearray, data: bytes) -> list[bytes]:
    buffer += data
    *complete, rest = bytes(buffer).split(b"\n")
    buffer[:] = rest
    return [line + b"\n" for line in complete]


def serve(fifo: Path, state_path: Path) -> int:
    fifo_fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    state = State(state_path)
    state.save()  # from now on writers find a reader on the FIFO
    stdin_fd = sys.stdin.fileno()
    out = sys.stdout.buffer
    sel = selectors.DefaultSelector()
    sel.register(fifo_fd, selectors.EVENT_READ, "fifo")
    sel.register(stdin_fd, selectors.EVENT_READ, "stdin")
    commands, answers = bytearray(), bytearray()
    while True:
        for key, _ in sel.select():
            if key.data == "fifo":
                try:
                    data = os.read(fifo_fd, 65536)
                except BlockingIOError:
                    continue
                for line in _lines(commands, data):
                    out.write(line)
                out.flush()
            else:
                data = os.read(stdin_fd, 65536)
                if not data:
                    state.data["up"] = []
                    state.data["running"] = False
                    state.save()
                    return 0
                for line in _lines(answers, data):
                    state.feed(line.decode(errors="replace"))
                state.save()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m anyedge.adapters.bgp.exabgp_pipe FIFO STATE", file=sys.stderr)
        return 2
    try:
        return serve(Path(args[0]), Path(args[1]))
    except (BrokenPipeError, KeyboardInterrupt):
        return 0


if __name__ == "__main__":
    sys.exit(main())
