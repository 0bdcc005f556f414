"""Arrival processes of one request class. Rates in requests per second; times in milliseconds."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from ..errors import ModelError, finite_number, require

__all__ = ["Arrival", "PoissonArrival", "DeterministicArrival", "RenewalArrival", "TraceArrival"]


class Arrival:
    """An arrival process with a long-run rate ``rate_per_s`` (requests per second)."""

    kind: ClassVar[str]

    @property
    def rate_per_s(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def rate_per_ms(self) -> float:
        return self.rate_per_s / 1000.0

    def scaled(self, factor: float) -> "Arrival":  # pragma: no cover - abstract
        """The same process with every rate multiplied by ``factor`` (> 0)."""
        raise NotImplementedError

    def gaps_ms(self, rng: np.random.Generator, size: int) -> np.ndarray:  # pragma: no cover
        """``size`` consecutive inter-arrival gaps in ms (renewal processes)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


def _factor(factor: float) -> float:
    return finite_number(factor, "load", minimum=0, strict=True)


@dataclass(frozen=True)
class PoissonArrival(Arrival):
    """Poisson arrivals at ``rate`` requests per second."""

    rate: float
    kind: ClassVar[str] = "poisson"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", finite_number(self.rate, "rate_per_s", minimum=0))

    rate_per_s = property(lambda self: self.rate)

    def scaled(self, factor: float) -> "PoissonArrival":
        return replace(self, rate=self.rate * _factor(factor))

    def gaps_ms(self, rng: np.random.Generator, size: int) -> np.ndarray:
        if self.rate == 0:
            return np.full(size, np.inf)
        return rng.exponential(1000.0 / self.rate, size)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rate_per_s": self.rate}


@dataclass(frozen=True)
class DeterministicArrival(Arrival):
    """One request every ``1000 / rate`` ms, the first at time ``offset_ms``."""

    rate: float
    offset_ms: float = 0.0
    kind: ClassVar[str] = "deterministic"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", finite_number(self.rate, "rate_per_s", minimum=0))
        object.__setattr__(self, "offset_ms", finite_number(self.offset_ms, "offset_ms", minimum=0))

    rate_per_s = property(lambda self: self.rate)

    def scaled(self, factor: float) -> "DeterministicArrival":
        return replace(self, rate=self.rate * _factor(factor))

    def gaps_ms(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.full(size, np.inf if self.rate == 0 else 1000.0 / self.rate)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "rate_per_s": self.rate}
        if self.offset_ms:
            d["offset_ms"] = self.offset_ms
        return d


_RENEWAL = ("gamma", "lognormal", "weibull")


def _weibull_scv(k: float) -> float:
    from scipy.special import gammaln

    return math.exp(gammaln(1 + 2 / k) - 2 * gammaln(1 + 1 / k)) - 1


@dataclass(frozen=True)
class RenewalArrival(Arrival):
    """Renewal arrivals: i.i.d. gaps with mean 1000/rate ms and squared coefficient of variation ``scv``.

    ``distribution`` is ``gamma`` (scv = 1 is Poisson), ``lognormal`` or ``weibull``.
    """

    rate: float
    scv: float = 1.0
    distribution: str = "gamma"
    kind: ClassVar[str] = "renewal"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", finite_number(self.rate, "rate_per_s", minimum=0))
        object.__setattr__(self, "scv", finite_number(self.scv, "scv", minimum=0, strict=True))
        require(self.distribution in _RENEWAL, "distribution", self.distribution, f"must be one of {list(_RENEWAL)}")
        if self.distribution == "weibull":  # the shape is solved in [0.05, 500] by gaps_ms
            lo, hi = _weibull_scv(500.0), _weibull_scv(0.05)
            require(lo <= self.scv <= hi, "scv", self.scv, f"a weibull scv must lie in [{lo:.3g}, {hi:.3g}]")

    rate_per_s = property(lambda self: self.rate)

    def scaled(self, factor: float) -> "RenewalArrival":
        return replace(self, rate=self.rate * _factor(factor))

    def gaps_ms(self, rng: np.random.Generator, size: int) -> np.ndarray:
        if self.rate == 0:
            return np.full(size, np.inf)
        m = 1000.0 / self.rate
        if self.distribution == "gamma":
            k = 1.0 / self.scv
            return rng.gamma(k, m / k, size)
        if self.distribution == "lognormal":
            s2 = math.log1p(self.scv)
            return rng.lognormal(math.log(m) - s2 / 2, math.sqrt(s2), size)
        # Weibull: solve the shape k from the scv, scale from the mean.
        from scipy.optimize import brentq
        from scipy.special import gammaln

        k = brentq(lambda k: _weibull_scv(k) - self.scv, 0.05, 500.0)
        lam = m / math.exp(gammaln(1 + 1 / k))
        return lam * rng.weibull(k, size)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rate_per_s": self.rate, "scv": self.scv, "distribution": self.distribution}


@dataclass(frozen=True, eq=False)
class TraceArrival(Arrival):
    """Replay of recorded arrival times ``times_ms`` (from 0), sped up by ``speedup``.

    Rate = (arrivals − 1) / span × speedup. ``source`` is how the model named the trace.
    """

    times_ms: np.ndarray
    speedup: float = 1.0
    source: dict[str, Any] | None = None
    kind: ClassVar[str] = "trace"

    def __post_init__(self) -> None:
        t = np.asarray(self.times_ms, dtype=float)
        require(t.ndim == 1 and t.size >= 2, "times_ms", f"<{t.size} times>", "must hold at least 2 arrival times")
        require(bool(np.all(np.isfinite(t))), "times_ms", "<data>", "must be finite")
        bad = np.flatnonzero(np.diff(t) < 0)
        if bad.size:
            raise ModelError(f"times_ms[{int(bad[0]) + 1}]", float(t[bad[0] + 1]), "must be sorted ascending")
        t = t - t[0]
        t.setflags(write=False)
        object.__setattr__(self, "times_ms", t)
        object.__setattr__(self, "speedup", finite_number(self.speedup, "speedup", minimum=0, strict=True))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, TraceArrival) and self.speedup == other.speedup and self.source == other.source
                and np.array_equal(self.times_ms, other.times_ms))

    def __hash__(self) -> int:
        return hash((self.kind, self.times_ms.size, self.speedup))

    def __repr__(self) -> str:
        return f"TraceArrival(n={self.times_ms.size}, rate_per_s={self.rate_per_s:.4g}, source={self.source!r})"

    @property
    def span_ms(self) -> float:
        return float(self.times_ms[-1]) / self.speedup

    @property
    def rate_per_s(self) -> float:
        span = float(self.times_ms[-1])
        if span == 0:
            return math.inf
        return (self.times_ms.size - 1) / span * 1000.0 * self.speedup

    def scaled(self, factor: float) -> "TraceArrival":
        return TraceArrival(self.times_ms, self.speedup * _factor(factor), self.source)

    def arrival_times_ms(self) -> np.ndarray:
        """Arrival instants in ms after speed-up."""
        return self.times_ms / self.speedup

    def gaps_ms(self, rng: np.random.Generator, size: int) -> np.ndarray:
        raise ModelError("arrival.kind", "trace", "a trace is replayed, not drawn: use arrival_times_ms()")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        if self.source is not None:
            d.update(self.source)
        else:
            d["times_ms"] = self.times_ms.tolist()
        if self.speedup != 1.0:
            d["speedup"] = self.speedup
        return d
