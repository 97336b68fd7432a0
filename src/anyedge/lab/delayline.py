"""Delay lines: links with one-way delay, jitter and loss, in user space.

The kernel here has no netem, so a lab link that must take time is not a veth pair but
two TAP devices, one in each end's namespace under the port's interface name, with a
process between them that holds each frame for the link's delay before writing it out
of the other device.  Each end sees an ordinary Ethernet interface; ARP, BGP, TCP and
everything else cross it as they would cross a wire.

How a frame flows: the process reads it from one end's TAP file descriptor (TAP devices
take no offloads, so it is a whole frame with its checksums in place) and gives it to
that direction's :class:`Line` with the time; the line drops it with the link's loss
probability or gives it a time due — now + delay + a normal jitter sample, never before
now and never before the frame ahead of it, so a link does not reorder.  The loop
sleeps in ``select`` (microsecond timeouts, where ``epoll`` rounds to milliseconds)
until a frame arrives or the next one is due, and writes the due frames out of the
other end.

:class:`Line` is pure (time passed in, frames in and out), so its rules are tested
without devices; :func:`serve` is the loop; ``python -m anyedge.lab.delayline SPEC``
makes the devices a JSON spec names and serves them until SIGTERM; on SIGHUP it reads
the spec again and gives each link its new shape at once (the frames already held keep
their time due), so a link can be slowed or cut while the lab runs.  When the process
ends its devices go away with it and the links are down, as cut wires.

Measured on this machine (bench/bench_delayline.py): the overhead of the user-space hop
is stated there, beside a plain veth pair.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import selectors
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..adapters import netns
from ..adapters.tuntap import open_device, wait_ready

MAX_FRAME = 65_536


@dataclass(frozen=True)
class Shape:
    """What a link does to each frame, one way: a fixed delay, a normal jitter around it
    (standard deviation, clipped so that no frame leaves before it came), a loss rate."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0

    def __post_init__(self) -> None:
        for name in ("delay_ms", "jitter_ms"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0.0 <= v <= 10_000.0):
                raise ValueError(f"{name}: must be from 0 to 10000 ms, got {v!r}")
        if not (math.isfinite(self.loss) and 0.0 <= self.loss <= 1.0):
            raise ValueError(f"loss: must be from 0 to 1, got {self.loss!r}")

    @property
    def shaped(self) -> bool:
        return bool(self.delay_ms or self.jitter_ms or self.loss)


@dataclass
class Line:
    """One direction of a link: frames in with the time they came, out when due."""

    shape: Shape
    rng: random.Random = field(default_factory=random.Random)
    limit: int = 10_000  # frames held at once; beyond, the line drops (a full queue)
    queue: deque[tuple[float, bytes]] = field(default_factory=deque)
    passed: int = 0
    lost: int = 0
    overflowed: int = 0
    _last: float = -math.inf

    def accept(self, now: float, frame: bytes) -> bool:
        """Take ``frame``, read at ``now`` (seconds); False if the link loses it."""
        s = self.shape
        if s.loss and self.rng.random() < s.loss:
            self.lost += 1
            return False
        if len(self.queue) >= self.limit:
            self.overflowed += 1
            return False
        due = now + s.delay_ms / 1e3
        if s.jitter_ms:
            due += self.rng.gauss(0.0, s.jitter_ms / 1e3)
        due = max(due, now, self._last)  # never early, never ahead of the frame before
        self._last = due
        self.queue.append((due, frame))
        return True

    def next_due(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def release(self, now: float) -> list[bytes]:
        """The frames due by ``now``, in the order they came."""
        out = []
        q = self.queue
        while q and q[0][0] <= now:
            out.append(q.popleft()[1])
        self.passed += len(out)
        return out


@dataclass(frozen=True)
class End:
    namespace: str
    ifname: str


@dataclass(frozen=True)
class LinkSpec:
    a: End
    b: End
    shape: Shape

    def to_dict(self) -> dict[str, Any]:
        s = self.shape
        return {
            "a": [self.a.namespace, self.a.ifname],
            "b": [self.b.namespace, self.b.ifname],
            "delay_ms": s.delay_ms,
            "jitter_ms": s.jitter_ms,
            "loss": s.loss,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinkSpec:
        shape = Shape(float(d["delay_ms"]), float(d["jitter_ms"]), float(d["loss"]))
        return cls(End(*d["a"]), End(*d["b"]), shape)


def open_link(spec: LinkSpec) -> tuple[int, int]:
    """Make the link's two TAP devices, each in its end's namespace, and bring them up."""
    fds = []
    try:
        for end in (spec.a, spec.b):
            with netns.entered(end.namespace):
                fds.append(open_device(end.ifname))
            netns.batch(end.namespace, [f"link set {end.ifname} up"])
        for end in (spec.a, spec.b):
            if not wait_ready(end.namespace, end.ifname):
                raise OSError(f"{end.namespace}:{end.ifname} did not come up in 5 s")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds[0], fds[1]


def serve(
    links: Sequence[tuple[int, int, Line, Line]],
    stop: list[bool],
    clock: Any = time.monotonic,
) -> None:
    """Carry frames between each pair of devices (a→b through the first line, b→a
    through the second) until ``stop[0]`` is set."""
    sel = selectors.SelectSelector()  # select(): microsecond timeouts
    lines: list[tuple[Line, int]] = []
    for fa, fb, ab, ba in links:
        sel.register(fa, selectors.EVENT_READ, (ab, fb))
        sel.register(fb, selectors.EVENT_READ, (ba, fa))
        lines += [(ab, fb), (ba, fa)]
    while not stop[0]:
        dues = [d for d in (line.next_due() for line, _ in lines) if d is not None]
        timeout = max(0.0, min(dues) - clock()) if dues else 0.5
        for key, _ in sel.select(min(timeout, 0.5)):
            line, _out = key.data
            fd = key.fd
            while True:
                try:
                    frame = os.read(fd, MAX_FRAME)
                except BlockingIOError:
                    break
                except OSError:  # the device went away (its namespace was deleted)
                    stop[0] = True
                    break
                line.accept(clock(), frame)
        now = clock()
        for line, out in lines:
            for frame in line.release(now):
                try:
                    os.write(out, frame)
                except OSError:  # the far end is down: the frame is lost, as on a wire
                    line.lost += 1


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m anyedge.lab.delayline",
        description="Links with delay, jitter and loss between TAP devices (see module doc).",
    )
    ap.add_argument("spec", type=Path, help="JSON: a list of links (LinkSpec.to_dict)")
    ap.add_argument("--seed", type=int, default=None, help="for the jitter and the loss")
    ap.add_argument("--ready", type=Path, help="file to write once every device is up")
    args = ap.parse_args(argv)
    specs = [LinkSpec.from_dict(d) for d in json.loads(args.spec.read_text())]
    rng = random.Random(args.seed)
    stop = [False]

    def ask_stop(*_: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, ask_stop)
    signal.signal(signal.SIGINT, ask_stop)
    links = []
    for s in specs:
        fa, fb = open_link(s)
        links.append((fa, fb, Line(s.shape, random.Random(rng.random())), Line(s.shape, rng)))

    def reshape(*_: object) -> None:
        try:
            new = [LinkSpec.from_dict(d) for d in json.loads(args.spec.read_text())]
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"{args.spec}: not reshaped: {e}", file=sys.stderr, flush=True)
            return
        for link, spec in zip(links, new, strict=False):
            link[2].shape = link[3].shape = spec.shape

    signal.signal(signal.SIGHUP, reshape)
    if args.ready:
        args.ready.write_text(json.dumps({"pid": os.getpid(), "links": len(links)}))
    serve(links, stop)
    counts = [
        {"passed": ln.passed, "lost": ln.lost, "overflowed": ln.overflowed}
        for _, _, ab, ba in links
        for ln in (ab, ba)
    ]
    print(json.dumps({"lines": counts}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
