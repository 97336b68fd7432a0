"""The atlas on Ray is the atlas on local cores, bit for bit.

Ray 2.x removed ``local_mode``; the "local" Ray run is a real one-machine Ray cluster
that ``run_ray`` starts on loopback and stops again.  Each test checks that no Ray
process it started outlives it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from anyedge.cli.main import main
from anyedge.model import World
from anyedge.predict import Atlas, build_atlas

pytest.importorskip("ray")

TINY = str(Path(__file__).parent / "data" / "tiny.yaml")


def ray_processes() -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    return [
        line
        for line in ps.stdout.splitlines()
        if "ray::" in line or "raylet" in line or "gcs_server" in line
    ]


@pytest.mark.slow
def test_ray_atlas_equals_local_atlas(small_world: World) -> None:
    before = ray_processes()
    local = build_atlas(small_world, k=3, jobs=1)
    on_ray = build_atlas(small_world, k=3, use_ray=True)
    assert on_ray.to_json() == local.to_json()
    assert len(local.scenarios) > 40
    assert ray_processes() == before


@pytest.mark.slow
def test_cli_predict_all_on_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    local, ray_file = tmp_path / "local.json", tmp_path / "ray.json"
    assert main(["predict", "-t", TINY, "--all", "--out", str(local), "--json"]) == 0
    summary_local = json.loads(capsys.readouterr().out)
    args = ["predict", "-t", TINY, "--all", "--ray", "local", "--out", str(ray_file), "--json"]
    assert main(args) == 0
    summary_ray = json.loads(capsys.readouterr().out)
    assert summary_ray == summary_local
    assert summary_ray["scenarios"] == len(Atlas.load(local).scenarios)
    assert ray_file.read_text() == local.read_text()
