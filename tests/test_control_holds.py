"""What the Traffic Manager could not do, it says; what it did, it can take back in steps.

The reference's worked example decided a second time with its moves in force, shortfalls
named by cause, protected plans named in the configuration, and full-precision shares —
through ``anyedge control plan``, as an operator would run it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from anyedge.cli.main import main

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "observation.json"


def plan(tmp_path: Path, obs: dict[str, Any], state: dict[str, Any] | None = None) -> Any:
    f = tmp_path / "obs.json"
    f.write_text(json.dumps(obs), encoding="utf-8")
    args = ["control", "plan", "--input", str(f), "--json"]
    if state is not None:
        s = tmp_path / "state.json"
        s.write_text(json.dumps(state), encoding="utf-8")
        args += ["--state", str(s)]
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(args)
    assert rc == 0
    return json.loads(out.getvalue())


def example() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    return doc


def test_the_worked_example_decided_again_reverts_one_step(tmp_path: Path) -> None:
    """After the example's moves (free 100 %, pro 100 %, business 50 %), A recovers:
    it takes back one step of what it forwards — not everything at once — and every
    revert says the CPU time it brings back."""
    first = plan(tmp_path, example())
    obs = example()
    obs["now"] = 2_000.0
    a = obs["sites"][0]
    a["cpu"] = {"free": 0, "pro": 0, "business": 100, "enterprise": 16_900}
    a["utilisation"] = 0.30  # its servers are back: 17,000 ms/s is 30 %
    for s, extra in zip(obs["sites"][1:], (300, 300, 400), strict=True):
        s["cpu"]["free"] += extra  # B, C and D serve what A sends them
    second = plan(tmp_path, obs, first["state"])
    reverts = [x for x in second["actions"] if x["kind"] == "revert"]
    assert reverts
    assert all(x["cpu"] > 0 for x in reverts)
    forwarded = sum(f["cpu"] for f in first["state"]["forward"])
    assert forwarded == pytest.approx(1_000)
    assert sum(x["cpu"] for x in reverts) == pytest.approx(0.25 * forwarded)
    # highest-priority plan first: business comes back before pro and free
    assert reverts[0]["plan"] == "business"
    left = {(f["plan"], f["to"]) for f in second["state"]["forward"]}
    assert ("free", "D") in left


def test_a_shortfall_is_a_hold_naming_what_is_left(tmp_path: Path) -> None:
    obs = example()
    for s in obs["sites"][2:]:
        s["utilisation"] = 0.49  # C and D have almost no room
        s["cpu"] = {"free": 4_900}
        s["capacity"] = 10_000
    got = plan(tmp_path, obs)
    moved = sum(x["cpu"] for x in got["actions"] if x["kind"] == "forward")
    (hold,) = [x for x in got["actions"] if x["kind"] == "hold"]
    assert hold["site"] == "A"
    assert hold["code"] == "short_no_room"
    assert hold["fields"]["left"] == pytest.approx(1_000 - moved)
    assert "stays" in hold["reason"]


def test_only_protected_plans_left_is_said_so_not_no_room(tmp_path: Path) -> None:
    obs = example()
    obs["sites"][0]["cpu"] = {"enterprise": 18_000}
    got = plan(tmp_path, obs)
    (hold,) = [x for x in got["actions"] if x["kind"] == "hold"]
    assert hold["code"] == "short_protected"
    assert hold["fields"]["protected"] == "enterprise"
    assert "room" not in hold["reason"]


def test_the_cap_is_named_when_it_stops_a_move(tmp_path: Path) -> None:
    obs = example()
    obs["settings"]["max_move_share"] = 0.02  # 2 % of 24,400 ms/s: 488
    got = plan(tmp_path, obs)
    moved = sum(x["cpu"] for x in got["actions"] if x["kind"] != "hold")
    assert moved == pytest.approx(0.02 * 24_400)
    (hold,) = [x for x in got["actions"] if x["kind"] == "hold"]
    assert hold["code"] == "short_cap"


def test_a_recent_change_is_a_hold_not_silence(tmp_path: Path) -> None:
    first = plan(tmp_path, example())
    obs = example()
    obs["now"] = 1_010.0
    got = plan(tmp_path, obs, first["state"])
    (hold,) = [x for x in got["actions"] if x["site"] == "A"]
    assert hold["code"] == "waiting"


def test_protected_plans_are_named_in_the_settings(tmp_path: Path) -> None:
    obs = example()
    obs["plans"] = ["basic", "premium"]
    obs["sites"][0]["cpu"] = {"basic": 900, "premium": 17_100}
    for site in obs["sites"][1:]:
        site["cpu"] = {"basic": site["cpu"]["free"]}
    got = plan(tmp_path, obs)
    assert {x["plan"] for x in got["actions"] if x["kind"] == "forward"} == {"basic", "premium"}
    obs["settings"]["protected_plans"] = ["premium"]
    got = plan(tmp_path, obs)
    assert {x["plan"] for x in got["actions"] if x["kind"] == "forward"} == {"basic"}


def test_an_unknown_protected_plan_is_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obs = example()
    obs["settings"]["protected_plans"] = ["platinum"]
    f = tmp_path / "obs.json"
    f.write_text(json.dumps(obs), encoding="utf-8")
    assert main(["control", "plan", "--input", str(f)]) == 2
    assert "settings.protected_plans: unknown plan 'platinum'" in capsys.readouterr().err


def test_shares_keep_full_precision(tmp_path: Path) -> None:
    obs = example()
    obs["sites"][1]["cpu"] = {"free": 1_000}  # B: room 1,000 × 0.5 / 0.4 − 1,000 = 250
    got = plan(tmp_path, obs)
    (biz,) = [x for x in got["actions"] if x["plan"] == "business"]
    assert biz["share"] == biz["cpu"] / 200  # not rounded


def test_a_whole_plan_forwarded_needs_its_cpu_in_the_state(tmp_path: Path) -> None:
    state = {"forward": [{"site": "A", "plan": "free", "to": "B", "share": 1.0}]}
    f = tmp_path / "obs.json"
    f.write_text(json.dumps(example()), encoding="utf-8")
    s = tmp_path / "state.json"
    s.write_text(json.dumps(state), encoding="utf-8")
    assert main(["control", "plan", "--input", str(f), "--state", str(s)]) == 2


def test_a_section_with_no_servers_shifts_out_whole_and_does_not_flap() -> None:
    """IAD02 loses every server: Duomog shifts all its traffic to its sisters in one
    decision, keeps it there while the section has no capacity (it reports 0 % then,
    which is no room), and takes it back in steps once the servers return."""
    import numpy as np

    from anyedge.control.core import Config, Observation, State, apply, decide

    cfg = Config(
        maximum=np.array([0.9]),
        target=np.array([0.85]),
        acceptable=np.array([0.75]),
        latency_ms=np.zeros((1, 1)),
        min_interval=60.0,
        max_move_share=1.0,  # one site: the cap would be a tenth of its own traffic
    )
    own = np.array([3_000.0, 3_000.0, 3_000.0])  # each section's own traffic, ms/s
    state = State.empty(1, 4, 3)
    kinds: list[tuple[float, float]] = []
    for k in range(14):
        now = 60.0 * k
        cap = np.array([0.0 if k < 8 else 10_000.0, 10_000.0, 10_000.0])
        kept = own * (1 - state.shift)
        takers = (state.shift <= 0) & (cap > 0)
        load = kept + takers * (own * state.shift).sum() / max(takers.sum(), 1)
        u = np.where(cap > 0, load / np.where(cap > 0, cap, 1), np.where(load > 0, 9.0, 0.0))
        obs = Observation(
            utilisation=np.array([load.sum() / cap.sum()]),
            cpu=np.array([[load.sum(), 0, 0, 0]]),
            age=np.zeros(1),
            section_site=np.zeros(3, dtype=np.int64),
            section_utilisation=u,
            section_cpu=load,
            section_capacity=cap,
        )
        plan = decide(obs, state, cfg, now)
        for a in plan.of("shift"):
            kinds.append((now, a.share))
        state = apply(state, plan, now)
        if k == 0:
            assert state.shift[0] == 1.0  # all of it, at once
    out = [t for t, share in kinds if share > 0]
    back = [t for t, share in kinds if share < 0]
    assert out == [0.0]  # never again: no flapping while the section is empty
    assert back
    assert min(back) >= 8 * 60.0  # only once the servers are back
    assert len(back) >= 2  # in steps
