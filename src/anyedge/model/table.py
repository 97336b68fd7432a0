"""The one pattern every model table follows: a frozen dataclass of aligned arrays.

Rows are integer indices; each field is a numpy array (or a tuple of strings for names
shown at the edges) with one entry per row.  Arrays are made read-only on construction,
so a table can be shared between the predictor, the controller and the twin without
copies and without anyone changing it under the others.  Two tables are equal when
every field is equal, which is what file round trips are tested against.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import numpy.typing as npt

# Field types name the kind of number; the width (int8, int32, int64) is fixed by
# frozen_array in each table's __post_init__, so any integer array may be passed in.
FloatArray = npt.NDArray[np.floating[Any]]
IntArray = npt.NDArray[np.integer[Any]]
Int32Array = IntArray
Int8Array = IntArray
BoolArray = npt.NDArray[np.bool_]


def frozen_array(obj: object, name: str, dtype: type[Any] | np.dtype[Any]) -> None:
    """Replace ``obj.name`` with a read-only array of ``dtype`` (on a frozen dataclass)."""
    arr = np.array(getattr(obj, name), dtype=dtype, copy=True)
    arr.setflags(write=False)
    object.__setattr__(obj, name, arr)


def _equal(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a_arr, b_arr = np.asarray(a), np.asarray(b)
        return (
            a_arr.shape == b_arr.shape
            and a_arr.dtype == b_arr.dtype
            and bool(np.array_equal(a_arr, b_arr))
        )
    return a == b


class Table:
    """Mixin for frozen dataclasses of arrays: field-wise equality, no hashing."""

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(
            _equal(getattr(self, f.name), getattr(other, f.name))
            for f in fields(self)  # type: ignore[arg-type]
        )
