"""How much to move, what to move and where to: the Traffic Manager's arithmetic.

The reference states it in three rules, applied here to arrays:

* **How much.**  A site above its maximum threshold aims for its target: with CPU time
  ``t`` at utilisation ``u``, the target CPU time is ``t × target / u`` (load is taken
  to grow linearly with CPU time), and the difference moves.  At 90 % with a target of
  85 % and 18,000 ms/s, 1,000 ms/s move.
* **Where it can go.**  A site below its acceptable threshold, and not forwarding
  itself, can take ``t × acceptable / u − t``.
* **What, and to whom.**  Plans give up CPU time from the lowest priority up (free,
  then pro, then business; enterprise only if allowed), whole or in part, until the
  amount is met.  Receivers are taken nearest first, each filled before the next, and
  the *highest*-priority plan being moved goes to the nearest.

Worked example (the reference's): move 1,000 from A with free 500, pro 400, business
200, enterprise 1,000 → free 100 %, pro 100 %, business 50 %.  With B, C, D able to take
300, 300 and 1,000 at 100, 110 and 120 ms: business 50 % → B; pro 50 % → B and 50 % → C;
free 20 % → C and 80 % → D.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.integer]


def to_move(cpu: npt.ArrayLike, utilisation: npt.ArrayLike, target: npt.ArrayLike) -> FloatArray:
    """CPU time to move so that utilisation comes down to ``target``."""
    t, u = np.asarray(cpu, dtype=np.float64), np.asarray(utilisation, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        goal = np.where(u > 0, t * np.asarray(target) / np.where(u > 0, u, 1.0), t)
    return np.asarray(np.maximum(t - goal, 0.0))


def can_accept(
    cpu: npt.ArrayLike, utilisation: npt.ArrayLike, acceptable: npt.ArrayLike
) -> FloatArray:
    """CPU time a site could take before reaching ``acceptable`` (0 if already above)."""
    t, u = np.asarray(cpu, dtype=np.float64), np.asarray(utilisation, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(u > 0, t * np.asarray(acceptable) / np.where(u > 0, u, 1.0) - t, 0.0)
    return np.asarray(np.maximum(room, 0.0))


def take(amount: float, plan_cpu: list[float], movable: list[bool]) -> list[float]:
    """CPU time taken from each plan (index = priority, lowest first) to make ``amount``,
    on plain floats (the decision core calls this once per overloaded site)."""
    taken = [0.0] * len(plan_cpu)
    left = amount
    for p, (c, m) in enumerate(zip(plan_cpu, movable, strict=True)):
        if m and left > 0:
            taken[p] = min(c, left)
            left -= taken[p]
    return taken


def fill(taken: list[float], room: list[float]) -> tuple[list[tuple[int, int, float]], int]:
    """Send what is taken to receivers with ``room`` (nearest first), highest-priority
    plan first, each receiver filled before the next: ``(plan, receiver position, CPU)``
    per move, and how many receivers were filled up."""
    need, left = list(taken), list(room)
    moves: list[tuple[int, int, float]] = []
    r = 0
    for p in range(len(need) - 1, -1, -1):  # highest priority first
        while need[p] > 1e-12 and r < len(left):
            give = min(need[p], left[r])
            need[p] -= give
            left[r] -= give
            if give > 0:
                moves.append((p, r, give))
            if left[r] <= 1e-12:
                r += 1
    return moves, r


def take_from_plans(amount: float, plan_cpu: npt.ArrayLike, movable: npt.ArrayLike) -> FloatArray:
    """CPU time taken from each plan (index = priority, lowest first) to make ``amount``."""
    cpu = np.asarray(plan_cpu, np.float64).tolist()
    mov = np.asarray(movable, dtype=np.bool_).tolist()
    return np.asarray(take(float(amount), cpu, mov))


@dataclass(frozen=True)
class Split:
    """CPU time of each plan sent to each receiver: ``cpu[plan, receiver]``."""

    cpu: FloatArray  # (plans, receivers) ms/s
    receivers: IntArray  # receiver ids, in the order given (nearest first)

    @property
    def moved(self) -> float:
        return float(self.cpu.sum())


def assign(taken: npt.ArrayLike, receivers: npt.ArrayLike, room: npt.ArrayLike) -> Split:
    """Send what is taken to receivers, nearest first, highest-priority plan first.

    ``taken[p]`` is CPU time of plan ``p`` to move; ``receivers`` are ids nearest first
    with ``room`` each.  Each receiver is filled before the next; a plan that does not
    fit spills to the next receiver.  What no receiver can take stays (the sum of the
    split is then less than what was taken).
    """
    need = np.asarray(taken, dtype=np.float64)
    left = np.asarray(room, dtype=np.float64)
    out = np.zeros((need.size, left.size))
    moves, _ = fill(need.tolist(), left.tolist())
    for p, r, c in moves:
        out[p, r] += c
    return Split(cpu=out, receivers=np.asarray(receivers))
