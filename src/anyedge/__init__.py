"""anyedge: run a global anycast edge network the way the largest CDNs run theirs.

The network model (:mod:`anyedge.model`) is the base every other part stands on; see
``DESIGN.md`` in the repository for the layers above it.
"""

__version__ = "0.1.0"
