"""``anyedge control plan``: the worked example from a file, state fed back, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from anyedge.cli.main import main

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "observation.json"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(["control", "plan", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_worked_example_from_the_docs(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(["--input", str(EXAMPLE), "--json"], capsys)
    assert rc == 0, err
    data = json.loads(out)
    got = {(a["plan"], a["to"]): a["share"] for a in data["actions"] if a["kind"] == "forward"}
    assert got == {
        ("business", "B"): 0.5,
        ("pro", "B"): 0.5,
        ("pro", "C"): 0.5,
        ("free", "C"): 0.2,
        ("free", "D"): 0.8,
    }
    assert "B is 100 ms away with room" in data["actions"][0]["reason"]
    assert data["actions"][0]["code"] == "over_maximum"
    assert data["actions"][0]["fields"]["receiver"] == "B"
    state = {(f["site"], f["plan"], f["to"]): f["share"] for f in data["state"]["forward"]}
    assert state[("A", "free", "D")] == pytest.approx(0.8)
    assert data["state"]["last_change"] == {"A": 1000.0}


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["--input", str(EXAMPLE)], capsys)
    assert rc == 0
    assert "forward" in out
    assert "business" in out


def test_state_fed_back_makes_no_new_moves_within_the_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(["--input", str(EXAMPLE), "--json"], capsys)
    state = tmp_path / "state.json"
    state.write_text(json.dumps(json.loads(out)["state"]), encoding="utf-8")
    obs = json.loads(EXAMPLE.read_text())
    obs["now"] = 1010.0  # ten seconds later, still overloaded
    again = tmp_path / "obs.json"
    again.write_text(json.dumps(obs), encoding="utf-8")
    rc, out, err = run(["--input", str(again), "--state", str(state), "--json"], capsys)
    assert rc == 0, err
    assert [a for a in json.loads(out)["actions"] if a["kind"] == "forward"] == []


def edit(obs: dict[str, Any], path: Path, **change: Any) -> Path:
    for key, value in change.items():
        target = obs
        *head, last = key.split("__")
        for k in head:
            target = target[int(k)] if k.isdigit() else target[k]
        target[int(last) if last.isdigit() else last] = value
    path.write_text(json.dumps(obs), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"sites__0__cpu": {"gold": 5}}, "sites[0].cpu: unknown plan 'gold'"),
        ({"latency_ms": {"Z": {"A": 1}}}, "latency_ms: unknown site 'Z'"),
        ({"sites__1__acceptable": 0.99}, "acceptable <= target <= maximum"),
        ({"sites__0__utilisation": -1}, "sites.0.utilisation"),
        ({"sites": []}, "sites"),
    ],
)
def test_bad_observation_exits_2(
    change: dict[str, Any], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = edit(json.loads(EXAMPLE.read_text()), tmp_path / "bad.json", **change)
    rc, out, err = run(["--input", str(bad)], capsys)
    assert rc == 2
    assert out == ""
    assert err.startswith(f"anyedge: error: {bad}")
    assert words in err


def test_bad_state_and_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state.json"
    state.write_text(
        json.dumps({"forward": [{"site": "A", "plan": "free", "to": "Q", "share": 0.1}]}),
        encoding="utf-8",
    )
    rc, _, err = run(["--input", str(EXAMPLE), "--state", str(state)], capsys)
    assert rc == 2
    assert "forward[0].to: unknown site 'Q'" in err
    rc, _, err = run(["--input", str(tmp_path / "missing.json")], capsys)
    assert rc == 2
    assert "cannot read" in err
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    rc, _, err = run(["--input", str(broken)], capsys)
    assert rc == 2
    assert "not valid JSON" in err
