"""Batch processing-time models t(batch), in milliseconds.

Every model answers ``batch_ms(prefill_tokens, decode_tokens, kv_context_tokens)`` (arrays
broadcast). Token-count models (all but ``two-feature``) depend only on n = prefill + decode and
also answer ``tokens_ms(n)``; the parametric ones give ``sympy_expr(n)``.

Families (Li, Dai, Peng, arXiv 2504.07347: v1/v2 piecewise-linear, v3 staircase):

* ``constant``          t = c
* ``affine``            t = c + a·n
* ``piecewise-linear``  t = c + a·max(0, n − b0)
* ``staircase``         t = c + a·⌈n / b0⌉
* ``table``             monotone (PCHIP) interpolation of measured (n, t) points; no extrapolation
* ``two-feature``       t = c + a·max(0, n − b0) + d·D + k·K + q·P²   (P prefill tokens, D decode
  requests, K their total KV context in tokens: the attention terms measured in the profiles)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import ModelError, finite_number, integer, require

__all__ = ["BatchTime", "Constant", "Affine", "PiecewiseLinear", "Staircase", "Table", "TwoFeature"]


class BatchTime:
    """Base of the batch-time models. ``preset`` names the shipped preset it came from, if any."""

    kind: ClassVar[str]
    tokens_only: ClassVar[bool] = True

    def tokens_ms(self, n: Any) -> np.ndarray:  # pragma: no cover - abstract
        """t(n) in ms for a batch of n tokens (token-count models)."""
        raise NotImplementedError

    def batch_ms(self, prefill_tokens: Any, decode_tokens: Any, kv_context_tokens: Any = 0) -> np.ndarray:
        """Time of a batch with the given composition, in ms."""
        return self.tokens_ms(np.asarray(prefill_tokens) + np.asarray(decode_tokens))

    def sympy_expr(self, n: Any) -> Any:
        """t(n) as a sympy expression in ``n`` with symbolic parameters (see ``sympy_params``)."""
        raise ModelError("batch_time.kind", self.kind, "has no closed form; use a parametric family")

    def sympy_params(self) -> dict[str, float]:
        return {}

    def params(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        if getattr(self, "preset", None):
            return {"preset": self.preset}  # type: ignore[attr-defined]
        return {"kind": self.kind, **self.params()}


def _pos(x: Any, name: str) -> float:
    return finite_number(x, name, minimum=0)


def _check_positive_time(model: "BatchTime", c: float, a: float) -> None:
    if c + a <= 0:
        raise ModelError("batch_time.c_ms", c, "c_ms + a_ms must be > 0 so that every batch takes time")


def _n(n: Any) -> np.ndarray:
    return np.asarray(n, dtype=float)


@dataclass(frozen=True)
class Constant(BatchTime):
    c_ms: float
    preset: str | None = field(default=None, compare=False)
    kind: ClassVar[str] = "constant"

    def __post_init__(self) -> None:
        object.__setattr__(self, "c_ms", finite_number(self.c_ms, "batch_time.c_ms", minimum=0, strict=True))

    def tokens_ms(self, n: Any) -> np.ndarray:
        return np.full(np.shape(n), self.c_ms)

    def sympy_expr(self, n: Any) -> Any:
        import sympy as sp

        return sp.Symbol("c", positive=True) + 0 * n

    def sympy_params(self) -> dict[str, float]:
        return {"c": self.c_ms}

    def params(self) -> dict[str, Any]:
        return {"c_ms": self.c_ms}


@dataclass(frozen=True)
class Affine(BatchTime):
    c_ms: float
    a_ms: float
    preset: str | None = field(default=None, compare=False)
    kind: ClassVar[str] = "affine"

    def __post_init__(self) -> None:
        object.__setattr__(self, "c_ms", _pos(self.c_ms, "batch_time.c_ms"))
        object.__setattr__(self, "a_ms", _pos(self.a_ms, "batch_time.a_ms"))
        _check_positive_time(self, self.c_ms, self.a_ms)

    def tokens_ms(self, n: Any) -> np.ndarray:
        return self.c_ms + self.a_ms * _n(n)

    def sympy_expr(self, n: Any) -> Any:
        import sympy as sp

        return sp.Symbol("c", nonnegative=True) + sp.Symbol("a", nonnegative=True) * n

    def sympy_params(self) -> dict[str, float]:
        return {"c": self.c_ms, "a": self.a_ms}

    def params(self) -> dict[str, Any]:
        return {"c_ms": self.c_ms, "a_ms": self.a_ms}


@dataclass(frozen=True)
class PiecewiseLinear(BatchTime):
    """t = c + a·max(0, n − b0): flat up to the knee b0, then linear."""

    c_ms: float
    a_ms: float
    b0: int
    preset: str | None = field(default=None, compare=False)
    kind: ClassVar[str] = "piecewise-linear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "c_ms", finite_number(self.c_ms, "batch_time.c_ms", minimum=0, strict=True))
        object.__setattr__(self, "a_ms", _pos(self.a_ms, "batch_time.a_ms"))
        object.__setattr__(self, "b0", integer(self.b0, "batch_time.b0", minimum=0))

    def tokens_ms(self, n: Any) -> np.ndarray:
        return self.c_ms + self.a_ms * np.maximum(0.0, _n(n) - self.b0)

    def sympy_expr(self, n: Any) -> Any:
        import sympy as sp

        c, a, b0 = sp.symbols("c a b0", nonnegative=True)
        return c + a * sp.Max(0, n - b0)

    def sympy_params(self) -> dict[str, float]:
        return {"c": self.c_ms, "a": self.a_ms, "b0": self.b0}

    def params(self) -> dict[str, Any]:
        return {"c_ms": self.c_ms, "a_ms": self.a_ms, "b0": self.b0}


@dataclass(frozen=True)
class Staircase(BatchTime):
    """t = c + a·⌈n / b0⌉ (paper v3; CodeLlama-34B/A100: c = 11.28, a = 35.47, b0 = 128)."""

    c_ms: float
    a_ms: float
    b0: int
    preset: str | None = field(default=None, compare=False)
    kind: ClassVar[str] = "staircase"

    def __post_init__(self) -> None:
        object.__setattr__(self, "c_ms", _pos(self.c_ms, "batch_time.c_ms"))
        object.__setattr__(self, "a_ms", _pos(self.a_ms, "batch_time.a_ms"))
        object.__setattr__(self, "b0", integer(self.b0, "batch_time.b0", minimum=1))
        _check_positive_time(self, self.c_ms, self.a_ms)

    def tokens_ms(self, n: Any) -> np.ndarray:
        n = np.asarray(n)
        return self.c_ms + self.a_ms * np.ceil(_n(n) / self.b0)

    def sympy_expr(self, n: Any) -> Any:
        import sympy as sp

        c, a = sp.symbols("c a", nonnegative=True)
        b0 = sp.Symbol("b0", positive=True)
        return c + a * sp.ceiling(n / b0)

    def sympy_params(self) -> dict[str, float]:
        return {"c": self.c_ms, "a": self.a_ms, "b0": self.b0}

    def params(self) -> dict[str, Any]:
        return {"c_ms": self.c_ms, "a_ms": self.a_ms, "b0": self.b0}


@dataclass(frozen=True, eq=False)
class Table(BatchTime):
    """Measured (n, t) points, interpolated by PCHIP (shape preserving: monotone data stay monotone).

    Evaluating outside [min n, max n] raises :class:`ModelError`: measurements are never extrapolated.
    """

    tokens: np.ndarray
    times_ms: np.ndarray
    source: dict[str, Any] | None = None
    preset: str | None = None
    kind: ClassVar[str] = "table"
    _interp: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = np.asarray(self.tokens, dtype=float)
        t = np.asarray(self.times_ms, dtype=float)
        require(n.ndim == 1 and n.size >= 2 and n.size == t.size, "batch_time.tokens", f"<{n.size} points>",
                "must hold at least 2 (tokens, time) points, as many times as token counts")
        require(bool(np.all(np.isfinite(n)) and np.all(np.isfinite(t))), "batch_time", "<table>", "must be finite")
        order = np.argsort(n, kind="stable")
        n, t = n[order], t[order]
        dup = np.flatnonzero(np.diff(n) == 0)
        if dup.size:
            raise ModelError("batch_time.tokens", int(n[dup[0]]),
                             "appears twice: a table needs one time per token count (filter the profile by scenario)")
        if n[0] < 1:
            raise ModelError("batch_time.tokens", float(n[0]), "must be >= 1")
        bad = np.flatnonzero(t <= 0)
        if bad.size:
            raise ModelError("batch_time.times_ms", float(t[bad[0]]), "must be > 0")
        from scipy.interpolate import PchipInterpolator

        n.setflags(write=False)
        t.setflags(write=False)
        object.__setattr__(self, "tokens", n)
        object.__setattr__(self, "times_ms", t)
        object.__setattr__(self, "_interp", PchipInterpolator(n, t, extrapolate=False))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Table) and np.array_equal(self.tokens, other.tokens)
                and np.array_equal(self.times_ms, other.times_ms))

    def __hash__(self) -> int:
        return hash((self.kind, self.tokens.size))

    def __repr__(self) -> str:
        return f"Table(n={self.tokens.size} points, tokens {self.tokens[0]:g}..{self.tokens[-1]:g}, source={self.source!r})"

    @property
    def max_tokens(self) -> int:
        return int(self.tokens[-1])

    def tokens_ms(self, n: Any) -> np.ndarray:
        x = _n(n)
        out = np.asarray(self._interp(x), dtype=float)
        if np.any(~np.isfinite(out)):
            bad = x[~np.isfinite(out)].ravel()[0]
            raise ModelError("batch tokens", float(bad),
                             f"outside the measured table [{self.tokens[0]:g}, {self.tokens[-1]:g}]: not extrapolated")
        return out

    def params(self) -> dict[str, Any]:
        if self.source is not None:
            return dict(self.source)
        return {"tokens": self.tokens.tolist(), "times_ms": self.times_ms.tolist()}


@dataclass(frozen=True)
class TwoFeature(BatchTime):
    """t = c + a·max(0, P + D − b0) + decode_ms·D + kv_ms·K + prefill_sq_ms·P².

    P prefill tokens, D decode requests (one token each), K total KV context of those requests
    (tokens). The linear layers see P + D tokens (flat then linear); attention adds a per-request
    and a per-context-token cost for decodes and a quadratic cost for prefill chunks.
    """

    c_ms: float
    a_ms: float
    b0: int
    decode_ms: float = 0.0
    kv_ms: float = 0.0
    prefill_sq_ms: float = 0.0
    preset: str | None = field(default=None, compare=False)
    kind: ClassVar[str] = "two-feature"
    tokens_only: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "c_ms", finite_number(self.c_ms, "batch_time.c_ms", minimum=0, strict=True))
        for name in ("a_ms", "decode_ms", "kv_ms", "prefill_sq_ms"):
            object.__setattr__(self, name, _pos(getattr(self, name), f"batch_time.{name}"))
        object.__setattr__(self, "b0", integer(self.b0, "batch_time.b0", minimum=0))

    def tokens_ms(self, n: Any) -> np.ndarray:
        raise ModelError("batch_time.kind", self.kind,
                         "depends on the batch composition: use batch_ms(prefill, decode, kv_context)")

    def batch_ms(self, prefill_tokens: Any, decode_tokens: Any, kv_context_tokens: Any = 0) -> np.ndarray:
        P = _n(prefill_tokens)
        D = _n(decode_tokens)
        K = _n(kv_context_tokens)
        return (self.c_ms + self.a_ms * np.maximum(0.0, P + D - self.b0) + self.decode_ms * D
                + self.kv_ms * K + self.prefill_sq_ms * P * P)

    def params(self) -> dict[str, Any]:
        return {"c_ms": self.c_ms, "a_ms": self.a_ms, "b0": self.b0, "decode_ms": self.decode_ms,
                "kv_ms": self.kv_ms, "prefill_sq_ms": self.prefill_sq_ms}
