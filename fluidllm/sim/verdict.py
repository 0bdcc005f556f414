"""The statistical stability verdict: STABLE, UNSTABLE or INCONCLUSIVE from simulated backlog paths.

:func:`backlog_verdict` is a pure, deterministic function of R independent replications of the
token backlog B_r(t) (tokens owed by the requests in the system) sampled on a time grid, started
from an empty system. :func:`recommended_horizon_ms` picks the horizon to simulate from the
model's own time scales.

The test works on *window means*: the time average of each path over each sixth of the horizon
(exact integrals of the piecewise-linear path), so that oscillations shorter than a window average
out and the end of the run falling into a trough cannot decide the verdict. Thirds are pairs of
sixths. Let M1, M2, M3 be the means over the three thirds and H the horizon:

* late slope        s  = (M3 - M2) / (H/3)   (the reported growth rate; the first third is warm-up),
* early slope       g1 = (M2 - M1) / (H/3),
* persistence       D  = s - θ·g1            (θ = ``min_growth_ratio``, 0.75),
* window slopes     h_k = (m_{k+1} - m_k) / (H/6) between consecutive sixths 3..6.

Each is computed per replication and turned into a two-sided (1 - α) Student-t interval across
the R replications (t quantile q with R - 1 degrees of freedom; each bound is a one-sided test at
level α/2). With δ·offered the tolerance in tokens/s, and s_f an optional *reference slope* (the
fluid oracle's growth rate where the caller has one, e.g. Theorem 2 for a work-conserving engine):

* UNSTABLE iff lower(s) > δ·offered and lower(D) > 0: the backlog grows faster than the
  tolerance, and the growth is not slowing (a stable system still warming up, B ≈ L(1-e^{-t/τ}),
  has s/g1 = e^{-H/(3τ)} < θ once H > 0.86 τ, and a driftless queue, B ~ √t, has s/g1 ≈ 0.65).
* STABLE iff all three hold:
  (a) *bounded*: the intervals of s and of the three window slopes h_3, h_4, h_5 lie inside
      (-δ·offered, +δ·offered): the level is flat over the last two thirds, window by window, so
      a path still rising fast, still draining or swinging between peaks is not STABLE;
  (b) *no growth detected*: the lower bounds of s and of h_3, h_4, h_5 are all <= 0. Growth that
      is significant is growth, however small against the tolerance: the tolerance can make a
      verdict undecided, it never turns detected growth into STABLE;
  (c) *reference growth excluded*: where s_f > 0 is given, upper(s) < s_f (the data reject the
      growth the oracle predicts).
* INCONCLUSIVE otherwise, with the reason. Significant growth below the tolerance, and a reference
  growth the data do not exclude, are reported as *near-critical*.

Error rates, for the window statistics of the simulated horizon, exact when the per-replication
statistics are normal (window means are averages, so the CLT helps; with R < 4 the intervals are
very wide and the reason says so). Let σ_s be the standard error of s.

* False UNSTABLE: needs s <= δ·offered or s <= θ·g1 and yet both lower bounds beyond, so it has
  probability <= α/2 (intersection-union).
* False STABLE against growth at or above the tolerance (a true s or h_k >= δ·offered): that
  statistic's upper bound must still fall below δ·offered, probability <= α/2 (intersection-union
  over (a)).
* False STABLE with a reference slope s_f > 0 that is the true fluid growth rate: the late slope
  of the mean backlog from empty is then about s_f (at least s_f for a reflected random walk:
  reflection only adds), so (c) gives probability <= α/2 at *every* positive growth rate,
  near-critical overloads included.
* False STABLE against growth 0 < s < δ·offered without a reference: (b) requires the growth to
  go undetected, probability P(lower(s) <= 0) ≈ Φ(q - s/σ_s) — at most α/2 once s >= 2q·σ_s. So
  STABLE excludes, at α/2, every growth rate above min(δ·offered, 2q·σ_s), and upper(s) (which (b)
  keeps <= 2q·σ_s) is the growth it excludes, stated in the reason. For linear growth σ_s falls
  like H^{-1/2}: in the limit of long horizons P(false STABLE) <= α/2 at any positive rate.
* Limit, critical and barely overloaded loads without a reference: in the diffusion regime
  (exactly critical load, or overloaded by so little that s·√H is small against the noise) the
  level grows like √t and the per-replication slope has mean/sd ≈ 0.48 whatever H (a driftless
  reflected random walk), so (b) detects the growth with probability only about
  P(t'_{R-1}(0.48√R) > q) ≈ 0.19 at R = 16, 0.50 at R = 32, 0.88 at R = 64 (α = 0.01; noncentral
  t): STABLE remains possible there, and only a reference slope, or R of about 120, rules it out
  at α/2.
* The two definite verdicts exclude each other; any wrong definite verdict has probability <= α
  (Bonferroni over the two). A caller that re-runs INCONCLUSIVE cases on longer horizons (k looks
  in all) has at most k times these rates (union bound). ``benchmarks/verdict_calibration.py``
  measures the rates at loads 0.95-1.05 of known capacities.

Power: on a stationary path (true slopes 0) each lower bound in (b) exceeds 0 with probability
α/2, so (b) costs STABLE at most 4·α/2 = 2α against (a) alone. A stable system still settling
over the last two thirds (relaxation time not small against H/3) shows significant growth and is
INCONCLUSIVE until the horizon grows.

Limits: a stable transient whose time constant exceeds ~1.2 H looks like linear growth in any
window (the persistence test only covers τ <= H/0.86), and an oscillation whose cycle is longer
than a sixth of the horizon can make the persistence test fail (INCONCLUSIVE, never STABLE while
the peaks still climb). Power: the persistence signal is (1 − θ)·s, so UNSTABLE needs the slope
measured to ~13 standard errors; an overload with s a few times δ·offered stays INCONCLUSIVE
until the horizon or R grows, and one with s below δ·offered stays INCONCLUSIVE (near-critical)
however long the horizon. Simulate at least :func:`recommended_horizon_ms`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from ..errors import ModelError, finite_number, require

__all__ = ["Verdict", "backlog_verdict", "recommended_horizon_ms", "MIN_GRID_POINTS", "MIN_GROWTH_RATIO"]

#: fewest grid points accepted (each sixth of the horizon then holds several).
MIN_GRID_POINTS = 24
#: default θ: the late slope must stay above θ × the early slope for UNSTABLE.
MIN_GROWTH_RATIO = 0.75
_WINDOWS = 6


def _num(x: float | None) -> float | None:
    """JSON-safe number: ``nan``/``inf`` become null."""
    if x is None or not math.isfinite(x):
        return None
    return float(x)


@dataclass(frozen=True)
class Verdict:
    """The stability verdict on simulated backlog paths.

    Attributes:
        verdict: ``"STABLE"``, ``"UNSTABLE"`` or ``"INCONCLUSIVE"``.
        slope_tokens_per_s: late growth rate of the backlog, (mean of last third − mean of the
            middle third) / (H/3), averaged over replications (tokens/s).
        slope_interval: (lo, hi), the (1 − alpha) t-interval of that slope (tokens/s).
        reason: one sentence saying why.
        test: the test's name, rules and error rates.
        alpha: the overall error rate of a wrong definite verdict.
        tolerance: δ, the growth rate (fraction of the offered rate) that counts as not growing.
        replications: R.
        horizon_ms: t_{G-1} − t_0 (ms).
        offered_tokens_per_s: λ(m_p + m_d) as given.
        tolerance_tokens_per_s: δ · offered (tokens/s).
        early_slope_tokens_per_s: (mean of middle third − mean of first third) / (H/3) (tokens/s).
        growth_ratio: slope / early slope (None where the early slope is <= 0); 1 for linear growth.
        min_growth_ratio: θ; UNSTABLE needs the growth ratio significantly above it.
        persistence_lower_tokens_per_s: lower bound of slope − θ·early slope (> 0: not slowing).
        window_means_tokens: mean backlog over each sixth of the horizon (tokens, replication mean).
        window_slopes_tokens_per_s: slopes between consecutive sixth-window means (tokens/s).
        window_slope_intervals: their (1 − alpha) t-intervals; the last three decide STABLE.
        standard_error_tokens_per_s: the standard error of the slope across replications.
        growth_significant: whether the lower bound of the late slope or of a late window slope
            is > 0 (detected growth: never STABLE).
        reference_slope_tokens_per_s: the reference (fluid oracle) growth rate the test was given,
            or None (tokens/s).
        resolution_tokens_per_s: min(tolerance, 2·q·SE): growth at or above it gets STABLE with
            probability about <= alpha/2 (tokens/s; q the t quantile, SE the standard error).
    """

    verdict: str
    slope_tokens_per_s: float
    slope_interval: tuple[float, float]
    reason: str
    test: str
    alpha: float
    tolerance: float
    replications: int
    horizon_ms: float
    offered_tokens_per_s: float
    tolerance_tokens_per_s: float
    early_slope_tokens_per_s: float
    growth_ratio: float | None
    min_growth_ratio: float
    persistence_lower_tokens_per_s: float
    window_means_tokens: tuple[float, ...]
    window_slopes_tokens_per_s: tuple[float, ...]
    window_slope_intervals: tuple[tuple[float, float], ...]
    standard_error_tokens_per_s: float
    growth_significant: bool = False
    reference_slope_tokens_per_s: float | None = None
    resolution_tokens_per_s: float | None = None

    @property
    def relative_slope(self) -> float:
        """The slope as a fraction of the offered token rate."""
        return self.slope_tokens_per_s / self.offered_tokens_per_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict, "slope_tokens_per_s": _num(self.slope_tokens_per_s),
            "slope_interval": [_num(v) for v in self.slope_interval], "reason": self.reason, "test": self.test,
            "alpha": float(self.alpha), "tolerance": float(self.tolerance), "replications": int(self.replications),
            "horizon_ms": float(self.horizon_ms), "offered_tokens_per_s": float(self.offered_tokens_per_s),
            "tolerance_tokens_per_s": float(self.tolerance_tokens_per_s),
            "relative_slope": _num(self.relative_slope),
            "early_slope_tokens_per_s": _num(self.early_slope_tokens_per_s),
            "growth_ratio": _num(self.growth_ratio), "min_growth_ratio": float(self.min_growth_ratio),
            "persistence_lower_tokens_per_s": _num(self.persistence_lower_tokens_per_s),
            "window_means_tokens": [_num(v) for v in self.window_means_tokens],
            "window_slopes_tokens_per_s": [_num(v) for v in self.window_slopes_tokens_per_s],
            "window_slope_intervals": [[_num(a), _num(b)] for a, b in self.window_slope_intervals],
            "standard_error_tokens_per_s": _num(self.standard_error_tokens_per_s),
            "growth_significant": bool(self.growth_significant),
            "reference_slope_tokens_per_s": _num(self.reference_slope_tokens_per_s),
            "resolution_tokens_per_s": _num(self.resolution_tokens_per_s),
        }


def _window_means(t: np.ndarray, b: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Time averages (R, len(edges) − 1) of the piecewise-linear paths ``b`` (R, G) between edges."""
    dt = np.diff(t)
    cum = np.concatenate([np.zeros((b.shape[0], 1)), np.cumsum(dt * (b[:, 1:] + b[:, :-1]) / 2, axis=1)], axis=1)
    k = np.clip(np.searchsorted(t, edges, side="right") - 1, 0, t.size - 2)
    x = edges - t[k]
    b_edge = b[:, k] + (b[:, k + 1] - b[:, k]) * (x / dt[k])
    integral = cum[:, k] + x * (b[:, k] + b_edge) / 2
    return np.diff(integral, axis=1) / np.diff(edges)


def _interval(x: np.ndarray, q: float) -> tuple[float, float, float, float]:
    """(mean, lo, hi, standard error) of the per-replication values ``x`` with t quantile ``q``."""
    mean = float(np.mean(x))
    se = float(np.std(x, ddof=1) / math.sqrt(x.size))
    return mean, mean - q * se, mean + q * se, se


def _validate(times_ms: Any, backlog: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        t = np.asarray(times_ms, dtype=float)
    except (TypeError, ValueError):
        raise ModelError("times_ms", type(times_ms).__name__, "must be a 1-D array of numbers (ms)") from None
    require(t.ndim == 1, "times_ms", f"<array of shape {t.shape}>", "must be one-dimensional")
    require(t.size >= MIN_GRID_POINTS, "times_ms", f"<{t.size} grid points>",
            f"needs at least {MIN_GRID_POINTS} grid points")
    require(bool(np.all(np.isfinite(t))), "times_ms", "<contains NaN or inf>", "must be finite")
    require(bool(np.all(np.diff(t) > 0)), "times_ms", "<not strictly increasing>", "must be strictly increasing")
    horizon = t[-1] - t[0]
    require(float(np.max(np.diff(t))) <= horizon / (2 * _WINDOWS) * (1 + 1e-9), "times_ms",
            f"<largest step {float(np.max(np.diff(t))):g} ms of horizon {horizon:g} ms>",
            f"steps must not exceed 1/{2 * _WINDOWS} of the horizon")
    try:
        b = np.asarray(backlog, dtype=float)
    except (TypeError, ValueError):
        raise ModelError("backlog", type(backlog).__name__, "must be an (R, G) array of numbers (tokens)") from None
    require(b.ndim == 2 and b.shape[1] == t.size, "backlog", f"<array of shape {b.shape}>",
            f"must have shape (R, G) with G = len(times_ms) = {t.size}")
    require(b.shape[0] >= 2, "backlog", f"<{b.shape[0]} replication(s)>", "needs R >= 2 replications (rows)")
    require(bool(np.all(np.isfinite(b))), "backlog", "<contains NaN or inf>", "must be finite")
    return t, b


def backlog_verdict(times_ms: np.ndarray, backlog: np.ndarray, *, offered_tokens_per_s: float,
                    alpha: float = 0.01, tolerance: float = 0.02,
                    min_growth_ratio: float = MIN_GROWTH_RATIO,
                    reference_slope_tokens_per_s: float | None = None) -> Verdict:
    """The stability verdict on R replications of the backlog (tokens) on a time grid (ms).

    ``times_ms`` (G,) is strictly increasing, with t_0 the start from an empty system; ``backlog``
    (R, G) holds B_r(t_g). UNSTABLE needs growth above ``tolerance`` · ``offered_tokens_per_s``
    that is not slowing; STABLE needs the level bounded within that tolerance *and* no significant
    growth at all (the tolerance never turns detected growth into STABLE) *and*, where
    ``reference_slope_tokens_per_s`` (tokens/s, >= 0: a fluid oracle's predicted growth, e.g.
    :func:`fluidllm.sim.stability.fluid_slope_tokens_per_s`) is positive, the data excluding that
    growth. ``alpha`` bounds the probability of a wrong STABLE or UNSTABLE (each <= alpha/2, in the
    cases and limits the module docstring states); ``min_growth_ratio`` is θ of the persistence
    test. Deterministic (no randomness).

    Raises:
        ModelError: times_ms not 1-D, fewer than MIN_GRID_POINTS points, not finite, not
            strictly increasing or with a step over 1/12 of the horizon; backlog not of shape
            (R, G), R < 2, or not finite; offered rate <= 0; alpha outside (0, 0.5];
            tolerance outside (0, 1]; min_growth_ratio outside (0, 1); reference slope < 0 or
            not finite.
    """
    t, b = _validate(times_ms, backlog)
    offered = finite_number(offered_tokens_per_s, "offered_tokens_per_s", minimum=0.0, strict=True)
    alpha = finite_number(alpha, "alpha", minimum=0.0, strict=True)
    require(alpha <= 0.5, "alpha", alpha, "must be in (0, 0.5]")
    tolerance = finite_number(tolerance, "tolerance", minimum=0.0, strict=True)
    require(tolerance <= 1.0, "tolerance", tolerance, "must be in (0, 1]")
    theta = finite_number(min_growth_ratio, "min_growth_ratio", minimum=0.0, strict=True)
    require(theta < 1.0, "min_growth_ratio", theta, "must be in (0, 1)")
    ref = (None if reference_slope_tokens_per_s is None else
           finite_number(reference_slope_tokens_per_s, "reference_slope_tokens_per_s", minimum=0.0))

    R = b.shape[0]
    horizon = float(t[-1] - t[0])
    edges = t[0] + horizon * np.arange(_WINDOWS + 1) / _WINDOWS
    edges[-1] = t[-1]
    m = _window_means(t, b, edges)                          # (R, 6) tokens
    thirds = (m[:, 0::2] + m[:, 1::2]) / 2                  # (R, 3) tokens
    per_s = 1000.0
    third_s = horizon / 3 / per_s                           # s
    sixth_s = horizon / _WINDOWS / per_s
    s_r = (thirds[:, 2] - thirds[:, 1]) / third_s           # tokens/s
    g1_r = (thirds[:, 1] - thirds[:, 0]) / third_s
    d_r = s_r - theta * g1_r
    h_r = np.diff(m, axis=1) / sixth_s                      # (R, 5) tokens/s

    q = float(stats.t.ppf(1 - alpha / 2, R - 1))
    s, s_lo, s_hi, s_se = _interval(s_r, q)
    g1 = float(np.mean(g1_r))
    _, d_lo, _, _ = _interval(d_r, q)
    h_iv = [_interval(h_r[:, k], q) for k in range(_WINDOWS - 1)]
    tol = tolerance * offered
    ratio = s / g1 if g1 > 0 else None

    late = h_iv[2:]                                         # sixths 3..6: the last two thirds
    bounded = (-tol < s_lo and s_hi < tol) and all(-tol < lo and hi < tol for _, lo, hi, _ in late)
    late_lo = max(lo for _, lo, _, _ in late)
    rising = s_lo > 0 or late_lo > 0                        # significant growth, slope or a window
    ref_open = ref is not None and ref > 0 and not s_hi < ref  # the oracle's growth is not excluded
    growing = s_lo > tol
    persistent = d_lo > 0

    conf = f"{1 - alpha:.0%}" if round(100 * (1 - alpha), 6).is_integer() else f"{1 - alpha:.1%}"
    rel = f"{s / offered:+.1%} of offered"
    ci = f"{conf} CI {s_lo:.4g} to {s_hi:.4g}"
    tol_txt = f"{tol:.4g} tokens/s ({tolerance:.1%} of offered)"
    if growing and persistent:
        verdict = "UNSTABLE"
        reason = (f"The backlog grows by {s:.4g} tokens/s ({rel}; {ci}) over the last third of the horizon, "
                  f"above the tolerance of {tol:.4g} tokens/s, and the growth is not slowing "
                  f"(last-third growth {ratio if ratio is not None else float('inf'):.2f}× the middle third's, "
                  f"above {theta:g}).")
    elif bounded and not rising and not ref_open:
        verdict = "STABLE"
        excl = f"{max(s_hi, 0.0):.4g}"
        ref_txt = (f", and below the fluid oracle's predicted growth of {ref:.4g} tokens/s"
                   if ref is not None and ref > 0 else "")
        reason = (f"The backlog is flat after warm-up: no significant growth (slope {s:.4g} tokens/s, {ci}; "
                  f"growth above {excl} tokens/s is excluded at {alpha / 2:g}{ref_txt}), and over the last two "
                  f"thirds of the horizon, window by window, it stays within ±{tol_txt} with {conf} "
                  f"confidence.")
    else:
        verdict = "INCONCLUSIVE"
        if growing and ratio is not None and ratio < theta:
            reason = (f"The backlog is still growing ({s:.4g} tokens/s, {rel}) but slowing down (last-third "
                      f"growth {ratio:.2f}× the middle third's, below {theta:g}), as a stable system still "
                      f"warming up would: simulate a longer horizon to see whether it levels off.")
        elif growing:
            rtxt = f"{ratio:.2f}×" if ratio is not None else "unknown relative to"
            reason = (f"The backlog is growing ({s:.4g} tokens/s, {rel}) but too noisily to rule out a slowing, "
                      f"settling transient (last-third growth {rtxt} the middle third's, not significantly "
                      f"above {theta:g}): simulate longer or more replications.")
        elif rising and s_hi < tol:
            where = (f"growth {s:.4g} tokens/s [{s_lo:.4g}, {s_hi:.4g}] is significant" if s_lo > 0 else
                     f"the growth between late sixth-windows is significant (a lower bound of {late_lo:.4g} "
                     f"tokens/s > 0; slope {s:.4g} tokens/s, {ci})")
            reason = (f"Near-critical: {where} but below the tolerance of {tol_txt}: too slow to call UNSTABLE, "
                      f"and growth is not excluded, so not STABLE. The load is at or just above capacity, or "
                      f"the system is still settling: simulate longer or more replications.")
        elif rising:
            reason = (f"The backlog grows significantly ({s:.4g} tokens/s, {ci}; a lower bound above 0) at a "
                      f"rate that cannot be told apart from the tolerance of {tol_txt}: simulate longer or more "
                      f"replications.")
        elif bounded and ref_open:
            reason = (f"Near-critical: the fluid oracle predicts growth of {ref:.4g} tokens/s, which the "
                      f"simulated slope {s:.4g} tokens/s ({ci}) does not exclude, though no growth is "
                      f"detected: the load is at or just above capacity. Growth that slow cannot be told "
                      f"apart from a flat backlog at this horizon: simulate longer or more replications.")
        elif s_hi < tol and s_lo > -tol:
            lo = min(iv[1] for iv in late)
            hi = max(iv[2] for iv in late)
            reason = (f"The late slope {s:.4g} tokens/s is within the tolerance of ±{tol:.4g} tokens/s but the "
                      f"level is not flat window by window (sixth-window slopes range over {lo:.4g} to {hi:.4g} "
                      f"tokens/s at {conf}), as in an oscillating or still-settling system: simulate longer.")
        elif s_hi <= -tol:
            reason = (f"The backlog is still falling ({s:.4g} tokens/s; {ci}), so it has not settled: "
                      f"simulate a longer horizon.")
        else:
            reason = (f"The growth rate {s:.4g} tokens/s ({ci}) cannot be told apart from the tolerance of "
                      f"±{tol_txt}: simulate longer or more replications.")
    if R < 4:
        reason = reason[:-1] + f" (only {R} replications: the intervals are very wide; use R >= 8)."
    elif s_se == 0.0:
        reason = reason[:-1] + " (the replications' slopes are identical: the interval shows no sampling error)."

    ref_rule = (f" and upper bound of the late slope < the reference growth {ref:.4g} tokens/s"
                if ref is not None and ref > 0 else "")
    test = (f"window-mean t-tests over R={R} replications (sixths of the horizon, first third discarded): "
            f"UNSTABLE iff lower {conf} bound of the late slope > {tolerance:g}·offered and of "
            f"(late slope − {theta:g}·early slope) > 0; STABLE iff the {conf} intervals of the late slope "
            f"and of the three late sixth-window slopes lie within ±{tolerance:g}·offered, none of their "
            f"lower bounds is > 0 (no significant growth){ref_rule}; each bound one-sided at "
            f"α/2={alpha / 2:g}: P(false UNSTABLE) <= {alpha / 2:g}; P(false STABLE) <= {alpha / 2:g} "
            f"against growth >= the tolerance (intersection-union)"
            + (" or at the reference rate" if ref is not None and ref > 0 else "")
            + f", and against slower growth once it exceeds ~2·q·SE = {2 * q * s_se:.4g} tokens/s (STABLE "
            f"needs it undetected); overall <= α={alpha:g} (Bonferroni).")
    return Verdict(
        verdict=verdict, slope_tokens_per_s=s, slope_interval=(s_lo, s_hi), reason=reason, test=test, alpha=alpha,
        tolerance=tolerance, replications=R, horizon_ms=horizon, offered_tokens_per_s=offered,
        tolerance_tokens_per_s=tol, early_slope_tokens_per_s=g1, growth_ratio=ratio, min_growth_ratio=theta,
        persistence_lower_tokens_per_s=d_lo,
        window_means_tokens=tuple(float(v) for v in np.mean(m, axis=0)),
        window_slopes_tokens_per_s=tuple(iv[0] for iv in h_iv),
        window_slope_intervals=tuple((iv[1], iv[2]) for iv in h_iv),
        standard_error_tokens_per_s=s_se,
        growth_significant=bool(rising),
        reference_slope_tokens_per_s=ref,
        resolution_tokens_per_s=min(tol, 2 * q * s_se),
    )


def recommended_horizon_ms(mean_batch_ms: float, mean_sojourn_ms: float, offered_tokens_per_s: float, *,
                           min_batches: int = 5000, sojourn_multiple: float = 150.0,
                           min_offered_tokens: float = 1e6, min_horizon_ms: float = 10_000.0,
                           max_horizon_ms: float = 3_600_000.0) -> float:
    """A simulation horizon (ms) long enough for :func:`backlog_verdict`, from the model's time scales.

    The largest of: ``min_batches`` mean batch times (the backlog path spans many batches);
    ``sojourn_multiple`` mean sojourn times, so that the discarded first third holds 50 sojourns,
    several relaxation times of a queue up to load ~0.9 (an M/M/1 queue relaxes in
    (1+√ρ)/(1−√ρ) sojourn times: 11 at ρ = 0.7, 38 at ρ = 0.9); the time to offer
    ``min_offered_tokens`` tokens; and ``min_horizon_ms``; capped at ``max_horizon_ms`` (a load so
    close to capacity that the cap binds may give INCONCLUSIVE). ``mean_sojourn_ms`` may be
    ``inf`` (no finite estimate, e.g. an unstable model): the other terms then decide.

    Raises:
        ModelError: a time scale or rate not > 0 (sojourn may be inf), or bad keyword limits.
    """
    batch = finite_number(mean_batch_ms, "mean_batch_ms", minimum=0.0, strict=True)
    if isinstance(mean_sojourn_ms, (int, float)) and not isinstance(mean_sojourn_ms, bool) \
            and mean_sojourn_ms == math.inf:
        sojourn = math.inf
    else:
        sojourn = finite_number(mean_sojourn_ms, "mean_sojourn_ms", minimum=0.0, strict=True)
    offered = finite_number(offered_tokens_per_s, "offered_tokens_per_s", minimum=0.0, strict=True)
    nb = finite_number(min_batches, "min_batches", minimum=1.0)
    ns = finite_number(sojourn_multiple, "sojourn_multiple", minimum=3.0)
    tokens = finite_number(min_offered_tokens, "min_offered_tokens", minimum=0.0)
    lo = finite_number(min_horizon_ms, "min_horizon_ms", minimum=0.0, strict=True)
    hi = finite_number(max_horizon_ms, "max_horizon_ms", minimum=lo)
    terms = [nb * batch, tokens / offered * 1000.0, lo]
    if math.isfinite(sojourn):
        terms.append(ns * sojourn)
    return float(min(max(terms), hi))
