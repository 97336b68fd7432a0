"""Files a user writes and anyedge writes back: topology YAML and CAIDA as-rel."""

from .asrel import AsRel, format_as_rel, parse_as_rel, read_as_rel, write_as_rel
from .topology import AS_REL_FILE, TOPOLOGY_FILE, load_world, parse_world, save_world, world_to_dict

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
