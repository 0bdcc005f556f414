"""Token-length laws: marginal laws of one length and joint laws of (v_p, v_d).

Every law is a frozen dataclass with an exact ``mean``, ``var``, ``pmf(k)``, ``sample(rng, n)``
and ``to_dict()`` (the TOML form). Lengths are integers (tokens).

Conventions (stated, because the literature varies):

* ``geometric`` and ``poisson`` are shifted to start at ``min`` (default 1, since a prompt has at
  least one token): ``X = min + G`` with ``G`` geometric on {0, 1, ...} or Poisson, and ``E[X] = mean``.
* ``lognormal`` is ``X = ceil(Y)``, ``Y ~ Lognormal`` with ``E[Y] = mean`` and log-sd ``sigma``;
  its support is {1, 2, ...}. Moments are exact sums up to a point K, plus the closed-form partial
  expectations of ``Y`` beyond K (see ``Lognormal._exact_moments``).
* ``uniform`` is the discrete uniform law on ``low..high`` inclusive.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy import special, stats

from ..errors import ModelError, finite_number, integer, require

__all__ = [
    "LengthLaw", "Deterministic", "Geometric", "Poisson", "Uniform", "Lognormal", "Empirical",
    "Mixture", "JointLengths", "Independent", "EmpiricalPairs", "digest",
]


def digest(*arrays: np.ndarray) -> str:
    """Short SHA-1 of integer arrays: the identity of empirical data."""
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


class LengthLaw:
    """A law on the non-negative integers (token counts)."""

    kind: ClassVar[str]

    @property
    def mean(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def var(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def second_moment(self) -> float:
        """E[X^2]."""
        return self.var + self.mean**2

    @property
    def min_value(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def max_value(self) -> float:
        """Largest value with positive mass (``math.inf`` for unbounded laws)."""
        return math.inf

    def pmf(self, k: Any) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def support_upto(self, tail: float = 1e-12) -> int:
        """Smallest K with P(X > K) <= ``tail`` (for tables and truncated chains)."""
        if math.isfinite(self.max_value):
            return int(self.max_value)
        k = max(self.min_value, int(self.mean) + 1)
        prev = math.inf
        while (rest := 1.0 - float(np.sum(self.pmf(np.arange(0, k + 1))))) > tail:
            if rest < 1e-12 and rest >= prev:  # 1 - sum stopped falling: float noise, not a resolvable tail
                break
            prev = rest
            k *= 2
        return k


def _ks(k: Any) -> np.ndarray:
    return np.asarray(k, dtype=np.int64)


@dataclass(frozen=True)
class Deterministic(LengthLaw):
    """Always ``value`` tokens."""

    value: int
    kind: ClassVar[str] = "deterministic"

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", integer(self.value, "value", minimum=0))

    mean = property(lambda self: float(self.value))
    var = property(lambda self: 0.0)
    min_value = property(lambda self: self.value)
    max_value = property(lambda self: float(self.value))

    def pmf(self, k: Any) -> np.ndarray:
        return (_ks(k) == self.value).astype(float)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.full(size, self.value, dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}


@dataclass(frozen=True)
class Geometric(LengthLaw):
    """``min + G``, G geometric on {0, 1, ...} with success probability 1/(mean - min + 1)."""

    mean_: float
    min: int = 1
    kind: ClassVar[str] = "geometric"

    def __post_init__(self) -> None:
        m = integer(self.min, "min", minimum=0)
        object.__setattr__(self, "min", m)
        object.__setattr__(self, "mean_", finite_number(self.mean_, "mean", minimum=m))

    @property
    def p(self) -> float:
        return 1.0 / (self.mean_ - self.min + 1.0)

    mean = property(lambda self: self.mean_)
    var = property(lambda self: (1.0 - self.p) / self.p**2)
    min_value = property(lambda self: self.min)

    def pmf(self, k: Any) -> np.ndarray:
        k = _ks(k)
        j = k - self.min
        return np.where(j >= 0, stats.geom.pmf(j + 1, self.p), 0.0)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return (rng.geometric(self.p, size) - 1 + self.min).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "mean": self.mean_}
        if self.min != 1:
            d["min"] = self.min
        return d


@dataclass(frozen=True)
class Poisson(LengthLaw):
    """``min + N``, N Poisson with mean ``mean - min``."""

    mean_: float
    min: int = 1
    kind: ClassVar[str] = "poisson"

    def __post_init__(self) -> None:
        m = integer(self.min, "min", minimum=0)
        object.__setattr__(self, "min", m)
        object.__setattr__(self, "mean_", finite_number(self.mean_, "mean", minimum=m))

    mean = property(lambda self: self.mean_)
    var = property(lambda self: self.mean_ - self.min)
    min_value = property(lambda self: self.min)

    def pmf(self, k: Any) -> np.ndarray:
        return stats.poisson.pmf(_ks(k) - self.min, self.mean_ - self.min)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return (rng.poisson(self.mean_ - self.min, size) + self.min).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "mean": self.mean_}
        if self.min != 1:
            d["min"] = self.min
        return d


@dataclass(frozen=True)
class Uniform(LengthLaw):
    """Discrete uniform on ``low..high`` inclusive."""

    low: int
    high: int
    kind: ClassVar[str] = "uniform"

    def __post_init__(self) -> None:
        lo = integer(self.low, "low", minimum=0)
        hi = integer(self.high, "high", minimum=lo)
        object.__setattr__(self, "low", lo)
        object.__setattr__(self, "high", hi)

    mean = property(lambda self: (self.low + self.high) / 2.0)
    var = property(lambda self: ((self.high - self.low + 1) ** 2 - 1) / 12.0)
    min_value = property(lambda self: self.low)
    max_value = property(lambda self: float(self.high))

    def pmf(self, k: Any) -> np.ndarray:
        k = _ks(k)
        return np.where((k >= self.low) & (k <= self.high), 1.0 / (self.high - self.low + 1), 0.0)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.integers(self.low, self.high + 1, size, dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Lognormal(LengthLaw):
    """``ceil(Y)``, Y lognormal with E[Y] = ``mean`` and log-standard-deviation ``sigma``."""

    mean_y: float
    sigma: float
    kind: ClassVar[str] = "lognormal"
    _moments: tuple[float, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean_y", finite_number(self.mean_y, "mean", minimum=0, strict=True))
        object.__setattr__(self, "sigma", finite_number(self.sigma, "sigma", minimum=0, strict=True))
        object.__setattr__(self, "_moments", self._exact_moments())

    @property
    def mu(self) -> float:
        return math.log(self.mean_y) - self.sigma**2 / 2.0

    def _cdf(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        with np.errstate(divide="ignore"):
            z = (np.log(np.maximum(x, 0.0)) - self.mu) / self.sigma
        return np.where(x <= 0, 0.0, special.ndtr(z))

    def _partial(self, r: int, K: float) -> float:
        """E[Y^r ; Y > K] in closed form."""
        mu, s = self.mu, self.sigma
        return math.exp(r * mu + r * r * s * s / 2) * float(special.ndtr((mu + r * s * s - math.log(K)) / s))

    def _exact_moments(self) -> tuple[float, float]:
        # Sum the pmf up to K, then add the tail beyond K in closed form. Over Y > K the
        # fraction ceil(Y) - Y is uniform up to O(density slope), so
        # E[ceil(Y); Y > K] = E[Y; Y > K] + P(Y > K)/2 and
        # E[ceil(Y)^2; Y > K] = E[Y^2; Y > K] + E[Y; Y > K] + P(Y > K)/3, with an error below
        # P(Y > K) <= 1e-12 (or P(Y > 2^22) for very heavy tails), far under float precision of the moments.
        K = max(16.0, self.mean_y)
        while float(1 - self._cdf(np.array(K))) > 1e-12 and K < 2.0**22:
            K *= 2
        ks = np.arange(1, int(K) + 1)
        p = self.pmf(ks)
        tail = float(1 - self._cdf(np.array(K)))
        m1 = float(np.sum(ks * p)) + self._partial(1, K) + tail / 2
        m2 = float(np.sum(ks.astype(float) ** 2 * p)) + self._partial(2, K) + self._partial(1, K) + tail / 3
        return m1, m2 - m1 * m1

    mean = property(lambda self: self._moments[0])
    var = property(lambda self: self._moments[1])
    min_value = property(lambda self: 1)

    def pmf(self, k: Any) -> np.ndarray:
        k = _ks(k)
        p = self._cdf(k) - self._cdf(k - 1)
        return np.where(k >= 1, p, 0.0)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        y = rng.lognormal(self.mu, self.sigma, size)
        return np.maximum(np.ceil(y), 1).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "mean": self.mean_y, "sigma": self.sigma}


@dataclass(frozen=True, eq=False)
class Empirical(LengthLaw):
    """The empirical law of observed lengths (each observation has mass 1/n).

    ``source`` is how the data was named in the model (e.g. ``{"file": ..., "column": ...}``) and
    is what TOML writes back.
    """

    values: np.ndarray
    source: dict[str, Any] | None = None
    kind: ClassVar[str] = "empirical"

    def __post_init__(self) -> None:
        v = np.asarray(self.values)
        require(v.ndim == 1 and v.size > 0, "values", f"<{v.size} values>", "must be a non-empty list of lengths")
        require(np.issubdtype(v.dtype, np.number) and bool(np.all(np.isfinite(v))), "values", "<data>",
                "must be finite numbers")
        require(bool(np.all(v == np.round(v))), "values", "<data>", "must be integers (tokens)")
        bad = np.flatnonzero(v < 0)
        if bad.size:
            raise ModelError(f"values[{int(bad[0])}]", int(v[bad[0]]), "must be >= 0 (tokens)")
        v = v.astype(np.int64)
        v.setflags(write=False)
        object.__setattr__(self, "values", v)

    @property
    def digest(self) -> str:
        return digest(self.values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Empirical) and self.digest == other.digest and self.source == other.source

    def __hash__(self) -> int:
        return hash((self.kind, self.digest))

    def __repr__(self) -> str:
        return f"Empirical(n={self.values.size}, mean={self.mean:.4g}, source={self.source!r})"

    mean = property(lambda self: float(np.mean(self.values)))
    var = property(lambda self: float(np.var(self.values)))
    min_value = property(lambda self: int(self.values.min()))
    max_value = property(lambda self: float(self.values.max()))

    def pmf(self, k: Any) -> np.ndarray:
        vals, counts = np.unique(self.values, return_counts=True)
        k = _ks(k)
        idx = np.clip(np.searchsorted(vals, k), 0, vals.size - 1)
        return np.where(vals[idx] == k, counts[idx] / self.values.size, 0.0)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return self.values[rng.integers(0, self.values.size, size)]

    def to_dict(self) -> dict[str, Any]:
        if self.source is not None:
            return {"kind": self.kind, **self.source}
        return {"kind": self.kind, "values": self.values.tolist()}


@dataclass(frozen=True)
class Mixture(LengthLaw):
    """Component ``i`` with probability ``weights[i]`` (weights sum to 1)."""

    weights: tuple[float, ...]
    components: tuple[LengthLaw, ...]
    kind: ClassVar[str] = "mixture"

    def __post_init__(self) -> None:
        w = tuple(finite_number(x, f"weights[{i}]", minimum=0) for i, x in enumerate(self.weights))
        require(len(w) > 0 and len(w) == len(self.components), "weights", list(w),
                f"must be non-empty with one weight per component ({len(self.components)} components)")
        require(abs(sum(w) - 1.0) <= 1e-9, "weights", list(w), "must sum to 1")
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "components", tuple(self.components))

    @property
    def mean(self) -> float:
        return sum(w * c.mean for w, c in zip(self.weights, self.components))

    @property
    def var(self) -> float:
        m2 = sum(w * c.second_moment for w, c in zip(self.weights, self.components))
        return m2 - self.mean**2

    min_value = property(lambda self: min(c.min_value for w, c in zip(self.weights, self.components) if w > 0))
    max_value = property(lambda self: max(c.max_value for w, c in zip(self.weights, self.components) if w > 0))

    def pmf(self, k: Any) -> np.ndarray:
        return sum(w * c.pmf(k) for w, c in zip(self.weights, self.components))

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        which = rng.choice(len(self.weights), size=size, p=np.asarray(self.weights))
        out = np.empty(size, dtype=np.int64)
        for i, c in enumerate(self.components):
            sel = which == i
            out[sel] = c.sample(rng, int(sel.sum()))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "weights": list(self.weights),
                "components": [c.to_dict() for c in self.components]}


# ----------------------------------------------------------------------------------- joint laws


class JointLengths:
    """A joint law of (v_p, v_d): prompt (prefill) and output (decode) tokens of one request."""

    kind: ClassVar[str]

    def moment(self, f) -> float:  # pragma: no cover - abstract
        """E[f(v_p, v_d)] for a vectorised ``f``."""
        raise NotImplementedError

    @property
    def mean_prefill(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def mean_decode(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def mean_tokens(self) -> float:
        """m_p + m_d (tokens per request)."""
        return self.mean_prefill + self.mean_decode

    @property
    def mean_kv_token_batches(self) -> float:
        """E[g]: a request's KV occupancy summed over the batches of its shortest life.

        Prefill in one batch then one decode token per batch: after those batches it holds
        v_p, v_p + 1, ..., v_p + v_d tokens, so g = (v_d + 1)(v_p + v_d/2) (token-batches);
        the term of Ao et al. (arXiv 2504.11320) and of Nie, Si, Zhou (arXiv 2605.04595).
        """
        return self.moment(lambda p, d: (d + 1.0) * (p + d / 2.0))

    def mean_resident_batches(self, token_budget: int) -> float:
        """E[⌈v_p / b⌉ + v_d]: the fewest batches a request is resident for with token budget
        ``b`` (its prefill in budget-sized pieces, then one decode token per batch from the batch
        after the prefill ends; with v_d = 0 it completes with its last prefill token)."""
        b = float(token_budget)
        return self.moment(lambda p, d: np.ceil(p / b) + d + 0.0 * p)

    @property
    def mean_decode_context(self) -> float:
        """Mean KV context (prior tokens) of a decode token: E[v_d v_p + v_d(v_d-1)/2] / m_d."""
        if self.mean_decode == 0:
            return 0.0
        return self.moment(lambda p, d: d * p + d * (d - 1.0) / 2.0) / self.mean_decode

    def sample(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError  # pragma: no cover

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError  # pragma: no cover


def _grid_moment(law: LengthLaw, tail: float = 1e-14) -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(law.min_value, law.support_upto(tail) + 1)
    return k.astype(float), law.pmf(k)


@dataclass(frozen=True)
class Independent(JointLengths):
    """v_p and v_d independent with the given marginal laws."""

    prefill: LengthLaw
    decode: LengthLaw
    kind: ClassVar[str] = "independent"

    mean_prefill = property(lambda self: self.prefill.mean)
    mean_decode = property(lambda self: self.decode.mean)

    @property
    def mean_kv_token_batches(self) -> float:
        p, d = self.prefill, self.decode
        return d.mean * p.mean + p.mean + d.second_moment / 2.0 + d.mean / 2.0

    @property
    def mean_decode_context(self) -> float:
        p, d = self.prefill, self.decode
        if d.mean == 0:
            return 0.0
        return (d.mean * p.mean + (d.second_moment - d.mean) / 2.0) / d.mean

    def mean_resident_batches(self, token_budget: int) -> float:
        kp, wp = _grid_moment(self.prefill)
        return float(wp @ np.ceil(kp / float(token_budget))) + self.decode.mean

    def moment(self, f) -> float:
        kp, wp = _grid_moment(self.prefill)
        kd, wd = _grid_moment(self.decode)
        return float(wp @ f(kp[:, None], kd[None, :]) @ wd)

    def sample(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        return self.prefill.sample(rng, size), self.decode.sample(rng, size)

    def to_dict(self) -> dict[str, Any]:
        return {"prefill": self.prefill.to_dict(), "decode": self.decode.to_dict()}


@dataclass(frozen=True, eq=False)
class EmpiricalPairs(JointLengths):
    """Observed (v_p, v_d) pairs (e.g. a trace's rows), each with mass 1/n; keeps their correlation."""

    prefill: np.ndarray
    decode: np.ndarray
    source: dict[str, Any] | None = None
    kind: ClassVar[str] = "empirical-pairs"

    def __post_init__(self) -> None:
        p = Empirical(np.asarray(self.prefill)).values
        d = Empirical(np.asarray(self.decode)).values
        require(p.size == d.size, "decode", f"<{d.size} values>", f"must have as many values as prefill ({p.size})")
        object.__setattr__(self, "prefill", p)
        object.__setattr__(self, "decode", d)

    @property
    def digest(self) -> str:
        return digest(self.prefill, self.decode)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EmpiricalPairs) and self.digest == other.digest and self.source == other.source

    def __hash__(self) -> int:
        return hash((self.kind, self.digest))

    def __repr__(self) -> str:
        return (f"EmpiricalPairs(n={self.prefill.size}, mean_prefill={self.mean_prefill:.4g}, "
                f"mean_decode={self.mean_decode:.4g}, source={self.source!r})")

    mean_prefill = property(lambda self: float(np.mean(self.prefill)))
    mean_decode = property(lambda self: float(np.mean(self.decode)))

    def moment(self, f) -> float:
        return float(np.mean(f(self.prefill.astype(float), self.decode.astype(float))))

    def sample(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        i = rng.integers(0, self.prefill.size, size)
        return self.prefill[i], self.decode[i]

    def to_dict(self) -> dict[str, Any]:
        if self.source is not None:
            return {"lengths": {"kind": self.kind, **self.source}}
        return {"lengths": {"kind": self.kind, "prefill": self.prefill.tolist(), "decode": self.decode.tolist()}}
