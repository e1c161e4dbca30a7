"""Checks of the public API's numeric arguments at the entry point, so that a wrong value is
reported in the caller's terms (``k must be a positive integer, got 0``), not by the name an
inner function gives it."""
from __future__ import annotations

import math
import numbers


def positive_int(value, name: str, *, optional: bool = False) -> int | None:
    """``value`` as an ``int`` when it is a whole number >= 1 (``1e3`` counts as 1000; a bool
    does not), else ``ValueError`` naming the argument ``name``; None passes when ``optional``."""
    if value is None and optional:
        return None
    whole = isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and math.isfinite(value)
                                                   and float(value).is_integer())
    if isinstance(value, bool) or not whole or value < 1:
        raise ValueError(f"{name} must be a positive integer{' (or None)' if optional else ''}, got {value!r}")
    return int(value)


def nonnegative_int(value, name: str, *, optional: bool = False) -> int | None:
    """``value`` as an ``int`` when it is an integer >= 0, else ``ValueError`` naming ``name``;
    None passes when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer{' (or None)' if optional else ''}, got {value!r}")
    return int(value)


def real(value, name: str, *, low: float = -math.inf, strict: bool = False, optional: bool = False) -> float | None:
    """``value`` as a ``float`` when it is a finite real number ``> low`` (``strict``) or ``>= low``,
    else ``ValueError`` naming ``name``; None passes when ``optional``."""
    if value is None and optional:
        return None
    bound = "" if low == -math.inf else f" {'>' if strict else '>='} {low:g}"
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
          and (value > low if strict else value >= low))
    if not ok:
        raise ValueError(f"{name} must be a finite number{bound}{' (or None)' if optional else ''}, got {value!r}")
    return float(value)


__all__ = ["positive_int", "nonnegative_int", "real"]
