"""Every command of docs/lab.md's session runs, in order, against a real lab — and the
README's lab commands are among them.  The lab is taken down whatever happens."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

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
    return [ln for ln in lines if ln.startswith("anyedge lab ")]


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
    (tmp_path / "tests" / "data").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "data" / "lab3.yaml", tmp_path / "tests" / "data")
    root = lab_directory()
    monkeypatch.setattr(lab_cli, "DEFAULT_ROOT", root)
    monkeypatch.chdir(tmp_path)
    try:
        for cmd in session:
            code = main(shlex.split(cmd)[1:])
            out = capsys.readouterr()
            assert code == 0, f"{cmd}: exit {code}\n{out.out}\n{out.err}"
            if cmd == "anyedge lab probe --tcp":
                assert "AKL" in out.out
                assert "CHC" not in out.out.split("c1", 1)[1].split("\n", 1)[0]
    finally:
        if (root / "lab" / build.STATE).exists():
            build.down(root / "lab", "lab")
        shutil.rmtree(root, ignore_errors=True)
    assert netns.listed(namespace_prefix("lab")) == []
    assert (tmp_path / "lab15.yaml").exists()
