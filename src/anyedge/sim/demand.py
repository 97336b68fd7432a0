"""Demand over a day: every metro follows its own local time.

The day curve lives with the model (:mod:`anyedge.model.daycurve`), where the world
builder sizes each site on its busiest moment; the twin drives its demand with it.
"""

from ..model.daycurve import PROFILE, diurnal, local_hours

__all__ = ["PROFILE", "diurnal", "local_hours"]
