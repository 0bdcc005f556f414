"""The one error type for bad input: :class:`ModelError`."""
from __future__ import annotations

from typing import Any


class ModelError(ValueError):
    """An invalid model field: names the field, the value given and what is allowed.

    ``str(err)`` is one line fit for a user: ``engines.gpu0.token_budget = -3: must be an
    integer >= 1``. The parts stay on the object (``field``, ``value``, ``allowed``).
    """

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field} = {value!r}: {allowed}")


def require(cond: bool, field: str, value: Any, allowed: str) -> None:
    """Raise :class:`ModelError` unless ``cond``."""
    if not cond:
        raise ModelError(field, value, allowed)


def finite_number(x: Any, field: str, *, minimum: float | None = None,
                  strict: bool = False) -> float:
    """``x`` as a finite float, optionally ``> minimum`` (strict) or ``>= minimum``.

    Raises:
        ModelError: not a real number, NaN, infinite or out of range.
    """
    import math

    if isinstance(x, bool) or not isinstance(x, (int, float)):
        try:
            import numpy as np

            if isinstance(x, np.floating | np.integer):
                x = float(x)
            else:
                raise TypeError
        except TypeError:
            raise ModelError(field, x, "must be a number") from None
    x = float(x)
    if not math.isfinite(x):
        raise ModelError(field, x, "must be a finite number")
    if minimum is not None:
        if strict and not x > minimum:
            raise ModelError(field, x, f"must be > {minimum:g}")
        if not strict and not x >= minimum:
            raise ModelError(field, x, f"must be >= {minimum:g}")
    return x


def integer(x: Any, field: str, *, minimum: int | None = None) -> int:
    """``x`` as an int (integral floats accepted), optionally ``>= minimum``.

    Raises:
        ModelError: not an integer or below ``minimum``.
    """
    if isinstance(x, bool):
        raise ModelError(field, x, "must be an integer")
    try:
        import numpy as np

        if isinstance(x, np.integer):
            x = int(x)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    if not isinstance(x, int):
        raise ModelError(field, x, "must be an integer")
    if minimum is not None and x < minimum:
        raise ModelError(field, x, f"must be an integer >= {minimum}")
    return x
