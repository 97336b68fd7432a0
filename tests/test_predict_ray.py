"""The atlas on Ray is the atlas on local cores, bit for bit.

Ray 2.x removed ``local_mode``; the "local" Ray run is a real one-machine Ray cluster
that ``run_ray`` starts on loopback and stops again.  The test checks that no Ray
process it started outlives it — only its own: other Ray clusters may run on the same
machine, and their processes come and go as they will.  The test's processes are known
by a variable set in the environment for the test, which every process the cluster
starts inherits (and keeps if it is orphaned).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from anyedge import predict as predict_pkg
from anyedge.cli.main import main
from anyedge.predict import Atlas, backends

# Ray takes ~0.5 s to import; the command imports it when it runs
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="ray is not installed (the test extra)"
)

TINY = str(Path(__file__).parent / "data" / "tiny.yaml")


MARK = "ANYEDGE_RAY_TEST"


@pytest.fixture
def mark(monkeypatch: pytest.MonkeyPatch) -> str:
    """A value no other process carries, in this process's environment for the test."""
    value = f"{os.getpid()}-{secrets.token_hex(8)}"
    monkeypatch.setenv(MARK, value)
    return value


def own_processes(mark: str) -> list[str]:
    """Processes other than this one whose environment carries ``mark``: those the
    test started, wherever they were reparented."""
    want = f"{MARK}={mark}".encode()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if want in (d / "environ").read_bytes().split(b"\0"):
                args = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{d.name} {args}")
        except OSError:  # gone, or not ours to read
            continue
    return found


def none_left(mark: str, wait_s: float = 30.0) -> list[str]:
    """The test's processes still there once they have had ``wait_s`` to exit."""
    deadline = time.monotonic() + wait_s
    while (left := own_processes(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.mark.slow
def test_cli_predict_all_on_ray_equals_the_local_atlas(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    mark: str,
) -> None:
    """``predict --all --ray local`` writes the atlas the local workers write, byte for
    byte, through a Ray cluster it starts and stops (one cluster for the whole test: a
    start costs ~10 CPU-s).  Chunks of two scenarios, so that results come back from
    many tasks, out of order, and must be put back in place."""
    assert own_processes(mark) == []
    local, ray_file = tmp_path / "local.json", tmp_path / "ray.json"
    assert main(["predict", "-t", TINY, "--all", "--out", str(local), "--json"]) == 0
    summary_local = json.loads(capsys.readouterr().out)
    seen: list[str] = []
    tasks: list[int] = []

    def run_ray(
        world: Any, prefix: int, mode: Any, scenarios: Any, address: Any, progress: Any = None
    ) -> Any:
        def watch(n: int) -> None:
            tasks.append(n)
            seen.extend(own_processes(mark))
            if progress is not None:
                progress(n)

        return backends.run_ray(world, prefix, mode, scenarios, address, watch, chunk=2)

    monkeypatch.setattr(predict_pkg, "run_ray", run_ray)
    args = ["predict", "-t", TINY, "--all", "--ray", "local", "--out", str(ray_file), "--json"]
    assert main(args) == 0
    summary_ray = json.loads(capsys.readouterr().out)
    assert summary_ray == summary_local
    n = len(Atlas.load(local).scenarios)
    assert summary_ray["scenarios"] == n
    assert sum(tasks) == n  # every scenario came back ...
    assert len(tasks) == -(-n // 2)  # ... in chunks of two
    assert ray_file.read_text() == local.read_text()
    assert any("raylet" in p for p in seen)  # the mark finds the cluster while it runs
    assert none_left(mark) == []
