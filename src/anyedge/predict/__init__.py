"""The Traffic Predictor: where traffic goes when sites fail, and who can take it.

``Predictor(world)`` computes the base catchment once; ``outcome(Scenario(...))`` tells
where a failure sends the failed sites' users and what that does to every receiver's
load; :func:`build_atlas` runs every scenario of :func:`atlas_scenarios` (each site
alone, with each of its k nearest, with all of them; each section of a multi-colo site)
on local cores or on Ray, and ranks the riskiest.
"""

from __future__ import annotations

from collections.abc import Callable

from ..model.world import World
from ..routing import Mode
from .atlas import Atlas
from .backends import run_local, run_ray, run_serial
from .predictor import Outcome, Predictor
from .scenarios import Scenario, atlas_scenarios, nearest_sites


def build_atlas(
    world: World,
    prefix: int = 0,
    k: int = 5,
    jobs: int | None = None,
    ray_address: str | None = None,
    use_ray: bool = False,
    mode: Mode = Mode.METRO,
    sections: bool = True,
    progress: Callable[[int], None] | None = None,
    predictor: Predictor | None = None,
) -> Atlas:
    """The whole atlas of one prefix (see the module doc)."""
    p = predictor or Predictor(world, prefix, mode)
    scenarios = atlas_scenarios(world, k, sections=sections)
    if use_ray or ray_address:
        outcomes = run_ray(world, prefix, mode, scenarios, ray_address, progress)
    else:
        outcomes = run_local(p, scenarios, jobs, progress)
    return Atlas.build(p, outcomes, k)


__all__ = [
    "Atlas",
    "Outcome",
    "Predictor",
    "Scenario",
    "atlas_scenarios",
    "build_atlas",
    "nearest_sites",
    "run_local",
    "run_ray",
    "run_serial",
]
