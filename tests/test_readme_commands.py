"""Every ``anyedge`` command the README shows runs, in a scratch directory holding what
the README assumes (a saved world, a scenario, a history file)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from anyedge.cli.main import main

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)[2:]  # past the two at the top
    lines = [ln.split("  #")[0].strip() for b in blocks for ln in b.splitlines()]
    # the lab's commands need root and a lab: tests/test_lab_docs.py runs them, in order
    return [ln for ln in lines if ln.startswith("anyedge ") and not ln.startswith("anyedge lab ")]


COMMANDS = readme_commands()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("readme")
    (d / "docs" / "examples").mkdir(parents=True)
    (d / "docs" / "examples" / "observation.json").write_text(
        (ROOT / "docs" / "examples" / "observation.json").read_text(), encoding="utf-8"
    )
    (d / "my-day.yaml").write_text(
        "duration: 30m\nevents:\n  - {at: 5m, for: 10m, kind: site_dark, site: CHC}\n",
        encoding="utf-8",
    )
    rng = np.random.default_rng(1)
    u = rng.uniform(0.2, 1.0, 300)
    rows = [
        f"{60 * i},LIS,{x:.4f},{5 + 30 * x * x + rng.normal(0, 0.5):.3f}" for i, x in enumerate(u)
    ]
    (d / "history.csv").write_text(
        "time,site,utilisation,p95_ms\n" + "\n".join(rows) + "\n", encoding="utf-8"
    )
    return d


def test_the_readme_shows_commands() -> None:
    assert len(COMMANDS) >= 12
    assert any(c.startswith("anyedge simulate") for c in COMMANDS)


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(
    command: str, scratch: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(scratch)
    needs_world = "-t world/" in command or "world/internet.as-rel" in command
    if needs_world and not (scratch / "world" / "topology.yaml").exists():
        assert main(["world", "--out", "world/"]) == 0
        capsys.readouterr()
    rc = main(shlex.split(command)[1:])
    out, err = capsys.readouterr()
    assert rc == 0, f"{command}: {err}"
    assert out.strip(), command
