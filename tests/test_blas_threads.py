"""anyedge runs OpenBLAS on one thread unless the user sets another count.

Its products are small, and on a busy machine OpenBLAS's threads wait on each other:
a dot of 18,474 users took 3.4 ms on two threads against 6 us on one with the other
core loaded (see ``anyedge/__init__.py``).  The count must be set before numpy loads
OpenBLAS, so these check the loaded library itself, in this test process (which the
whole suite runs in) and in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from threadpoolctl import threadpool_info

import anyedge  # noqa: F401  (what sets the count)

SRC = str(Path(__file__).resolve().parent.parent / "src")
SHOW = (
    "import anyedge, numpy, threadpoolctl; "
    "print(sorted({i['num_threads'] for i in threadpoolctl.threadpool_info() "
    "if i['internal_api'] == 'openblas'}))"
)


def _openblas_threads(env: dict[str, str]) -> str:
    r = subprocess.run(
        [sys.executable, "-c", SHOW],
        env={**env, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        check=True,
    )
    return r.stdout.strip()


def test_this_process_runs_openblas_on_one_thread() -> None:
    threads = [i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"]
    assert threads  # numpy and scipy may each load their own OpenBLAS
    assert set(threads) == {1}


def test_a_fresh_interpreter_gets_one_thread_and_a_users_count_wins() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    assert _openblas_threads(env) == "[1]"
    assert _openblas_threads({**env, "OPENBLAS_NUM_THREADS": "2"}) == "[2]"
