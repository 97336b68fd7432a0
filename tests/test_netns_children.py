"""Processes the lab starts are reaped even when they end without being stopped.

:func:`anyedge.adapters.netns.spawn` keeps each child's ``Popen``; a child that ended
after :func:`~anyedge.adapters.netns.stop` stopped waiting, or that another command
ended, used to be collected only with its ``Popen`` at exit, which then warned that a
process long gone was "still running" (a fresh-clone CI run ended with four such
warnings).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import atexit, sys, time
from pathlib import Path
from anyedge.adapters import netns
if sys.argv[1] == "without":
    atexit.unregister(netns._reap_at_exit)
netns.spawn(None, ["true"], Path(sys.argv[2]))
time.sleep(0.5)  # it ends; nothing here waits for it
"""


def run(how: str, log: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-W", "error::ResourceWarning", "-c", SCRIPT, how, str(log)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_a_child_that_ended_on_its_own_is_reaped_at_exit(tmp_path: Path) -> None:
    r = run("with", tmp_path / "true.log")
    assert r.returncode == 0, r.stderr
    assert "still running" not in r.stderr
    # the same without the exit hook: the warning this prevents
    r = run("without", tmp_path / "true.log")
    assert r.returncode == 0, r.stderr
    assert "ResourceWarning: subprocess" in r.stderr
    assert "is still running" in r.stderr
