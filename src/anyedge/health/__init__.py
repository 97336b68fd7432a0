"""Health-checked announcements for every anycast service: a site announces a service's
prefix while the service passes its checks (rise/fall counts, no flapping), withdraws
it on failure, on an operator's drain or when its checker falls silent (dead-man
timer), and never withdraws the last announcing site without an operator's override.
Sans-IO: check results and ``now`` in, announce/withdraw changes out (:mod:`.core`).
"""

from .core import TEXT, Change, Health, Reason, Settings, Wish, decide

__all__ = ["TEXT", "Change", "Health", "Reason", "Settings", "Wish", "decide"]
