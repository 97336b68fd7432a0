"""The examples in the documentation run."""

from __future__ import annotations

import re
from pathlib import Path

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


def test_readme_and_simulate_doc_state_the_same_default_day() -> None:
    doc = default_day_in_docs()
    assert set(doc) == {"none", "withdraw", "manager"}
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    m = re.search(
        r"requests fail at ([\d.]+) % with no traffic management, ([\d.]+) % with prefix "
        r"withdrawal only and ([\d.]+) % with the Traffic Manager; SLO breach is ([\d,]+), "
        r"([\d,]+) and ([\d,]+) site-minutes",
        readme,
    )
    assert m is not None, "the README states the default day's numbers"
    said = [float(x.replace(",", "")) for x in m.groups()]
    for i, mode in enumerate(("none", "withdraw", "manager")):
        assert (said[i], said[i + 3]) == doc[mode], mode
