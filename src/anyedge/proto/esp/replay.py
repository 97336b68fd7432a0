"""The inbound anti-replay window of RFC 4303 §3.4.3, 64 packets wide.

The window remembers the highest sequence number accepted and a bitmap of the 64
below it.  A packet is checked *before* its ICV (cheap rejection) and recorded only
*after* it authenticated, so forged packets cannot move the window.  Sequence number 0
is never sent and is rejected.
"""

from __future__ import annotations

WINDOW = 64


class ReplayWindow:
    __slots__ = ("bitmap", "size", "top")

    def __init__(self, size: int = WINDOW) -> None:
        self.top = 0
        self.bitmap = 0  # bit i set: top - i was received
        self.size = size

    def check(self, seq: int) -> bool:
        """Whether ``seq`` may be new (not yet seen, not left behind the window)."""
        if seq == 0:
            return False
        if seq > self.top:
            return True
        offset = self.top - seq
        return offset < self.size and not self.bitmap >> offset & 1

    def accept(self, seq: int) -> None:
        """Record ``seq`` (after it authenticated)."""
        if seq > self.top:
            shift = seq - self.top
            self.bitmap = ((self.bitmap << shift) | 1) & ((1 << self.size) - 1)
            self.top = seq
        else:
            self.bitmap |= 1 << (self.top - seq)
