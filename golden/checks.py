"""Parameter checks shared by every layer: one definition of "an int in range", "a choice", ...

Every constructor and config object of the project validates its parameters with these, so a
bad value always gets the same kind of one-line message naming the parameter, the bad value and
what was expected. Integers may be Python ``int`` or NumPy integers (a value read from an array
is a valid parameter); ``bool`` is refused although it is an ``int`` subclass (``lanes=True`` is
a mistake, not 1).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

__all__ = ["BitmodError", "check_bool", "check_choice", "check_int", "check_number", "is_int"]


class BitmodError(Exception):
    """Base of the errors a flow reports as one line (a tool failed, a simulation did not
    finish, a link or a device refused): the command line prints the message, no traceback.
    Bad parameters raise ``ValueError``/``TypeError`` instead."""


def is_int(value) -> bool:
    """True for ``int`` and NumPy integers, False for ``bool`` and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _bounds(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"in {lo}..{hi}"
    if lo is not None:
        return f">= {lo}"
    return f"<= {hi}"


def check_int(name: str, value, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as a Python ``int`` if it is an integer in ``lo..hi`` (either bound optional).

    Raises
    ------
    TypeError
        ``value`` is not an integer (or is a ``bool``).
    ValueError
        ``value`` is outside the bounds.
    """
    if not is_int(value):
        raise TypeError(f"{name} must be an int, not {value!r}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name} must be {_bounds(lo, hi)}, not {value}")
    return value


def check_number(name: str, value, lo: float | None = None, hi: float | None = None, *,
                 positive: bool = False) -> float:
    """``value`` as a finite ``float`` (an int or a float, not a bool) within the bounds.

    ``positive=True`` excludes zero (a clock, a baud rate, a frequency).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, not {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, not {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be positive, not {value:g}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name} must be {_bounds(lo, hi)}, not {value:g}")
    return value


def check_bool(name: str, value) -> bool:
    """``value`` if it is a ``bool`` (``1`` or ``"yes"`` are refused: they hide mistakes)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def check_choice(name: str, value, choices: Iterable):
    """``value`` if it is one of ``choices``; the message lists them."""
    options = tuple(choices)
    if not isinstance(value, str | int) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(str, options))}, "
                         f"not {value!r}")
    return value
