"""Batch-time models: each family's formula, the paper staircase, PCHIP tables, sympy forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import fluidllm as F
from fluidllm.presets import get_preset

finite = dict(allow_nan=False, allow_infinity=False)
GRID = np.arange(1, 1025)


def test_paper_staircase_points():
    t = F.Staircase(11.28, 35.47, 128)
    assert t.tokens_ms(128) == pytest.approx(46.75, abs=1e-12)
    assert t.tokens_ms(512) == pytest.approx(153.16, abs=1e-12)
    assert t.tokens_ms(1024) == pytest.approx(295.04, abs=1e-12)
    assert 512 / t.tokens_ms(512) == pytest.approx(3.342909, abs=5e-7)
    # the step: 129 tokens cost one more a
    assert t.tokens_ms(129) - t.tokens_ms(128) == pytest.approx(35.47)
    assert np.allclose(t.tokens_ms(np.array([1, 128, 129, 256, 257])),
                       11.28 + 35.47 * np.array([1, 1, 2, 2, 3]))


def test_paper_preset_is_the_staircase():
    p = get_preset("codellama-34b-a100")
    assert p == F.Staircase(11.28, 35.47, 128)
    assert p.preset == "codellama-34b-a100"
    assert p.to_dict() == {"preset": "codellama-34b-a100"}
    assert np.array_equal(p.tokens_ms(GRID), F.Staircase(11.28, 35.47, 128).tokens_ms(GRID))


@pytest.mark.parametrize("model,formula", [
    (F.Constant(7.5), lambda n: 7.5 + 0 * n),
    (F.Affine(3.0, 0.25), lambda n: 3.0 + 0.25 * n),
    (F.Affine(0.0, 0.1), lambda n: 0.1 * n),
    (F.PiecewiseLinear(20.0, 0.1, 256), lambda n: 20.0 + 0.1 * np.maximum(0, n - 256)),
    (F.PiecewiseLinear(20.0, 0.1, 0), lambda n: 20.0 + 0.1 * n),
    (F.Staircase(11.28, 35.47, 128), lambda n: 11.28 + 35.47 * np.ceil(n / 128)),
    (F.Staircase(0.0, 2.0, 1), lambda n: 2.0 * n),
])
def test_family_formula_on_grid(model, formula):
    assert np.allclose(model.tokens_ms(GRID), formula(GRID.astype(float)), rtol=1e-14, atol=0)
    # batch_ms depends only on n = prefill + decode for token-count models
    assert np.allclose(model.batch_ms(GRID // 3, GRID - GRID // 3, 1e6), model.tokens_ms(GRID))
    assert model.tokens_ms(np.array(100)).shape == ()
    assert model.tokens_only


PARAMETRIC = [F.Constant(7.5), F.Affine(3.0, 0.25), F.PiecewiseLinear(20.0, 0.1, 256),
              F.Staircase(11.28, 35.47, 128), F.Staircase(1.0, 0.5, 7)]


def _subs(expr, params):
    return expr.subs({s: params[s.name] for s in expr.free_symbols if s.name in params})


@pytest.mark.parametrize("model", PARAMETRIC, ids=lambda m: m.kind)
def test_sympy_expr_matches_tokens_ms(model):
    n = sp.Symbol("n", positive=True, integer=True)
    expr = _subs(model.sympy_expr(n), model.sympy_params())
    assert expr.free_symbols <= {n}
    f = sp.lambdify(n, expr, modules="math")
    for k in [1, 2, 3, 7, 8, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1000, 1024]:
        assert float(f(k)) == pytest.approx(float(model.tokens_ms(k)), rel=1e-12), k
        assert float(_subs(model.sympy_expr(sp.Integer(k)), model.sympy_params())) == \
            pytest.approx(float(model.tokens_ms(k)), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.01, 100, **finite), st.floats(0, 50, **finite), st.integers(1, 600),
       st.sampled_from(["affine", "piecewise-linear", "staircase"]))
def test_hypothesis_sympy_matches_numeric(c, a, b0, kind):
    model = {"affine": lambda: F.Affine(c, a), "piecewise-linear": lambda: F.PiecewiseLinear(c, a, b0),
             "staircase": lambda: F.Staircase(c, a, b0)}[kind]()
    n = sp.Symbol("n", positive=True)
    f = sp.lambdify(n, _subs(model.sympy_expr(n), model.sympy_params()), modules="math")
    for k in (1, b0 - 1, b0, b0 + 1, 2 * b0 + 3, 1024):
        if k >= 1:
            assert float(f(k)) == pytest.approx(float(model.tokens_ms(k)), rel=1e-12, abs=1e-12)


def test_non_parametric_models_have_no_sympy_form():
    with pytest.raises(F.ModelError, match="closed form"):
        F.Table(np.array([1.0, 2.0]), np.array([1.0, 2.0])).sympy_expr(sp.Symbol("n"))
    with pytest.raises(F.ModelError, match="closed form"):
        F.TwoFeature(1.0, 0.1, 10).sympy_expr(sp.Symbol("n"))


# ------------------------------------------------------------------------------ two-feature


def test_two_feature_formula():
    m = F.TwoFeature(c_ms=5.0, a_ms=0.1, b0=100, decode_ms=0.02, kv_ms=1e-4, prefill_sq_ms=1e-6)
    P = np.array([0, 50, 200, 0, 1000])
    D = np.array([10, 30, 20, 150, 0])
    K = np.array([1000, 0, 5000, 70000, 0])
    expect = 5.0 + 0.1 * np.maximum(0, P + D - 100) + 0.02 * D + 1e-4 * K + 1e-6 * P * P
    assert np.allclose(m.batch_ms(P, D, K), expect, rtol=1e-14)
    assert m.batch_ms(200, 20, 5000) == pytest.approx(5.0 + 0.1 * 120 + 0.4 + 0.5 + 0.04)
    assert not m.tokens_only
    with pytest.raises(F.ModelError, match="batch_ms"):
        m.tokens_ms(10)
    # without attention terms it is the piecewise-linear model of P + D
    plain = F.TwoFeature(5.0, 0.1, 100)
    assert np.allclose(plain.batch_ms(P, D, K), F.PiecewiseLinear(5.0, 0.1, 100).tokens_ms(P + D))


# ------------------------------------------------------------------------------ tables


def test_table_exact_at_knots_and_no_extrapolation():
    n = np.array([1, 16, 64, 128, 256, 512], float)
    t = np.array([10.0, 10.5, 12.0, 15.0, 25.0, 48.0])
    tab = F.Table(n, t)
    assert np.allclose(tab.tokens_ms(n), t, rtol=1e-14)
    assert tab.max_tokens == 512
    for bad in (0, 0.5, 512.5, 513, 4096):
        with pytest.raises(F.ModelError, match="not extrapolated") as ei:
            tab.tokens_ms(bad)
        assert str(float(bad)) in str(ei.value)
    with pytest.raises(F.ModelError):
        tab.tokens_ms(np.array([1, 100, 1000]))  # any point outside fails the whole call


def test_table_is_pchip():
    from scipy.interpolate import PchipInterpolator

    n = np.array([1, 3, 10, 40, 100], float)
    t = np.array([2.0, 2.1, 4.0, 4.0, 9.0])
    x = np.linspace(1, 100, 397)
    assert np.allclose(F.Table(n, t).tokens_ms(x), PchipInterpolator(n, t)(x), rtol=1e-13)


def test_table_sorts_points():
    tab = F.Table(np.array([64.0, 1.0, 8.0]), np.array([9.0, 1.0, 3.0]))
    assert np.array_equal(tab.tokens, [1, 8, 64]) and np.array_equal(tab.times_ms, [1, 3, 9])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 5000), min_size=2, max_size=25, unique=True),
       st.lists(st.floats(0.0, 30.0, **finite), min_size=25, max_size=25), st.floats(0.01, 10, **finite))
def test_hypothesis_table_monotone_and_exact(knots, incs, t0):
    n = np.array(sorted(knots), float)
    t = t0 + np.cumsum(incs[: n.size])  # non-decreasing data (flat stretches allowed)
    tab = F.Table(n, t)
    assert np.allclose(tab.tokens_ms(n), t, rtol=1e-12, atol=1e-12)
    x = np.linspace(n[0], n[-1], 2000)
    y = tab.tokens_ms(x)
    assert np.all(np.diff(y) >= -1e-9 * max(1.0, float(t[-1])))
    assert np.all(y >= t[0] - 1e-9) and np.all(y <= t[-1] + 1e-9)
    with pytest.raises(F.ModelError):
        tab.tokens_ms(n[-1] + 1)
    if n[0] > 1:
        with pytest.raises(F.ModelError):
            tab.tokens_ms(n[0] - 1)


@pytest.mark.parametrize("tokens,times,match", [
    ([1.0], [1.0], "at least 2"),
    ([1.0, 2.0], [1.0], "at least 2"),
    ([1.0, 1.0, 2.0], [1.0, 2.0, 3.0], "appears twice"),
    ([0.0, 2.0], [1.0, 2.0], ">= 1"),
    ([1.0, 2.0], [0.0, 2.0], "> 0"),
    ([1.0, math.nan], [1.0, 2.0], "finite"),
    ([1.0, 2.0], [1.0, math.inf], "finite"),
])
def test_table_validation(tokens, times, match):
    with pytest.raises(F.ModelError, match=match):
        F.Table(np.array(tokens), np.array(times))


def test_table_from_shipped_profile():
    from fluidllm.calibrate.profile import read_profile
    from importlib import resources

    path = resources.files("fluidllm.data").joinpath("profile_llama-2-7b_a100.csv")
    prof = read_profile(str(path), scenario="prefill_only")
    tab = F.Table(prof.tokens, prof.times_ms)
    assert np.allclose(tab.tokens_ms(tab.tokens), tab.times_ms)


@pytest.mark.parametrize("make,field", [
    (lambda: F.Constant(0.0), "batch_time.c_ms"),
    (lambda: F.Constant(-1.0), "batch_time.c_ms"),
    (lambda: F.Affine(0.0, 0.0), "batch_time.c_ms"),
    (lambda: F.Affine(1.0, -0.5), "batch_time.a_ms"),
    (lambda: F.Staircase(1.0, 1.0, 0), "batch_time.b0"),
    (lambda: F.Staircase(0.0, 0.0, 4), "batch_time.c_ms"),
    (lambda: F.PiecewiseLinear(math.nan, 1.0, 4), "batch_time.c_ms"),
    (lambda: F.PiecewiseLinear(1.0, 1.0, -1), "batch_time.b0"),
    (lambda: F.TwoFeature(1.0, 1.0, 4, kv_ms=-1.0), "batch_time.kv_ms"),
])
def test_parameter_validation(make, field):
    with pytest.raises(F.ModelError) as ei:
        make()
    assert ei.value.field == field
