"""docs/dns.md's session runs, in order, against a real lab (DNS at every site, health
checks, a drain), and what it shows is what the page says.  The lab is taken down
whatever happens."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

from anyedge.cli import lab as lab_cli
from anyedge.cli.main import main
from lab_support import lab_directory, tear_down
from test_lab_docs import commands

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


def test_the_dns_session_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    session = commands("docs/dns.md")
    # the first session; the second (lab rtt, on a generated lab with delays) is
    # tests/test_lab_dns_rtt.py's
    session = session[: session.index("anyedge lab down") + 1]
    assert session[0].startswith("anyedge lab up")
    (tmp_path / "tests" / "data").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "data" / "lab3-operators.yaml", tmp_path / "tests" / "data")
    root = lab_directory()
    monkeypatch.setattr(lab_cli, "DEFAULT_ROOT", root)
    monkeypatch.chdir(tmp_path)
    digs = []
    try:
        for cmd in session:
            argv = shlex.split(cmd)[1:]
            code = main([*argv, "--json"] if argv[1] in ("dig", "verfploeter") else argv)
            out = capsys.readouterr()
            assert code == 0, f"{cmd}: exit {code}\n{out.out}\n{out.err}"
            if argv[1] == "dig":
                digs.append({r["client"]: r["site"] for r in json.loads(out.out)})
            if argv[1] == "verfploeter":
                assert json.loads(out.out) == {"c1": "CHC", "c2": "AKL"}
            if argv[1] == "drain":
                assert "drained by the operator" in out.out
            if argv[1] == "health-log":
                assert "2 checks in a row passed" in out.out
        assert digs == [{"c1": "CHC", "c2": "AKL"}, {"c1": "AKL", "c2": "AKL"}]
    finally:
        tear_down(root / "lab", "lab")
        shutil.rmtree(root, ignore_errors=True)
