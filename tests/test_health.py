"""anyedge.health: rise/fall without flapping, drain, the dead-man timer, and the guard
that never withdraws the last announcing site — checked on many random streams of
check results and decisions, not one."""

from __future__ import annotations

import contextlib
import io
import random
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anyedge.health import TEXT, Change, Health, Reason, Settings, Wish, decide


def run(h: Health, results: list[bool], start: float = 0.0, step: float = 1.0) -> list[bool]:
    """The wish (announce?) after each result, one result per ``step`` seconds."""
    return [h.check(ok, start + i * step).announce for i, ok in enumerate(results)]


def test_a_site_announces_after_rise_passes_and_withdraws_after_fall_failures() -> None:
    h = Health(Settings(rise=3, fall=2))
    assert not h.wish(0.0).announce  # starts withdrawn
    assert h.wish(0.0).reason.code == "starting"
    assert run(h, [True, True, True, False, True, False, False, True, True, True]) == [
        False, False, True, True, True, True, False, False, False, True,
    ]  # fmt: skip


@given(
    rise=st.integers(1, 5),
    fall=st.integers(1, 5),
    results=st.lists(st.booleans(), max_size=60),
)
def test_the_wish_changes_only_after_rise_or_fall_in_a_row(
    rise: int, fall: int, results: list[bool]
) -> None:
    h = Health(Settings(rise=rise, fall=fall, deadman_s=1e9))
    wishes = run(h, results)
    before = False
    for i, now in enumerate(wishes):
        if now and not before:  # came up: the last `rise` results passed
            assert i + 1 >= rise
            assert all(results[i + 1 - rise : i + 1])
        if before and not now:  # went down: the last `fall` results failed
            assert i + 1 >= fall
            assert not any(results[i + 1 - fall : i + 1])
        before = now


@pytest.mark.parametrize("up_first", [False, True])
def test_a_flapping_service_does_not_flap_the_announcement(up_first: bool) -> None:
    h = Health(Settings(rise=2, fall=2))
    start = run(h, [True, True]) if up_first else []
    wishes = run(h, [False, True] * 50, start=2.0)
    assert set(wishes) == {up_first}, start


def test_drain_withdraws_at_once_and_undrain_returns_to_the_checks() -> None:
    h = Health(Settings(rise=2, fall=3))
    assert run(h, [True, True]) == [False, True]
    h.drain()
    w = h.wish(2.0)
    assert (w.announce, w.reason.code) == (False, "drained")
    assert not h.check(True, 3.0).announce  # passing checks do not undo a drain
    h.undrain()
    assert h.wish(3.5).announce  # the last checks passed: announce again at once
    h.drain()
    assert not run(h, [False, False, False], start=4.0)[-1]
    h.undrain()
    w = h.wish(7.0)
    assert (w.announce, w.reason.code) == (False, "unhealthy")


def test_the_dead_man_timer_withdraws_when_the_checker_falls_silent() -> None:
    h = Health(Settings(rise=1, fall=1, deadman_s=10.0), started=100.0)
    assert h.deadline() == 110.0
    w = h.wish(110.0)  # never a result: the timer runs from the start
    assert (w.announce, w.reason.code) == (False, "checker_silent")
    assert h.check(True, 111.0).announce
    assert h.deadline() == 121.0
    assert h.wish(120.9).announce
    w = h.wish(121.0)
    assert (w.announce, w.reason.code) == (False, "checker_silent")
    assert dict(w.reason.fields) == {"silent_s": 10.0, "deadman_s": 10.0}
    assert "no check result for 10 s" in w.reason.text()
    # results again: what was known before the silence is stale, rise passes again
    assert not h.check(True, 130.0).announce if h.settings.rise > 1 else True
    h2 = Health(Settings(rise=2, fall=3, deadman_s=10.0))
    assert run(h2, [True, True]) == [False, True]
    assert not h2.check(False, 20.0).announce  # silent 19 s: one failure is not "healthy"
    assert run(h2, [True, True], start=21.0) == [False, True]


UP = Wish(True, Reason("healthy", (("rise", 2.0),)))
DOWN = Wish(False, Reason("unhealthy", (("fall", 3.0),)))


def test_the_last_announcing_site_is_never_withdrawn_without_an_override() -> None:
    # three sites announce; all three fail: two go, the last one is held
    out = decide([DOWN, DOWN, DOWN], [True, True, True])
    assert [(c.site, c.announce, c.held) for c in out] == [
        (0, False, False), (1, False, False), (2, True, True),
    ]  # fmt: skip
    assert out[2].reason.code == "last_site"
    assert "kept announced although unhealthy" in out[2].reason.text()
    # the operator overrides: the last one goes too, and the reason says so
    out = decide([DOWN], [True], override=True)
    assert out == [Change(0, False, Reason("override"))]
    # a site coming up lets the last one go in the same round
    out = decide([UP, DOWN], [False, True])
    assert [(c.site, c.announce, c.held) for c in out] == [(0, True, False), (1, False, False)]
    # nothing to do: nothing changes
    assert decide([UP, DOWN], [True, False]) == []


@given(st.data())
def test_decisions_never_leave_no_site_announcing(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 8))
    wishes = data.draw(st.lists(st.sampled_from([UP, DOWN]), min_size=n, max_size=n))
    announcing = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    after = list(announcing)
    for c in decide(wishes, announcing):
        after[c.site] = c.announce
        assert c.held == (c.announce != wishes[c.site].announce)
    if any(announcing) or any(w.announce for w in wishes):
        assert any(after)
    # every site ends as it wished, but for at most one held site
    assert sum(a != w.announce for a, w in zip(after, wishes, strict=True)) <= 1


def test_many_rounds_of_random_checks_at_many_sites() -> None:
    """Ten sites, 2,000 rounds of random check results (each site's service healthy or
    broken for stretches, checkers that fall silent, drains): once one site has
    announced, at least one always does; a site that announces against its wish is the
    last one, held; and every change is backed by what its checks said: an announcement
    by ``rise`` passes in a row, a withdrawal by ``fall`` failures in a row, a drain,
    ``deadman_s`` of silence, or (a held site let go) too few passes since a silence."""
    rng = random.Random(7)
    settings = Settings(rise=2, fall=3, deadman_s=5.0)
    sites = [Health(settings) for _ in range(10)]
    broken, silent = [False] * 10, [False] * 10
    announcing = [False] * 10
    results: list[list[tuple[int, bool]]] = [[] for _ in range(10)]
    seen: dict[str, int] = {}
    ever = False
    for now in range(2_000):
        for i, h in enumerate(sites):
            if rng.random() < 0.02:
                broken[i] = not broken[i]
            if rng.random() < 0.005:
                silent[i] = not silent[i]
            if rng.random() < 0.003:
                h.drain() if not h.drained else h.undrain()
            if not silent[i]:
                h.check(not broken[i], float(now))
                results[i].append((now, not broken[i]))
        wishes = [h.wish(float(now)) for h in sites]
        for c in decide(wishes, announcing):
            i, code = c.site, c.reason.code
            seen[code] = seen.get(code, 0) + 1
            if c.held:
                assert announcing[i]
                assert code == "last_site"
            elif c.announce:
                assert code == "healthy"
                assert all(ok for _, ok in results[i][-settings.rise :])
            elif code == "unhealthy":
                assert not any(ok for _, ok in results[i][-settings.fall :])
            elif code == "checker_silent":
                assert now - results[i][-1][0] >= settings.deadman_s if results[i] else True
            elif code == "starting":  # not yet proven (again, after a silence)
                assert sites[i].passes < settings.rise
            else:
                assert code == "drained"
                assert sites[i].drained
            announcing[i] = c.announce
        ever = ever or any(announcing)
        if ever:
            assert any(announcing), now
        against = [i for i, w in enumerate(wishes) if announcing[i] and not w.announce]
        assert not against or (len(against) == 1 and sum(announcing) == 1), (now, against)
    # every kind of change happened
    assert {"healthy", "unhealthy", "drained", "checker_silent", "last_site"} <= set(seen)


def test_every_reason_has_words_and_bad_settings_are_refused() -> None:
    fields: dict[str, float | str] = {
        "rise": 2, "fall": 3, "silent_s": 31.0, "deadman_s": 30.0, "wished": "drained"
    }  # fmt: skip
    for code, text in TEXT.items():
        assert text.format(**fields)
        assert Reason(code).code == code
    with pytest.raises(ValueError, match="unknown reason"):
        Reason("nope")
    for bad in ({"rise": 0}, {"fall": 0}, {"deadman_s": 0.0}, {"deadman_s": float("inf")}):
        with pytest.raises(ValueError, match="must be"):
            Settings(**bad)  # type: ignore[arg-type]


def test_the_docs_example_prints_what_it_says() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "health.md").read_text()
    block = re.search(r"```python\n(.*?)```", doc, re.S)
    assert block is not None
    code = block.group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/health.md", "exec"), {})
    said = [ln.split("# ", 1)[1] for ln in code.splitlines() if "# " in ln and "print" in ln]
    said += [ln[2:] for ln in code.splitlines() if ln.startswith("# ")]
    printed = out.getvalue().splitlines()
    assert printed == [
        "[True, True]",
        "0 False 3 checks in a row failed",
        printed[2],
        "[False, True]",
    ]
    assert printed[2].startswith("1 True kept announced although unhealthy")
    assert sorted(said) == sorted(printed)
