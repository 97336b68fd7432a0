"""``anyedge --help`` and ``--version`` load no subcommand and none of the heavy
libraries; the lazy group's listing says what the commands themselves say (issue 13).
These are checks of what is imported, not timings: bench/bench_cli.py times it."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from anyedge.cli.main import COMMANDS, cli

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
HEAVY = ["numpy", "scipy", "pydantic", "ray", "rich"]


def loaded_after(args: list[str], extra: str = "") -> set[str]:
    """The modules loaded by running ``anyedge ARGS`` in a fresh process (exit status 0)."""
    code = (
        "import json, sys\n"
        "from anyedge.cli.main import main\n"
        f"{extra}\n"
        f"code = main({args!r})\n"
        "sys.stderr.write('\\nMODULES ' + json.dumps(sorted(sys.modules)))\n"
        "sys.exit(code)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=ENV, capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stderr.rsplit("MODULES ", 1)[1]))


@pytest.mark.parametrize("args", [["--help"], ["--version"]], ids=["help", "version"])
def test_help_and_version_load_no_heavy_library(args: list[str]) -> None:
    mods = loaded_after(args)
    assert not {m.split(".")[0] for m in mods} & set(HEAVY), sorted(mods)
    assert not [m for m in mods if m.startswith("anyedge.cli.") and m != "anyedge.cli.main"]


def test_the_as_rel_catchment_loads_no_world_builder(tmp_path: Path) -> None:
    f = tmp_path / "g.as-rel"
    f.write_text("1|2|-1\n1|3|-1\n")
    mods = loaded_after(["catchment", "--as-rel", str(f), "--origin", "2", "--json"])
    assert "anyedge.routing" in mods
    assert not [m for m in mods if m.startswith(("scipy", "pydantic", "anyedge.model.worldgen"))]


def test_the_listing_matches_the_commands() -> None:
    for name, (module, short) in COMMANDS.items():
        importlib.import_module(module)
        cmd = cli.commands[name]
        assert (cmd.help or "").splitlines()[0] == short, name
    assert set(COMMANDS) == set(cli.commands)
    with click.Context(cli) as ctx:
        assert cli.list_commands(ctx) == sorted(COMMANDS)


def test_the_commands_copies_of_defaults_match_the_library() -> None:
    from anyedge.cli import catchment, predict, world
    from anyedge.model.worldgen import WorldOptions
    from anyedge.routing import Mode

    assert WorldOptions.headroom == world.HEADROOM
    assert set(catchment.MODES) == set(predict.MODES) == {m.value for m in Mode}
