"""Fitting length laws to observed token counts (prefill or decode) by maximum likelihood.

Candidates: geometric (shifted to the data's minimum), lognormal (``ceil(Y)``, fitted on the
discretised likelihood, so it matches :class:`~fluidllm.model.lengths.Lognormal` exactly) and the
empirical law (always available; its log-likelihood is the saturated one). Each fit reports its
parameters, log-likelihood (nats), AIC, BIC and the KS distance between the fitted and the
empirical CDF on the observed support.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, stats

from fluidllm.errors import ModelError, require
from fluidllm.model.lengths import Empirical, Geometric, LengthLaw, Lognormal


@dataclass(frozen=True)
class LawFit:
    """One fitted law: ``law``, its free-parameter count ``k``, log-likelihood (nats), AIC, BIC, KS."""

    name: str
    law: LengthLaw
    k: int
    loglik: float
    aic: float
    bic: float
    ks: float

    def to_dict(self) -> dict[str, Any]:
        law = self.law.to_dict()
        if isinstance(self.law, Empirical):
            law = {"kind": "empirical", "n": int(np.asarray(self.law.values).size)}
        return {"name": self.name, "law": law, "params": self.k, "loglik": self.loglik,
                "aic": self.aic, "bic": self.bic, "ks": self.ks}


@dataclass(frozen=True)
class FitReport:
    """All fits of one sample, best by ``criterion`` among the parametric ones (empirical excluded)."""

    n: int
    sample_mean: float
    fits: tuple[LawFit, ...]
    criterion: str
    best: str

    def fit(self, name: str) -> LawFit:
        """The fit named ``name``. Raises ModelError if there is none."""
        for f in self.fits:
            if f.name == name:
                return f
        raise ModelError("law", name, f"must be one of {[f.name for f in self.fits]}")

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "sample_mean": self.sample_mean, "criterion": self.criterion,
                "best": self.best, "fits": [f.to_dict() for f in self.fits]}


def _check(values: Any, field: str) -> np.ndarray:
    v = np.asarray(values)
    require(v.ndim == 1 and v.size >= 2, field, f"<{v.size} values>", "must be a list of >= 2 lengths")
    require(np.issubdtype(v.dtype, np.number) and bool(np.all(np.isfinite(v)))
            and bool(np.all(v == np.round(v))), field, "<data>", "must be finite integers (tokens)")
    require(bool(np.all(v >= 1)), field, int(v.min()), "lengths must be >= 1 token")
    return v.astype(np.int64)


def _ks(law: LengthLaw, v: np.ndarray) -> float:
    # Both CDFs are step functions jumping only at integers, so the sup is attained on the
    # observed values or just below them (the left limits).
    xs = np.unique(v)
    grid = np.arange(1, int(xs[-1]) + 1)
    cdf_fit = np.cumsum(law.pmf(grid))
    emp = np.searchsorted(np.sort(v), grid, side="right") / v.size
    return float(np.max(np.abs(cdf_fit - emp)))


def _summary(name: str, law: LengthLaw, k: int, loglik: float, v: np.ndarray) -> LawFit:
    n = v.size
    return LawFit(name, law, k, float(loglik), 2 * k - 2 * float(loglik), k * math.log(n) - 2 * float(loglik),
                  _ks(law, v))


def fit_geometric(values: Any) -> LawFit:
    """MLE geometric shifted to the sample minimum: its mean is the sample mean exactly.

    Raises:
        ModelError: not a list of >= 2 integer lengths >= 1.
    """
    v = _check(values, "values")
    lo = int(v.min())
    m = float(v.mean())
    if m == lo:  # a constant sample: geometric degenerates to a point mass
        m = lo + 1e-9
    law = Geometric(m, min=lo)
    return _summary("geometric", law, 1, float(np.sum(np.log(law.pmf(v)))), v)


def fit_lognormal(values: Any) -> LawFit:
    """MLE of ``ceil(Y)``, Y lognormal, on the discretised likelihood P(k-1 < Y <= k).

    Raises:
        ModelError: not a list of >= 2 integer lengths >= 1, or a constant sample.
    """
    v = _check(values, "values")
    require(bool(np.ptp(v) > 0), "values", int(v[0]), "a constant sample has no lognormal fit")
    ks, counts = np.unique(v, return_counts=True)
    lo, hi = np.log(np.maximum(ks - 1, 1e-300)), np.log(ks.astype(float))
    lo[ks == 1] = -np.inf

    def nll(theta: np.ndarray) -> float:
        mu, ls = theta
        s = math.exp(ls)
        p = stats.norm.cdf(hi, mu, s) - stats.norm.cdf(lo, mu, s)
        return -float(np.sum(counts * np.log(np.maximum(p, 1e-300))))

    x = np.log(v - 0.5)  # midpoint start: the continuous fit of the discretised values
    res = optimize.minimize(nll, np.array([x.mean(), math.log(max(x.std(), 1e-3))]), method="Nelder-Mead",
                            options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 4000})
    mu, s = float(res.x[0]), float(math.exp(res.x[1]))
    law = Lognormal(math.exp(mu + s * s / 2), s)
    return _summary("lognormal", law, 2, -float(res.fun), v)


def fit_empirical(values: Any) -> LawFit:
    """The empirical law; its log-likelihood is the saturated maximum, with n_distinct - 1 parameters.

    Raises:
        ModelError: not a list of >= 2 integer lengths >= 1.
    """
    v = _check(values, "values")
    _, counts = np.unique(v, return_counts=True)
    ll = float(np.sum(counts * np.log(counts / v.size)))
    return _summary("empirical", Empirical(v), int(counts.size) - 1, ll, v)


_CRITERIA = ("aic", "bic", "ks")


def fit_lengths(values: Any, criterion: str = "bic") -> FitReport:
    """Fit geometric, lognormal and empirical laws; ``best`` is the parametric one minimising ``criterion``.

    Raises:
        ModelError: bad ``values`` or ``criterion`` not one of aic, bic, ks.
    """
    require(criterion in _CRITERIA, "criterion", criterion, f"must be one of {list(_CRITERIA)}")
    v = _check(values, "values")
    fits = [fit_geometric(v)]
    if np.ptp(v) > 0:
        fits.append(fit_lognormal(v))
    best = min(fits, key=lambda f: getattr(f, criterion)).name
    fits.append(fit_empirical(v))
    return FitReport(int(v.size), float(v.mean()), tuple(fits), criterion, best)


@dataclass(frozen=True)
class TraceFit:
    """Prefill and decode fits of one trace, with their Spearman rank correlation and its p-value."""

    prefill: FitReport
    decode: FitReport
    spearman: float
    spearman_p: float

    def to_dict(self) -> dict[str, Any]:
        return {"prefill": self.prefill.to_dict(), "decode": self.decode.to_dict(),
                "spearman": self.spearman, "spearman_p": self.spearman_p}


def fit_trace(prefill: Any, decode: Any, criterion: str = "bic") -> TraceFit:
    """Fit the prefill and decode columns of a trace; a small ``spearman_p`` says they are dependent.

    Raises:
        ModelError: bad columns, columns of different lengths, or a bad ``criterion``.
    """
    p, d = _check(prefill, "prefill"), _check(decode, "decode")
    require(p.size == d.size, "decode", f"<{d.size} values>", f"must have as many rows as prefill ({p.size})")
    rho, pval = stats.spearmanr(p, d)
    return TraceFit(fit_lengths(p, criterion), fit_lengths(d, criterion), float(rho), float(pval))
