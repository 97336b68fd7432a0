"""The twin's ticks reuse their noiseless arithmetic while its inputs stay the same
(:mod:`anyedge.sim.tick`): a run that reuses it must come out exactly, to the last bit
of every float, as the run that works every tick out afresh, through events that
change each of those inputs and the controller's decisions that follow them."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import numpy as np
import pytest

from anyedge.model import World
from anyedge.sim import MODES, Twin, engine, parse_scenario
from anyedge.sim.scenario import Scenario


def same(a: Any, b: Any, where: str = "run") -> None:
    """``a`` and ``b`` hold the same values, bit for bit, in the same order."""
    assert type(a) is type(b), where
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        for f in dataclasses.fields(a):
            same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys or their order"
        for k in a:
            same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        assert a.tobytes() == b.tobytes(), where
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, where


def random_day(world: World, seed: int) -> Scenario:
    """Three hours with events of every kind that changes a tick's inputs (demand,
    routing, section, site and server health) at random times on random sites; surges
    big enough that the controllers forward, shift and withdraw."""
    rng = np.random.default_rng(seed)
    net = world.network
    codes = list(net.sites.code)
    sec = net.sections
    pick = rng.permutation(len(codes))
    events = []

    def when() -> str:
        return f"at: {int(rng.integers(0, 150))}m, for: {int(rng.integers(5, 60))}m"

    for s in pick[:4]:
        events.append(f"{{{when()}, kind: surge, site: {codes[s]}, factor: 4}}")
    events.append(f"{{{when()}, kind: servers_down, site: {codes[pick[4]]}, fraction: 0.5}}")
    events.append(f"{{{when()}, kind: site_dark, site: {codes[pick[5]]}}}")
    events.append(f"{{{when()}, kind: site_down, site: {codes[pick[6]]}}}")
    events.append(f"{{{when()}, kind: maintenance, site: {codes[pick[7]]}}}")
    big = [i for i in rng.permutation(len(sec)).tolist() if sec.servers[i] >= 4]
    events.append(f"{{{when()}, kind: section_down, section: {sec.name[big[0]]}, fraction: 0.4}}")
    events.append(f"{{{when()}, kind: server_fail, section: {sec.name[big[1]]}, count: 2}}")
    events.append(f"{{{when()}, kind: server_drain, section: {sec.name[big[2]]}, count: 2}}")
    text = "duration: 3h\ntick: 10s\nevents:\n" + "".join(f"  - {e}\n" for e in events)
    return parse_scenario(text, world)


@pytest.mark.parametrize("seed", [3, 11])
def test_reused_ticks_give_the_straightforward_run_bit_for_bit(
    small_world: World, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    sc = random_day(small_world, seed)
    worked = [0]
    work = engine.steady

    def counted(*args: Any, **kwargs: Any) -> Any:
        worked[0] += 1
        return work(*args, **kwargs)

    monkeypatch.setattr(engine, "steady", counted)
    ticks = round(sc.duration / sc.tick)
    plain, cached = Twin(small_world, sc, cache=False), Twin(small_world, sc)
    acted = set()
    for mode in MODES:
        worked[0] = 0
        a = plain.run(mode)
        assert worked[0] == ticks  # worked out afresh every tick
        worked[0] = 0
        b = cached.run(mode)
        assert worked[0] < ticks / 2  # most ticks reuse the last one's
        same(a, b, mode)
        acted |= {x["kind"] for x in b.actions}
        assert a.totals.requests > 0
    # the controllers' decisions changed the state under the cache, each kind of move
    assert {"forward", "withdraw"} <= acted
