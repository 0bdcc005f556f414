"""Single-engine capacity: brute force, closed forms, the configuration LP and its region."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fluidllm as fl
from fluidllm.capacity import (Demand, demand_of, engine_capacity, max_token_rate, solve_config_lp,
                               symbolic_capacity, token_region)
from fluidllm.capacity.configlp import _times

PAPER = fl.Staircase(11.28, 35.47, 128)


def engine(b=512, bt=PAPER, k=None, kv=None, policy="sarathi"):
    return fl.Engine("e", b, bt, max_batch_requests=k, kv_capacity_tokens=kv, policy=fl.PolicySpec(policy))


def workload(rate, p=129, d=112, name="w", geometric=True):
    dec = fl.Geometric(d) if geometric else fl.Deterministic(d)
    return fl.Workload(name, fl.PoissonArrival(rate), fl.Independent(fl.Deterministic(p), dec), "e")


batch_times = st.one_of(
    st.builds(fl.Constant, st.floats(0.5, 50)),
    st.builds(fl.Affine, st.floats(0.0, 50), st.floats(0.001, 1.0)),
    st.builds(fl.PiecewiseLinear, st.floats(0.5, 50), st.floats(0.0, 1.0), st.integers(0, 600)),
    st.builds(fl.Staircase, st.floats(0.0, 50), st.floats(0.01, 60), st.integers(1, 300)),
)


def test_paper_numbers():
    # paper notes: b_max/t_bmax = 2.737968 (128), 3.342909 (512), 3.470716 (1024) tokens/ms
    for b, want in [(128, 2.737968), (512, 3.342909), (1024, 3.470716)]:
        r = max_token_rate(PAPER, b)
        assert r.argmax_tokens == b
        assert r.tokens_per_ms == pytest.approx(want, abs=5e-7)
    # (100, 100) tokens at b_max = 512: lambda* = 3.342909/200 per ms = 16.71 req/s
    m = fl.Model({"e": engine(512)}, {"w": workload(1.0, 100, 100, geometric=False)})
    c = fl.capacity(m)
    assert c.workloads["w"].max_rate_per_s == pytest.approx(16.714547, rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(bt=batch_times, b=st.integers(1, 700))
def test_max_rate_equals_brute_force_and_lp(bt, b):
    n = np.arange(1, b + 1)
    r = n / np.array([float(bt.tokens_ms(np.array([k]))[0]) for k in n])  # one at a time: the plain reference
    got = max_token_rate(bt, b)
    assert got.tokens_per_ms == pytest.approx(r.max(), rel=1e-12)
    assert got.argmax_tokens == int(np.argmax(r)) + 1
    # Without k_max or memory the LP region is the half-space lambda(m_p + m_d) < mu*.
    e = engine(b, bt)
    w = workload(2.0, 7, 5)
    lp = solve_config_lp(e, demand_of([w]))
    assert lp.status == "optimal"
    assert lp.max_scale == pytest.approx(r.max() / (2.0 / 1000 * 12), rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(c=st.floats(0.0, 40), a=st.floats(0.01, 60), b0=st.integers(1, 256), m=st.integers(1, 12))
def test_staircase_rate_inequality_when_b0_divides(c, a, b0, m):
    b = b0 * m
    bt = fl.Staircase(c, a, b0)
    r = max_token_rate(bt, b)
    # b/t_b <= b_max/t_bmax for all b <= b_max (ties possible when c = 0)
    assert r.tokens_per_ms == pytest.approx(b / float(bt.tokens_ms(b)), rel=1e-12)


def test_staircase_counterexample_when_b0_does_not_divide():
    # b_max = 130, b0 = 128: t(130) = c + 2a, so 128/t(128) beats b_max/t(b_max).
    r = max_token_rate(PAPER, 130)
    assert r.argmax_tokens == 128
    assert 128 / 46.75 > 130 / float(PAPER.tokens_ms(130))
    s = symbolic_capacity(engine(130), [workload(1.0)])
    assert s.agrees and s.mu_value == pytest.approx(128 / 46.75)


@settings(max_examples=60, deadline=None)
@given(bt=batch_times, b=st.integers(1, 2000), rate=st.floats(0.01, 100))
def test_symbolic_agrees_with_brute_force(bt, b, rate):
    s = symbolic_capacity(engine(b, bt), [workload(rate)])
    assert s.agrees
    assert s.holds == (rate / 1000 * 241 < s.brute_force)


def test_vertex_c():
    e = engine(128, k=100)
    reg = token_region(e)
    want = np.array([29 / 46.75, 99 / 46.75]) * 1000
    assert any(np.allclose(v, want, rtol=1e-12) for v in reg.vertices_per_s)
    assert (29, 99) in reg.vertex_configurations
    # deterministic (290, 990) every 467.5 ms is exactly vertex C: on the boundary
    m = fl.load_model("examples/vertex_c_kmax100.toml")
    c = fl.capacity(m)
    assert c.max_scale == pytest.approx(1.0, abs=1e-7)
    assert c.position == "boundary"
    ec = c.engines["a100"]
    assert ec.binding == "batch_requests" and "token_budget" in ec.binding_all
    assert ec.support[0]["prefill_tokens"] == 29 and ec.support[0]["decode_tokens"] == 99


def _all_configs(e):
    b, K = e.token_budget, e.max_batch_requests
    out = []
    for p in range(b + 1):
        for d in range(b + 1 - p):
            if p + d == 0:
                continue
            if K is not None and (d + (p > 0) > K):
                continue
            q = 0 if p == 0 else (p if K is None else min(p, K - d))
            out.append((p, d, q))
    return np.array(out)


@settings(max_examples=40, deadline=None)
@given(bt=batch_times, b=st.integers(2, 40), k=st.one_of(st.none(), st.integers(1, 45)),
       lp_=st.one_of(st.just(0.0), st.floats(1e-3, 1.0)), ld=st.one_of(st.just(0.0), st.floats(1e-3, 1.0)),
       lr=st.one_of(st.just(0.0), st.floats(1e-3, 0.3)))
def test_lp_extremes_equal_full_enumeration(bt, b, k, lp_, ld, lr):
    """The extreme-column LP is the LP over every configuration (plain scipy reference)."""
    from scipy.optimize import linprog

    if lp_ + ld == 0:
        return
    e = engine(b, bt, k)
    dem = Demand(lp_, ld, lr)
    got = solve_config_lp(e, dem).max_scale
    cfg = _all_configs(e)
    t = _times(e, cfg, 0.0)
    C = len(cfg)
    # variables (x_1..x_C, s); maximise s
    A = np.zeros((4, C + 1))
    A[0, :C], A[0, C] = -cfg[:, 0] / t, lp_
    A[1, :C], A[1, C] = -cfg[:, 1] / t, ld
    A[2, :C], A[2, C] = -cfg[:, 2] / t, lr
    A[3, :C] = 1
    res = linprog(np.r_[np.zeros(C), -1.0], A_ub=A, b_ub=[0, 0, 0, 1], bounds=[(0, None)] * C + [(None, None)],
                  method="highs")
    assert res.status == 0
    assert got == pytest.approx(-res.fun, rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(b=st.integers(2, 200), k=st.one_of(st.none(), st.integers(1, 250)))
def test_region_contains_every_configuration_and_nothing_beyond_mu(b, k):
    e = engine(b, k=k)
    reg = token_region(e)
    cfg = _all_configs(e)
    t = _times(e, cfg, 0.0)
    pts = np.column_stack([cfg[:, 0], cfg[:, 1]]) / t[:, None] * 1000
    mu = max_token_rate(PAPER, b).tokens_per_s
    for y in pts:
        assert reg.contains(*y, strict=False)
    # nothing beyond mu*: every vertex has lambda_p + lambda_d <= mu*
    assert np.all(reg.vertices_per_s.sum(1) <= mu * (1 + 1e-12))
    # a point just outside along the total-token direction is outside
    assert not reg.contains(mu * 0.5 * 1.001, mu * 0.5 * 1.001)


@settings(max_examples=30, deadline=None)
@given(f=st.floats(0.05, 20), b=st.integers(64, 600), k=st.one_of(st.none(), st.integers(2, 300)))
def test_scaling_rates_scales_max_scale(f, b, k):
    m = fl.Model({"e": engine(b, k=k)}, {"w": workload(3.0)})
    s1 = fl.capacity(m).max_scale
    s2 = fl.capacity(m.scaled(f)).max_scale
    assert s2 == pytest.approx(s1 / f, rel=1e-6)
    # the region in tokens scales with the batch-time speed: halve every time, double the region
    fast = dataclasses.replace(PAPER, c_ms=PAPER.c_ms / 2, a_ms=PAPER.a_ms / 2)
    r1, r2 = token_region(engine(b, k=k)), token_region(engine(b, fast, k=k))
    assert np.allclose(np.sort(r2.vertices_per_s, 0), 2 * np.sort(r1.vertices_per_s, 0))


@pytest.mark.parametrize("tiny", [1e-12, 1e-6, 1e3, 1e8])
def test_demand_magnitude_does_not_matter(tiny):
    e = engine(256, k=50, kv=60000)
    dem = Demand(0.5, 0.7, 0.004, 300.0, decode_context=400.0)
    ref = solve_config_lp(e, dem).max_scale
    small = Demand(0.5 * tiny, 0.7 * tiny, 0.004 * tiny, 300.0 * tiny, decode_context=400.0)
    assert solve_config_lp(e, small).max_scale == pytest.approx(ref / tiny, rel=1e-6)


def test_multiclass_half_space():
    # several classes: sum_k lambda_k (m_p,k + m_d,k) < mu*
    ws = {"a": workload(2.0, 100, 50, "a"), "b": workload(3.0, 30, 300, "b")}
    m = fl.Model({"e": engine(512)}, ws)
    c = fl.capacity(m)
    mu = max_token_rate(PAPER, 512).tokens_per_s
    assert c.max_scale == pytest.approx(mu / (2 * 150 + 3 * 330), rel=1e-7)
    assert c.workloads["b"].max_rate_per_s == pytest.approx(3 * c.max_scale)


def test_zero_rate_workload_gets_the_room_left():
    ws = {"a": workload(5.0, 100, 100, "a"), "b": workload(0.0, 100, 100, "b")}
    c = fl.capacity(fl.Model({"e": engine(512)}, ws))
    mu = max_token_rate(PAPER, 512).tokens_per_s
    assert c.workloads["b"].max_rate_per_s == pytest.approx((mu - 5 * 200) / 200, rel=1e-6)


def test_kv_memory_binds_and_matches_plain_lp():
    """Memory: the row lambda E[g] <= M x batches/ms and the per-batch cap d (kappa + 1) <= M,
    against a plain scipy LP over every configuration."""
    from scipy.optimize import linprog

    e = engine(96, kv=6000)
    w = workload(1.0, 100, 1000, geometric=False)
    c = engine_capacity(e, [w])
    assert c.binding == "kv_memory"
    dem = demand_of([w])
    kappa = 100 + 999 / 2  # mean context of a decode token: v_p + (j - 1), j = 1..1000
    assert dem.decode_context == pytest.approx(kappa)
    cap = int(6000 // (kappa + 1))
    assert cap == 9
    assert all(col["decode_tokens"] <= cap for col in c.support)
    cfg = _all_configs(e)
    cfg = cfg[cfg[:, 1] <= cap]
    t = _times(e, cfg, kappa)
    C = len(cfg)
    g = (1000 + 1) * (100 + 500)
    A = np.zeros((5, C + 1))
    A[0, :C], A[0, C] = -cfg[:, 0] / t, dem.prefill_tokens_per_ms
    A[1, :C], A[1, C] = -cfg[:, 1] / t, dem.decode_tokens_per_ms
    A[2, :C], A[2, C] = -cfg[:, 2] / t, dem.requests_per_ms
    A[3, :C], A[3, C] = -6000 / t, 1.0 / 1000 * g
    A[4, :C] = 1
    res = linprog(np.r_[np.zeros(C), -1.0], A_ub=A, b_ub=[0, 0, 0, 0, 1],
                  bounds=[(0, None)] * C + [(None, None)], method="highs")
    assert c.max_scale == pytest.approx(-res.fun, rel=1e-6)
    # without the memory limit the engine sustains strictly more
    assert engine_capacity(engine(96), [w]).max_scale > c.max_scale * 5


def test_two_feature_column_generation_is_exact():
    bt = fl.TwoFeature(c_ms=8.0, a_ms=0.05, b0=64, decode_ms=0.03, kv_ms=2e-4, prefill_sq_ms=1e-5)
    for k in (None, 20):
        e = engine(48, bt, k)
        dem = Demand(0.4, 0.6, 0.01, 0.0, decode_context=300.0)
        got = solve_config_lp(e, dem)
        from scipy.optimize import linprog

        cfg = _all_configs(e)
        t = _times(e, cfg, 300.0)
        C = len(cfg)
        A = np.zeros((4, C + 1))
        A[0, :C], A[0, C] = -cfg[:, 0] / t, 0.4
        A[1, :C], A[1, C] = -cfg[:, 1] / t, 0.6
        A[2, :C], A[2, C] = -cfg[:, 2] / t, 0.01
        A[3, :C] = 1
        res = linprog(np.r_[np.zeros(C), -1.0], A_ub=A, b_ub=[0, 0, 0, 1],
                      bounds=[(0, None)] * C + [(None, None)], method="highs")
        assert got.max_scale == pytest.approx(-res.fun, rel=1e-6)
        assert got.configurations.shape[0] < C  # only a few columns were needed


def test_json_keys_and_finite_numbers():
    import json

    c = fl.capacity(fl.load_model("examples/paper_codellama_b512.toml"))
    d = json.loads(c.to_json(allow_nan=False))
    assert {"max_scale", "engines", "workloads"} <= set(d)
    e = d["engines"]["a100"]
    assert {"max_token_rate_per_s", "argmax_batch_tokens", "binding"} <= set(e)
    assert d["workloads"]["fig1"]["max_rate_per_s"] == pytest.approx(3342.909376 / 241, rel=1e-6)


def test_no_load_is_unbounded():
    m = fl.Model({"e": engine(512)}, {"w": workload(0.0)})
    c = fl.capacity(m)
    assert math.isinf(c.max_scale) and c.to_dict()["max_scale"] is None
