"""The two interfaces every world implements for the Traffic Manager: telemetry in,
actuator out.

The twin, the lab and a production deployment differ only here.  A :class:`Telemetry`
returns the :class:`~.core.Observation` of the network at a given time; an
:class:`Actuator` makes the network match a :class:`~.core.State` — absolutely, not by
increments, so that carrying out the same state twice changes nothing (a controller that
restarts after a crash re-applies its last journaled state safely).
"""

from __future__ import annotations

from typing import Protocol

from .core import Observation, Plan, State


class Telemetry(Protocol):
    def observe(self, now: float) -> Observation:
        """What the network looks like at ``now``."""
        ...


class Actuator(Protocol):
    def enforce(self, state: State, plan: Plan, now: float) -> None:
        """Make the network carry out ``state`` (``plan`` says what changed and why)."""
        ...
