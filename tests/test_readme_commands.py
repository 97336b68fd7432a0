"""Every ``anyedge`` command the README and docs/*.md show runs, in a scratch directory
holding what they assume (a saved world, a scenario, a history file, an observation, a
TURN configuration, an as-rel graph).  A command shown in several places runs once.

Not run here, each for its reason (``NOT_HERE``): the lab's commands need root and a lab
(tests/test_lab_docs.py runs them, in order); ``turn serve`` runs until it is stopped
(tests/test_exit_status.py starts and stops it), and so does ``pmtud run``
(tests/test_edge_pmtud.py runs it); ``turn sessions`` reads a running relay
(tests/test_turn_sessions.py runs it against one); ``store`` needs a writer (and etcd) of
its own (tests/test_store.py runs docs/store.md's commands against them), and so does
``transit`` (tests/test_cli_transit.py and tests/test_transit_serve.py); Ray on the
default world (tests/test_predict_ray.py runs ``--ray local`` on smaller worlds) and on
a cluster nobody has.

The default day (``anyedge simulate`` with no scenario) is simulated once per test run
by the session fixture ``default_day_run`` (tests/conftest.py), through the command
itself.  The README's commands on the default day run here through the same command,
with the simulation replayed from that run rather than done again (six 24-hour runs
of the 300-site world each time); the numbers the README states are checked against
what the command prints.  Commands on the default world get the session's
``default_world`` instead of building it again."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from anyedge import sim
from anyedge.cli.main import main
from anyedge.model import World, worldgen
from anyedge.model.worldgen import WorldOptions
from conftest import DefaultDay
from test_docs import readme_default_day
from test_turn_service import self_signed

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))

NOT_HERE = {
    "anyedge lab ": "needs root and a lab: tests/test_lab_docs.py runs the lab's commands",
    "anyedge turn serve ": "runs until stopped: tests/test_exit_status.py starts and stops it",
    "anyedge turn sessions ": "reads a running relay: tests/test_turn_sessions.py runs it "
    "against one",
    "anyedge pmtud run ": "runs until stopped, as root on a server's interface: "
    "tests/test_edge_pmtud.py runs it in the Path MTU lab",
    "anyedge predict --all --ray local": "Ray on the default world: tests/test_predict_ray.py "
    "runs --ray local on smaller worlds",
    "anyedge predict --all --ray ray://": "needs a Ray cluster",
    "anyedge control run -c controller.yaml": "runs until stopped: tests/test_control_run.py "
    "starts and stops it",
    "anyedge control override ": "needs a controller's configuration and journal: "
    "tests/test_control_run.py sets overrides with it",
    "anyedge store ": "needs a store of its own (and serve, replica and watch run until "
    "stopped): tests/test_store.py runs docs/store.md's commands against one",
    "anyedge ipsec serve ": "runs until stopped, as root: tests/test_ipsec_strongswan.py "
    "and tests/test_ipsec_failover.py start and stop it",
    "anyedge transit ": "needs a store of its own (and serve runs until stopped, as root): "
    "tests/test_cli_transit.py and tests/test_transit_serve.py run docs/transit.md's "
    "commands against one",
}


def commands_in(path: Path, skip_blocks: int = 0) -> list[str]:
    text = path.read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)[skip_blocks:]
    blocks = [b.replace("\\\n", " ") for b in blocks]  # a command continued on the next line
    lines = [re.split(r"\s#\s", ln)[0].strip() for b in blocks for ln in b.splitlines()]
    return [" ".join(ln.split()) for ln in lines if ln.startswith("anyedge ")]


def heredocs(path: Path) -> dict[str, str]:
    """The files the page's shell blocks write with ``cat > FILE <<'END'``."""
    text = path.read_text(encoding="utf-8")
    found = re.findall(r"^cat > (\S+) <<'(\w+)'\n(.*?)^\2$", text, flags=re.S | re.M)
    return {name: body for name, _, body in found}


def readme_commands() -> list[str]:
    return commands_in(ROOT / "README.md", skip_blocks=2)  # past the two at the top


def documented_commands() -> list[str]:
    """The README's commands, then the docs', each once, in order."""
    every = readme_commands() + [c for doc in DOCS for c in commands_in(doc)]
    return list(dict.fromkeys(every))


def why_not_here(command: str) -> str | None:
    if command.startswith("anyedge lab generate "):  # no root, no lab: it writes a file
        return None
    return next((why for start, why in NOT_HERE.items() if command.startswith(start)), None)


COMMANDS = documented_commands()
RUN = [c for c in COMMANDS if why_not_here(c) is None]

HISTORY = "time,site,utilisation,p95_ms\n"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("documented")
    (d / "docs" / "examples").mkdir(parents=True)
    observation = (ROOT / "docs" / "examples" / "observation.json").read_text()
    (d / "docs" / "examples" / "observation.json").write_text(observation, encoding="utf-8")
    mss = (ROOT / "docs" / "examples" / "ipv6-mss-2019.csv").read_text()  # docs/pmtud.md
    (d / "docs" / "examples" / "ipv6-mss-2019.csv").write_text(mss, encoding="utf-8")
    controller = (ROOT / "docs" / "examples" / "controller.yaml").read_text()
    (d / "docs" / "examples" / "controller.yaml").write_text(controller, encoding="utf-8")
    faults = (ROOT / "docs" / "examples" / "faults-day.yaml").read_text()  # docs/simulate.md
    (d / "docs" / "examples" / "faults-day.yaml").write_text(faults, encoding="utf-8")
    servers = (ROOT / "docs" / "examples" / "servers-day.yaml").read_text()  # simulate.md
    (d / "docs" / "examples" / "servers-day.yaml").write_text(servers, encoding="utf-8")
    (d / "tests" / "data").mkdir(parents=True)  # docs/simulate.md's three-site world
    tiny = (ROOT / "tests" / "data" / "tiny.yaml").read_text()
    (d / "tests" / "data" / "tiny.yaml").write_text(tiny, encoding="utf-8")
    for doc in DOCS:  # the files the pages write before their commands
        for name, body in heredocs(doc).items():
            if "/" not in name:
                (d / name).write_text(body, encoding="utf-8")
    # docs/control.md: its observation and state, as the page shows them
    blocks = re.findall(
        r"```json\n(.*?)```", (ROOT / "docs" / "control.md").read_text(), flags=re.S
    )
    (d / "obs.json").write_text(blocks[0], encoding="utf-8")
    (d / "state.json").write_text(blocks[1], encoding="utf-8")
    (d / "my-day.yaml").write_text(
        "duration: 30m\nevents:\n  - {at: 5m, for: 10m, kind: site_dark, site: CHC}\n",
        encoding="utf-8",
    )
    rng = np.random.default_rng(1)
    u = rng.uniform(0.2, 1.0, 300)
    rows = [
        f"{60 * i},LIS,{x:.4f},{5 + 30 * x * x + rng.normal(0, 0.5):.3f}" for i, x in enumerate(u)
    ]
    (d / "history.csv").write_text(HISTORY + "\n".join(rows) + "\n", encoding="utf-8")
    # docs/routing.md's bare CAIDA graph: 13335 and 15169 below a tier-1 pair
    (d / "graph.as-rel").write_text(
        "174|3356|0\n174|13335|-1\n3356|15169|-1\n174|64500|-1\n3356|64501|-1\n",
        encoding="utf-8",
    )
    # docs/turn.md's configuration, with the files it names
    turn = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "turn.md").read_text(), flags=re.S)
    (d / "turn.yaml").write_text(turn[0], encoding="utf-8")
    (d / "users.txt").write_text("alice:wonderland\n", encoding="utf-8")
    self_signed(d)  # cert.pem, key.pem
    return d


def test_the_docs_show_commands() -> None:
    assert len(readme_commands()) >= 12
    assert any(c.startswith("anyedge simulate") for c in readme_commands())
    assert len(RUN) >= 25
    assert all(why_not_here(c) for c in COMMANDS if c not in RUN)
    for doc in ("control", "predict", "routing", "turn"):
        assert commands_in(ROOT / "docs" / f"{doc}.md"), doc


def is_the_default_day(command: str) -> bool:
    """``anyedge simulate`` with options only: the default scenario on the default world."""
    args = shlex.split(command)[1:]
    return args[0] == "simulate" and all(a.startswith("-") for a in args[1:])


def same_figures(measured: float, stated: float) -> bool:
    """``stated`` is ``measured`` rounded as the docs round: three significant figures
    from 0.01 up (0.177), two below (0.0012)."""
    digits = 3 if stated >= 0.01 else 2
    return f"{measured:.{digits}g}" == f"{stated:.{digits}g}"


class Replay:
    """Stands in for :class:`anyedge.sim.Twin` in ``anyedge simulate``: the default
    day's comparison, as the session's one run of the command computed it."""

    day: DefaultDay

    def __init__(self, world: World, scenario: object) -> None:
        assert getattr(scenario, "name", None) == self.day.comparison.scenario

    def compare(self, progress: object = None) -> object:
        return self.day.comparison


def run(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    """``command`` through :func:`main` in the current directory; its output (written to
    the file after ``>`` where it has one)."""
    line, _, into = command.partition(" > ")
    args = shlex.split(line)[1:]
    rc = main(args)
    out, err = capsys.readouterr()
    assert rc == 0, f"{command}: {err}"
    writes = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-o", "--out")]
    assert out.strip() or (writes and Path(writes[0]).exists()), command
    if into:
        Path(into.strip()).write_text(out, encoding="utf-8")
    return out


def ready_for(command: str, scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What ``command`` reads that another documented command makes, made first (so
    that any one command also runs alone)."""
    needs_world = "-t world/" in command or "world/internet.as-rel" in command
    if needs_world and not (scratch / "world" / "topology.yaml").exists():
        run("anyedge world --out world/", capsys)
    if "--atlas atlas.json" in command and not (scratch / "atlas.json").exists():
        run("anyedge predict --all --out atlas.json", capsys)
    if "obs2.json" in command and not (scratch / "obs2.json").exists():
        # a second observation: docs/control.md's, announcing the atlas's prefix
        atlas = json.loads((scratch / "atlas.json").read_text(encoding="utf-8"))
        obs = json.loads((scratch / "obs.json").read_text(encoding="utf-8"))
        obs["sites"][0]["prefixes"] = [atlas["prefix"]]
        (scratch / "obs2.json").write_text(json.dumps(obs), encoding="utf-8")


def faults_day_as_stated(printed: dict[str, object]) -> None:
    """docs/simulate.md's figures for docs/examples/faults-day.yaml are what it prints."""
    doc = " ".join((ROOT / "docs" / "simulate.md").read_text(encoding="utf-8").split())
    part = doc[doc.index("### Faults") :]
    m = re.search(
        r"requests fail at ([0-9.]+) % with no traffic management \(([0-9]+) site-minutes.*?"
        r"([0-9.]+) % with prefix withdrawal only \(([0-9]+) site-minutes.*?"
        r"([0-9.]+) % with the Traffic Manager \(([0-9]+) site-minutes",
        part,
    )
    assert m is not None, "docs/simulate.md states the faults day"
    runs: dict[str, dict[str, float]] = printed["runs"]  # type: ignore[assignment]
    for k, mode in enumerate(("none", "withdraw", "manager")):
        t = runs[mode]
        assert same_figures(100 * t["failed"] / t["requests"], float(m.group(1 + 2 * k))), mode
        assert abs(t["slo_breach_minutes"] - int(m.group(2 + 2 * k))) <= 0.51, mode


@pytest.mark.parametrize("command", RUN)
def test_documented_command_runs(
    command: str,
    scratch: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(scratch)
    default_world: World = request.getfixturevalue("default_world")
    build_world = worldgen.build_world  # the commands import it when they run
    monkeypatch.setattr(
        worldgen,
        "build_world",
        lambda options, progress=None: (
            default_world if options == WorldOptions() else build_world(options, progress)
        ),
    )
    ready_for(command, scratch, capsys)
    day: DefaultDay | None = None
    if is_the_default_day(command):
        day = request.getfixturevalue("default_day_run")
        monkeypatch.setattr(Replay, "day", day, raising=False)
        monkeypatch.setattr(sim, "Twin", Replay)  # the command imports it when it runs
    out = run(command, capsys)
    if "faults-day.yaml" in command:
        faults_day_as_stated(json.loads(out))
    if day is None:
        return
    stated = readme_default_day()
    if "--json" in command:
        printed = json.loads(out)
        assert printed == day.summary  # what the session's run printed
        for mode, (failed_pct, slo) in stated.items():
            t = printed["runs"][mode]
            assert same_figures(100 * t["failed"] / t["requests"], failed_pct), mode
            assert abs(t["slo_breach_minutes"] - slo) <= 0.51, mode  # whole minutes
    elif "--csv" in command:
        rows = list(csv.DictReader(io.StringIO(out)))
        by_mode = {r["mode"]: r for r in rows}
        for mode, (failed_pct, slo) in stated.items():
            t = by_mode[mode]
            share = 100 * float(t["failed"]) / float(t["requests"])
            assert same_figures(share, failed_pct), mode
            assert abs(float(t["slo_breach_minutes"]) - slo) <= 0.51, mode
    else:
        assert "failed requests" in out
        assert "SLO breach" in out
        assert "report: anyedge-report.html" in out
        page = (scratch / "anyedge-report.html").read_text(encoding="utf-8")
        assert page == day.report.read_text(encoding="utf-8")  # the same day, the same page
