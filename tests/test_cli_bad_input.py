"""Bad input to every command gives one line of ``anyedge: error: ...`` and a documented
exit status from a real ``python -m anyedge`` process: no traceback, no silent clamping
(issue 13).  The lab's cases bring up no lab (they are refused before anything is made)
except the dead speaker's, which is marked ``lab``."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
from pathlib import Path

import pytest

from anyedge.lab import build
from lab_support import DATA, running_lab
from test_exit_status import anyedge

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
TINY = str(DATA / "tiny.yaml")


def refused(*args: str, says: str, status: int = 2, env: dict[str, str] | None = None) -> str:
    r = anyedge(*args, env=env)
    assert r.returncode == status, r.stdout + r.stderr
    assert r.stderr.startswith(("anyedge: error: ", "Usage: ")), r.stderr
    assert "anyedge: error: " in r.stderr
    assert says in r.stderr, r.stderr
    return r.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0"])
def test_world_refuses_a_peak_that_is_not_a_positive_number(value: str) -> None:
    refused("world", "--peak-rps", value, "--json", says="--peak-rps: must be a positive number")


@pytest.mark.slow
def test_world_refuses_more_sites_than_it_can_place() -> None:
    err = refused("world", "--sites", "100000", "--json", says="--sites: at most ")
    assert "got 100,000" in err


def test_predict_ray_without_ray_names_the_install(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['ray'] = None\n")
    env = {**ENV, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT / 'src'}"}
    refused(
        "predict", "-t", TINY, "--all", "--ray", "local",
        says="pip install 'anyedge[ray]'", env=env,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "duration: 1h\nevents:\n  - {at: 2h, for: 10m, kind: site_dark, site: CHC}\n",
            ":3: events[0].at: starts at 7200 s, after the scenario ends (3600 s)",
        ),
        ("duration: 3650d\ntick: 10s\n", ":1: duration: at most 31 days"),
        ("duration: 20d\ntick: 1s\n", ":1: duration: 1,728,000 s at 1 s ticks is 1,728,000"),
        ("tick: 1s\nduration: .inf\n", ":2: duration: "),
    ],
    ids=["event-after-end", "years", "too-many-ticks", "infinite"],
)
def test_simulate_refuses_events_after_the_end_and_absurd_durations(
    tmp_path: Path, text: str, says: str
) -> None:
    f = tmp_path / "day.yaml"
    f.write_text(text)
    refused("simulate", str(f), "-t", TINY, "--no-report", says=f"{f}{says}")


@pytest.mark.parametrize("command", ["catchment", "predict"])
@pytest.mark.parametrize("top", ["0", "-1"])
def test_top_must_be_positive(command: str, top: str) -> None:
    extra = ["--site", "CHC"] if command == "predict" else []
    refused(command, "-t", TINY, *extra, "--top", top, says="--top")


def test_turn_credential_refuses_a_secret_turn_serve_refuses() -> None:
    refused("turn", "credential", "--secret", "short", says="--secret: ")
    r = anyedge("turn", "credential", "--secret", "long-enough-secret")
    assert r.returncode == 0, r.stderr


def test_lab_up_without_exabgp_is_refused_before_building(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['exabgp'] = None\n")
    env = {**ENV, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT / 'src'}"}
    d = tmp_path / "lab"
    err = refused(
        "lab", "up", "-t", str(DATA / "lab4.yaml"), "--dir", str(d), "--name", "tx",
        says="pip install 'anyedge[lab]'", status=3, env=env,
    )  # fmt: skip
    assert "sin" in err
    assert not (d / build.STATE).exists()  # nothing was made


@pytest.mark.lab
def test_lab_status_names_a_dead_speaker_and_exits_3() -> None:
    with running_lab(DATA / "lab3.yaml") as lab:
        state = build.LabState.load(lab.directory)
        for pid in state.pids["akl"]:
            os.kill(pid, signal.SIGKILL)
        err = refused("lab", "status", "--dir", str(lab.directory), says="akl: ", status=3)
        assert "akl: its bird is not running" in err


# ------------------------------------------- what happened, said (issue 13, item 3)


def test_catchment_withdraw_says_where_the_traffic_went() -> None:
    r = anyedge("catchment", "-t", TINY, "--withdraw", "CHC")
    assert r.returncode == 0, r.stderr
    assert "with CHC withdrawn" in r.stdout
    assert "where the traffic went" in r.stdout
    r = anyedge("catchment", "-t", TINY, "--withdraw", "CHC", "--json")
    data = json.loads(r.stdout)
    assert data["knobs"] == {"withdraw": ["CHC"]}
    change = {c["site"]: c["change_rps"] for c in data["change"]}
    assert change["CHC"] < 0
    assert sum(change.values()) == pytest.approx(0, abs=1e-6 * -change["CHC"])


def test_simulate_prints_plain_progress_when_not_on_a_terminal(tmp_path: Path) -> None:
    f = tmp_path / "day.yaml"
    f.write_text("duration: 30m\n")
    r = anyedge("simulate", str(f), "-t", TINY, "--no-report")
    assert r.returncode == 0, r.stderr
    assert "Traffic Manager: started" in r.stderr
    assert "\x1b" not in r.stderr  # no terminal control sequences in a log


def test_predict_all_prints_plain_progress_when_not_on_a_terminal() -> None:
    r = anyedge("predict", "-t", TINY, "--all")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert re.fullmatch(r"failover atlas, \d+ scenarios: started \(\d+ s\)", lines[0]), lines
    assert re.fullmatch(r"failover atlas, \d+ scenarios: done \(\d+ s\)", lines[-1]), lines
    assert "\x1b" not in r.stderr
    assert "\r" not in r.stderr


@pytest.mark.parametrize(
    ("args", "header"),
    [
        (["world", "-t", TINY], "continent,name,sites"),
        (["catchment", "-t", TINY, "--withdraw", "CHC"], "site,share,rps,mean_rtt_ms,rps_before"),
        (["predict", "-t", TINY, "--site", "CHC"], "to,share,rps"),
        (["control", "plan", "--input", str(ROOT / "docs/examples/observation.json")], "kind,"),
    ],
    ids=["world", "catchment", "predict", "control-plan"],
)
def test_table_commands_print_csv(args: list[str], header: str) -> None:
    r = anyedge(*args, "--csv")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(header), lines[0]
    assert len(lines) > 1
    assert len({len(next(csv.reader([ln]))) for ln in lines}) == 1
    refused(*args, "--csv", "--json", says="give --json or --csv, not both")


def test_piped_tables_do_not_wrap_numbers() -> None:
    r = anyedge("catchment", "--top", "300")  # the default world: long city names
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("│")]
    assert len(rows) == 300  # one line per site: nothing wrapped onto a second line


def test_lab_errors_share_the_prefix(tmp_path: Path) -> None:
    refused("lab", "status", "--dir", str(tmp_path / "none"), says="", status=3)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["world", "--seed", "-1"], "--seed"),  # a traceback from numpy before
        (["lab", "generate", "--seed", "-1"], "--seed"),
        (["lab", "forward", "CHC", "--to", "AKL", "--share", "nan"], "not a finite number"),
        (["lab", "load", "c1", "--rate", "nan", "--duration", "1"], "not a finite number"),
        (["lab", "load", "c1", "--rate", "10", "--duration", "inf"], "--duration"),
    ],
    ids=["world-seed", "generate-seed", "share-nan", "rate-nan", "duration-inf"],
)
def test_numbers_out_of_range_are_usage_errors(args: list[str], says: str) -> None:
    refused(*args, says=says)
