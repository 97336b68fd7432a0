"""The Traffic Manager: a pure decision core that keeps every site under its maximum CPU
threshold by moving plans' traffic to nearby sites with room, reverting moves when load
falls, and learning each site's maximum threshold from the history of its CPU
utilisation against p95 latency; it reads no clock and knows no world.
"""

from .core import Action, Config, Failover, Observation, Plan, State, apply, decide
from .interfaces import Actuator, Telemetry
from .learn import LearnedThreshold, learn_maximum

__all__ = [
    "Action",
    "Actuator",
    "Config",
    "Failover",
    "LearnedThreshold",
    "Observation",
    "Plan",
    "State",
    "Telemetry",
    "apply",
    "decide",
    "learn_maximum",
]
