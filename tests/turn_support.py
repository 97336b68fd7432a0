"""A TurnService in this process for tests: its event loop runs in a thread, and
:meth:`ThreadedRelay.call` runs code on that loop (the service's state is the loop's
alone).  Used by the user-space fast path's tests (lanes, batched sockets)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from anyedge.services.turn.config import load_config
from anyedge.services.turn.io import TurnService

T = TypeVar("T")


class ThreadedRelay:
    """A running TurnService, its loop and its listener's port."""

    def __init__(self, service: TurnService, loop: asyncio.AbstractEventLoop, port: int) -> None:
        self.service = service
        self.loop = loop
        self.port = port

    def call(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def count_core_calls(self) -> dict[str, int]:
        """From now on, count the ChannelData (``channel_data``) and peer datagrams
        (``from_peer``) the core is given; it still answers them."""
        calls = {"channel_data": 0, "from_peer": 0}
        core = self.service.core
        receive, from_peer = core.receive, core.receive_from_peer

        def counted(now: float, t: str, c: Any, s: Any, data: bytes) -> Any:
            if data and data[0] >= 0x40:
                calls["channel_data"] += 1
            return receive(now, t, c, s, data)

        def counted_peer(now: float, relay: Any, peer: Any, data: bytes) -> Any:
            calls["from_peer"] += 1
            return from_peer(now, relay, peer, data)

        def install() -> None:
            core.receive = counted  # type: ignore[method-assign]
            core.receive_from_peer = counted_peer  # type: ignore[method-assign]

        self.call(install)
        return calls

    def counters(self) -> dict[str, int]:
        return self.call(lambda: dataclasses.asdict(self.service.core.counters))


@contextmanager
def serving(conf: Path, **turn: Any) -> Iterator[tuple[TurnService, asyncio.AbstractEventLoop]]:
    """The relay configured by ``conf`` (``turn``: TurnConfig fields to change), started
    on a new loop in a thread, and stopped and closed when the block ends."""
    config = load_config(conf)
    if turn:
        config.turn = dataclasses.replace(config.turn, **turn)
    loop = asyncio.new_event_loop()
    service = TurnService(config)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(service.start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(service.close())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield service, loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
