"""Files a user writes and anyedge writes back: topology YAML and CAIDA as-rel.

The names are loaded on first use: reading an as-rel file does not load the topology
schema (pydantic), so that ``anyedge catchment --as-rel`` starts quickly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .asrel import AsRel, format_as_rel, parse_as_rel, read_as_rel, write_as_rel
    from .topology import (
        AS_REL_FILE,
        TOPOLOGY_FILE,
        load_world,
        parse_world,
        save_world,
        world_to_dict,
    )

_WHERE = {
    **dict.fromkeys(
        ["AsRel", "format_as_rel", "parse_as_rel", "read_as_rel", "write_as_rel"], "asrel"
    ),
    **dict.fromkeys(
        [
            "AS_REL_FILE",
            "TOPOLOGY_FILE",
            "load_world",
            "parse_world",
            "save_world",
            "world_to_dict",
        ],
        "topology",
    ),
}

__all__ = [
    "AS_REL_FILE",
    "TOPOLOGY_FILE",
    "AsRel",
    "format_as_rel",
    "load_world",
    "parse_as_rel",
    "parse_world",
    "read_as_rel",
    "save_world",
    "world_to_dict",
    "write_as_rel",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
