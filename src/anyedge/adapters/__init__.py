"""Adapters between the Traffic Manager's pure core and the outside world: a durable
journal of its decisions in SQLite, and the controller loop that observes, decides,
journals and only then enforces.
"""

from .controller import Controller
from .journal import Journal, observation_digest

__all__ = ["Controller", "Journal", "observation_digest"]
