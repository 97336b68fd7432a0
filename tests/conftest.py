"""Shared fixtures and the rules for the ``lab`` and ``slow`` markers.

``lab`` tests need root and network namespaces; where they cannot run they are skipped
with the reason, never silently passed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anyedge.model import World
from anyedge.model.worldgen import WorldOptions, build_world

HERE = Path(__file__).parent
DATA = HERE / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="lab tests need root (network namespaces)")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def default_world() -> World:
    """The default 300-site world, built once per test run."""
    return build_world(WorldOptions())


@pytest.fixture(scope="session")
def small_world() -> World:
    """A 40-site world, quick to build and save."""
    return build_world(WorldOptions(sites=40, mcp=5, min_city_population=500_000))
