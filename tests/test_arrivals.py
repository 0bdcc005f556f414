"""Arrival processes: gap means and SCVs against exact theory, scaling, trace replay."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.special import gamma as G
from scipy.special import gammaln

import fluidllm as F
from conftest import Z999, arrivals

N = 400_000


def _weibull_shape(scv: float) -> float:
    return brentq(lambda k: math.exp(gammaln(1 + 2 / k) - 2 * gammaln(1 + 1 / k)) - 1 - scv, 0.05, 500.0)


def _central_moments(dist: str, m: float, scv: float) -> tuple[float, float]:
    """Exact (variance, fourth central moment) of a gap with mean m and the given scv."""
    var = scv * m * m
    if dist in ("exponential", "gamma"):
        k = 1.0 / scv  # gamma shape; excess kurtosis 6/k
        return var, var * var * (3.0 + 6.0 / k)
    if dist == "lognormal":
        s2 = math.log1p(scv)
        excess = math.exp(4 * s2) + 2 * math.exp(3 * s2) + 3 * math.exp(2 * s2) - 6
        return var, var * var * (3.0 + excess)
    assert dist == "weibull"
    k = _weibull_shape(scv)
    lam = m / G(1 + 1 / k)
    r = [lam**j * G(1 + j / k) for j in range(5)]  # raw moments E[X^j]
    mu4 = r[4] - 4 * r[3] * r[1] + 6 * r[2] * r[1] ** 2 - 3 * r[1] ** 4
    return r[2] - r[1] ** 2, mu4


CASES = [
    ("poisson", F.PoissonArrival(10.4), "exponential", 1.0),
    ("poisson-fast", F.PoissonArrival(2500.0), "exponential", 1.0),
    ("gamma-smooth", F.RenewalArrival(5.0, 0.25, "gamma"), "gamma", 0.25),
    ("gamma-poisson", F.RenewalArrival(5.0, 1.0, "gamma"), "gamma", 1.0),
    ("gamma-bursty", F.RenewalArrival(3.0, 2.0, "gamma"), "gamma", 2.0),
    ("lognormal", F.RenewalArrival(8.0, 0.5, "lognormal"), "lognormal", 0.5),
    ("lognormal-1", F.RenewalArrival(1.0, 1.0, "lognormal"), "lognormal", 1.0),
    ("weibull-smooth", F.RenewalArrival(20.0, 0.3, "weibull"), "weibull", 0.3),
    ("weibull-1", F.RenewalArrival(2.0, 1.0, "weibull"), "weibull", 1.0),
    ("weibull-bursty", F.RenewalArrival(2.0, 2.0, "weibull"), "weibull", 2.0),
]


@pytest.mark.parametrize("name,arr,dist,scv", CASES, ids=[c[0] for c in CASES])
def test_gap_mean_and_scv_against_theory(name, arr, dist, scv):
    """Sample mean within a 99.9 % CLT interval of 1000/rate; sample variance within a 99.9 % CLT
    interval of scv·m² (its asymptotic sd is sqrt((mu4 - var²)/n) with the exact mu4 of the law).
    Each check fails a correct sampler with probability ~0.1 % (~2 % over this table); seeds are fixed."""
    m = 1000.0 / arr.rate_per_s
    x = arr.gaps_ms(np.random.default_rng(7 + len(name)), N)
    assert x.shape == (N,) and np.all(x > 0)
    var, mu4 = _central_moments(dist, m, scv)
    assert var == pytest.approx(scv * m * m, rel=1e-9)  # the theory helper is consistent with the scv
    assert abs(x.mean() - m) <= Z999 * math.sqrt(var / N), (x.mean(), m)
    s2 = x.var(ddof=1)
    assert abs(s2 - var) <= Z999 * math.sqrt((mu4 - var * var) / N), (s2 / m**2, scv)


def test_deterministic_gaps_are_exact():
    a = F.DeterministicArrival(4.0, offset_ms=12.5)
    assert np.all(a.gaps_ms(np.random.default_rng(0), 10) == 250.0)
    assert a.rate_per_s == 4.0 and a.rate_per_ms == 0.004
    assert a.to_dict() == {"kind": "deterministic", "rate_per_s": 4.0, "offset_ms": 12.5}


@pytest.mark.parametrize("arr", [F.PoissonArrival(0.0), F.DeterministicArrival(0.0), F.RenewalArrival(0.0, 2.0)])
def test_zero_rate_never_arrives(arr):
    assert np.all(np.isinf(arr.gaps_ms(np.random.default_rng(0), 5)))


def test_weibull_shape_one_is_exponential():
    # scv = 1 gives shape k = 1: the exponential law.
    assert _weibull_shape(1.0) == pytest.approx(1.0, rel=1e-9)


def test_fixed_seed_is_reproducible():
    a = F.RenewalArrival(3.0, 0.7, "weibull")
    assert np.array_equal(a.gaps_ms(np.random.default_rng(5), 100), a.gaps_ms(np.random.default_rng(5), 100))


@settings(max_examples=80, deadline=None)
@given(arrivals(), st.floats(1e-3, 1e3, allow_nan=False))
def test_scaled_multiplies_rate(arr, f):
    s = arr.scaled(f)
    assert type(s) is type(arr)
    if math.isinf(arr.rate_per_s):
        assert math.isinf(s.rate_per_s)
    else:
        assert s.rate_per_s == pytest.approx(arr.rate_per_s * f, rel=1e-12, abs=1e-300)
    if isinstance(arr, F.RenewalArrival):
        assert (s.scv, s.distribution) == (arr.scv, arr.distribution)
    if isinstance(arr, F.TraceArrival):
        assert np.array_equal(s.times_ms, arr.times_ms)
        assert np.allclose(s.arrival_times_ms(), arr.arrival_times_ms() / f, rtol=1e-12)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_scaled_rejects_bad_factor(bad):
    with pytest.raises(F.ModelError, match="load"):
        F.PoissonArrival(1.0).scaled(bad)


# ------------------------------------------------------------------------------ traces


def test_trace_arrival_rate_and_speedup():
    t = F.TraceArrival(np.array([100.0, 110.0, 130.0, 160.0]))  # shifted to start at 0
    assert np.array_equal(t.times_ms, [0.0, 10.0, 30.0, 60.0])
    assert t.rate_per_s == pytest.approx(3 / 60 * 1000)
    assert t.span_ms == 60.0
    fast = F.TraceArrival(t.times_ms, speedup=4.0)
    assert fast.rate_per_s == pytest.approx(4 * t.rate_per_s)
    assert fast.span_ms == 15.0
    assert np.array_equal(fast.arrival_times_ms(), [0.0, 2.5, 7.5, 15.0])
    assert t.scaled(4.0) == fast
    with pytest.raises(F.ModelError, match="arrival_times_ms"):
        t.gaps_ms(np.random.default_rng(0), 3)


def test_trace_arrival_simultaneous_times_rate_is_inf():
    assert math.isinf(F.TraceArrival(np.array([5.0, 5.0])).rate_per_s)


def test_trace_arrival_validation():
    with pytest.raises(F.ModelError, match=r"times_ms\[2\] = 1.0"):
        F.TraceArrival(np.array([0.0, 2.0, 1.0]))
    with pytest.raises(F.ModelError, match="at least 2"):
        F.TraceArrival(np.array([0.0]))
    with pytest.raises(F.ModelError, match="speedup"):
        F.TraceArrival(np.array([0.0, 1.0]), speedup=0.0)


def test_trace_arrival_from_trace_rate(azure_small):
    tr = F.load_trace(azure_small)
    arr = tr.arrival(2.0)
    span_s = (tr.arrival_ms[-1] - tr.arrival_ms[0]) / 1000.0
    assert tr.rate_per_s == pytest.approx((len(tr) - 1) / span_s)
    assert arr.rate_per_s == pytest.approx(2.0 * (len(tr) - 1) / span_s)
    assert arr.source == tr.source
