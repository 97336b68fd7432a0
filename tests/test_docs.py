"""The examples in the documentation run."""

from __future__ import annotations

import re
from pathlib import Path

from anyedge.model import World
from anyedge.model.files import parse_world

ROOT = Path(__file__).resolve().parent.parent


def yaml_blocks(path: Path) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def test_topology_doc_example_loads() -> None:
    blocks = yaml_blocks(ROOT / "docs" / "topology.md")
    assert len(blocks) == 1
    world = parse_world(blocks[0], "docs/topology.md")
    assert world.network.sites.code == ("CHC", "IAD")
    assert world.network.prefixes.cidr == ("198.51.100.0/24", "2001:db8::/48")
    assert world.network.prefixes.announced.tolist() == [[True, True], [False, True]]
    assert world.internet.eyeballs.rps.tolist() == [20000.0]


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"```sh\n(.*?)\n```", text, flags=re.S)
    assert commands[0].strip().endswith("anyedge simulate")
    test_cmd = commands[1].strip()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_cmd in ci, "the README's test command must be what .ci/run runs"


def test_control_doc_observation_and_state_run(tmp_path: Path) -> None:
    from anyedge.cli.main import main

    blocks = re.findall(
        r"```json\n(.*?)```", (ROOT / "docs" / "control.md").read_text(), flags=re.S
    )
    obs, state = tmp_path / "obs.json", tmp_path / "state.json"
    obs.write_text(blocks[0], encoding="utf-8")
    state.write_text(blocks[1], encoding="utf-8")
    assert main(["control", "plan", "--input", str(obs), "--state", str(state), "--json"]) == 0


def default_day_in_docs() -> dict[str, tuple[float, float]]:
    """Failed share (%) and SLO site-minutes of each run of the default day, as
    docs/simulate.md's table states them; the README must say the same."""
    doc = (ROOT / "docs" / "simulate.md").read_text(encoding="utf-8")
    rows = re.findall(
        r"^\| (no traffic management|prefix withdrawal only|Traffic Manager) \| "
        r"([\d.]+) % \| ([\d,]+) \|",
        doc,
        flags=re.M,
    )
    titles = {"no traffic management": "none", "prefix withdrawal only": "withdraw"}
    return {titles.get(t, "manager"): (float(f), float(m.replace(",", ""))) for t, f, m in rows}


def readme_default_day() -> dict[str, tuple[float, float]]:
    """Failed share (%) and SLO site-minutes of each controller as the README states them."""
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    m = re.search(
        r"requests fail at ([\d.]+) % with no traffic management, ([\d.]+) % with prefix "
        r"withdrawal only and ([\d.]+) % with the Traffic Manager; SLO breach is ([\d,]+), "
        r"([\d,]+) and ([\d,]+) site-minutes",
        readme,
    )
    assert m is not None, "the README states the default day's numbers"
    said = [float(x.replace(",", "")) for x in m.groups()]
    return {mode: (said[i], said[i + 3]) for i, mode in enumerate(("none", "withdraw", "manager"))}


def test_readme_and_simulate_doc_state_the_same_default_day() -> None:
    doc = default_day_in_docs()
    assert set(doc) == {"none", "withdraw", "manager"}
    assert readme_default_day() == doc


def test_simulate_doc_states_the_twins_latency_model(small_world: World) -> None:
    """docs/simulate.md's p95 model — its SLO, the ranges of ``base`` and ``scale`` and
    the band of utilisation where the SLO is crossed — is the engine's."""
    from anyedge.sim import Twin, parse_scenario
    from anyedge.sim.engine import SLO_MS

    doc = " ".join((ROOT / "docs" / "simulate.md").read_text(encoding="utf-8").split())
    m = re.search(
        r"`base` ([\d.]+)–([\d.]+) ms and `scale` ([\d.]+)–([\d.]+) per site: before the "
        r"noise the (\d+) ms SLO is crossed between (\d+) % utilisation .*? and (\d+) %",
        doc,
    )
    assert m is not None, "docs/simulate.md states the p95 model"
    b0, b1, s0, s1, slo, low, high = (float(x) for x in m.groups())
    assert slo == SLO_MS
    assert (
        f"SLO breach | minutes during which a site's p95 processing latency was above {slo:g} ms"
        in doc
    )

    def crossing(base: float, scale: float) -> float:  # base + scale·u/(1−u) = SLO
        x = (slo - base) / scale
        return x / (1 + x)

    assert round(100 * crossing(b1, s1)) == low  # the slowest site at rest, steepest rise
    assert round(100 * crossing(b0, s0)) == high
    twin = Twin(small_world, parse_scenario("duration: 10m\n", small_world))
    assert b0 <= twin.base_ms.min() <= twin.base_ms.max() <= b1
    assert s0 <= twin.scale_ms.min() <= twin.scale_ms.max() <= s1


def turn_table() -> dict[str, float]:
    """docs/turn.md's measured table: each row's anyedge/coturn ratio."""
    doc = (ROOT / "docs" / "turn.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| ([^|]+?) \| [^|]+ \| [^|]+ \| ([\d.]+) \|$", doc, flags=re.M)
    return {name: float(ratio) for name, ratio in rows}


def test_readme_states_the_turn_ratios_of_the_measured_table() -> None:
    table = turn_table()
    packets = [v for k, v in table.items() if k.startswith("delivered packets/s")]
    allocations = [v for k, v in table.items() if k.startswith("allocations/s")]
    memory = table["memory per allocation at 1,000 / 10,000"]
    assert len(packets) == 2
    assert len(allocations) == 2
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    m = re.search(
        r"delivers ([\d.]+)–([\d.]+) of coturn's packets per second, sets up ([\d.]+)–([\d.]+) "
        r"of its allocations per second and needs a (\w+) of its memory per allocation",
        readme,
    )
    assert m is not None, "the README states the TURN ratios"
    assert [float(x) for x in m.groups()[:2]] == [min(packets), max(packets)]
    assert [float(x) for x in m.groups()[2:4]] == [min(allocations), max(allocations)]
    fraction = {"eighth": 8, "ninth": 9, "tenth": 10}[m.group(5)]
    assert round(1 / memory) == fraction


def test_docs_cite_what_exists() -> None:
    """No citation of a ``reference/`` folder the repository does not have; a package
    DESIGN.md lists as built exists, one it lists as planned does not yet."""
    assert not (ROOT / "reference").exists()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert "`reference/`" not in path.read_text(encoding="utf-8"), path.name
    design = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| [^|]+ \| ([^|]+) \| ([^|]+) \|$", design, flags=re.M)
    seen = 0
    for packages, state in rows:
        for name in re.findall(r"`anyedge\.(\w+)`", packages):
            there = (ROOT / "src" / "anyedge" / name).is_dir()
            assert there == (not state.strip().startswith("planned")), (name, state)
            seen += 1
    assert seen >= 14
    predict = (ROOT / "docs" / "predict.md").read_text(encoding="utf-8")
    assert "anyedge lab predict" in predict
    assert "## Not yet" not in predict


def test_readme_states_the_default_worlds_reach_after_routing(default_world: World) -> None:
    """The README's after-routing figures, from the default world."""
    from anyedge.routing.reach import served_rtt

    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    m = re.search(
        r"On the default world, ([\d.]+) % of demand is within 50 ms, the median is "
        r"([\d.]+) ms and the 90th percentile ([\d.]+) ms",
        text,
    )
    assert m is not None, "the README no longer states the after-routing figures"
    s = served_rtt(default_world)
    assert float(m[1]) == round(100 * s["demand_within_ms"]["50"], 2)
    assert float(m[2]) == round(s["median_ms"], 1)
    assert float(m[3]) == round(s["p90_ms"], 1)
