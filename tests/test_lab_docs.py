"""Every command of docs/lab.md's session runs, in order, against a real lab — and the
README's lab commands are among them.  The lab is taken down whatever happens."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from subprocess import PIPE

import pytest

from anyedge.adapters import netns
from anyedge.cli import lab as lab_cli
from anyedge.cli.main import main
from anyedge.lab import build
from anyedge.lab.plan import namespace_prefix
from lab_support import lab_directory

ROOT = Path(__file__).resolve().parent.parent


def commands(doc: str) -> list[str]:
    text = (ROOT / doc).read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    lines = [ln.split("  #")[0].strip() for b in blocks for ln in b.splitlines()]
    return [ln for ln in lines if ln.startswith("anyedge lab ") or ln == "wait"]


def test_the_readme_lab_commands_are_the_documented_ones() -> None:
    readme = commands("README.md")
    assert readme
    assert set(readme) <= set(commands("docs/lab.md"))


@pytest.mark.lab
@pytest.mark.slow
def test_the_documented_session_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    session = commands("docs/lab.md")
    assert session[0].startswith("anyedge lab up")
    assert "anyedge lab down" in session
    assert any(c.startswith("anyedge lab load") and c.endswith("&") for c in session)
    (tmp_path / "tests" / "data").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "data" / "lab3.yaml", tmp_path / "tests" / "data")
    root = lab_directory()
    monkeypatch.setattr(lab_cli, "DEFAULT_ROOT", root)
    monkeypatch.chdir(tmp_path)
    # a command ending in & runs in the background, as a shell would run it, until "wait"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "ANYEDGE_LAB_ROOT": str(root)}
    background: list[tuple[str, subprocess.Popen[str]]] = []
    try:
        for cmd in session:
            if cmd.endswith("&"):
                argv = [sys.executable, "-m", "anyedge", *shlex.split(cmd[:-1])[1:]]
                background.append((cmd, subprocess.Popen(argv, env=env, text=True, stdout=PIPE)))
                continue
            if cmd == "wait":
                for bg, p in background:
                    stdout, _ = p.communicate(timeout=120)
                    assert p.returncode == 0, f"{bg}: exit {p.returncode}"
                    if bg.startswith("anyedge lab load c1"):  # AKL took what CHC could not
                        assert "AKL" in stdout, stdout
                background.clear()
                continue
            code = main(shlex.split(cmd)[1:])
            out = capsys.readouterr()
            assert code == 0, f"{cmd}: exit {code}\n{out.out}\n{out.err}"
            if cmd == "anyedge lab probe --tcp":
                assert "AKL" in out.out
                assert "CHC" not in out.out.split("c1", 1)[1].split("\n", 1)[0]
            if cmd.startswith("anyedge lab control"):  # the closed loop moved and took back
                assert "forward CHC free" in out.out, out.out
                assert "revert CHC free" in out.out, out.out
    finally:
        for _, p in background:
            p.kill()
            p.communicate()
        if (root / "lab" / build.STATE).exists():
            build.down(root / "lab", "lab")
        shutil.rmtree(root, ignore_errors=True)
    assert netns.listed(namespace_prefix("lab")) == []
    assert (tmp_path / "lab15.yaml").exists()
