"""Calibration uncertainty in capacity (fluidllm.calibrate.uncertainty), asserted against theory.

* Scaling every batch-time coefficient by s scales every batch time by s, so every policy's capacity
  (LP scale, static-batching renewal rate) is exactly 1/s of the base: a 5 % slower batch time gives
  max_scale / 1.05.
* Scaling only c of an affine t = c + a·n: μ* = b/(c + a·b), so a work-conserving policy's capacity
  moves by (c + a·b)/(s·c + a·b).
* The bootstrap percentile interval of max_scale contains the point estimate, and (rows drawn from the
  same affine law with noise) its width shrinks like 1/√m: 16× the rows, about 1/4 the width; the test
  allows 0.6.
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

import fluidllm as fl
from fluidllm import ModelError
from fluidllm.calibrate import Profile, fit_profile
from fluidllm.calibrate.uncertainty import (BootstrapFits, add_interval_arguments, bootstrap_fits,
                                            capacity_interval, capacity_sensitivity, interval_report,
                                            interval_text, scaled_batch_time)
from fluidllm.model import batchtime as B
from fluidllm.model.io import loads_model

C_MS, A_MS, BMAX = 6.0, 0.03, 512


def model(bt: B.BatchTime) -> fl.Model:
    """One Sarathi engine (b_max 512) with batch time ``bt``; Poisson 4 req/s, v_p = 200, v_d ~ Geom(64)."""
    m = loads_model(f"""
[engines.gpu]
token_budget = {BMAX}
policy = "sarathi"
batch_time = {{ kind = "constant", c_ms = 1.0 }}
[workloads.chat]
arrival = {{ kind = "poisson", rate_per_s = 4.0 }}
prefill = {{ kind = "deterministic", value = 200 }}
decode = {{ kind = "geometric", mean = 64 }}
""")
    return m.with_engine("gpu", batch_time=bt)


def affine_profile(m: int, seed: int) -> Profile:
    """m prefill rows, n uniform on 1..1024, t = 6 + 0.03·n ms with 3 % relative noise (fixed seed)."""
    rng = np.random.default_rng(seed)
    n = rng.integers(1, 1025, size=m).astype(float)
    t = (C_MS + A_MS * n) * (1 + 0.03 * rng.standard_normal(m))
    return Profile({"tokens_in_batch": n, "iteration_ms": t}, np.array([""] * m), f"<affine m={m}>")


@pytest.mark.parametrize("bt", [B.Staircase(11.28, 35.47, 128), B.Affine(C_MS, A_MS)], ids=["staircase", "affine"])
def test_five_percent_slower_batch_time_divides_capacity_by_1_05(bt):
    s = capacity_sensitivity(model(bt), 0.05, policies=["sarathi", "orca", "fastertransformer"])
    for r in s.rows:
        assert r.method == "analytic", r
        # the LP is solved to ~1e-9; the static-batching DP is exact
        assert r.max_scale_slower == pytest.approx(r.max_scale / 1.05, rel=1e-7), r
        assert r.max_scale_faster == pytest.approx(r.max_scale / 0.95, rel=1e-7), r
        assert r.elasticity(0.05) == pytest.approx(1.0, rel=1e-6)
    # and the work-conserving capacity is the plain capacity of the scaled model
    slower = model(scaled_batch_time(bt, 1.05))
    assert s.row("sarathi").max_scale_slower == pytest.approx(fl.capacity(slower).max_scale, rel=1e-9)
    d = s.to_dict()
    assert d["rows"][0]["ratio_slower"] == pytest.approx(1 / 1.05, rel=1e-7)
    assert "sarathi" in s.markdown()


def test_scaling_only_the_intercept_follows_mu_star():
    bt = B.Affine(C_MS, A_MS)
    s = capacity_sensitivity(model(bt), 0.05, policies=["sarathi"], component="c_ms")
    (r,) = s.rows
    full = C_MS + A_MS * BMAX               # μ* = b/(c + a·b) at n = b_max (n/t(n) increasing)
    assert r.max_scale_slower / r.max_scale == pytest.approx(full / (1.05 * C_MS + A_MS * BMAX), rel=1e-7)
    assert r.max_scale_faster / r.max_scale == pytest.approx(full / (0.95 * C_MS + A_MS * BMAX), rel=1e-7)
    assert 0 < r.elasticity(0.05) < 1


def test_bootstrap_interval_contains_the_point_and_shrinks_with_more_rows():
    m0 = model(B.Affine(C_MS, A_MS))
    small = capacity_interval(m0, affine_profile(24, seed=1), family="affine", n_boot=100, seed=2)
    large = capacity_interval(m0, affine_profile(384, seed=1), family="affine", n_boot=100, seed=2)
    for ci in (small, large):
        lo, hi = ci.max_scale_interval
        assert lo <= ci.max_scale <= hi
        mlo, mhi = ci.engines["gpu"]["interval"]
        assert mlo <= ci.engines["gpu"]["max_token_rate_per_s"] <= mhi
        assert ci.failed == 0 and len(ci.samples) == 100
    assert large.width < 0.6 * small.width, (small.width, large.width)
    # the true capacity (c = 6, a = 0.03) lies in the large-sample interval
    truth = fl.capacity(m0).max_scale
    assert large.max_scale_interval[0] <= truth <= large.max_scale_interval[1]
    # the point estimate is the capacity of the model with the fit to all rows
    fit = fit_profile(affine_profile(384, seed=1), families=["affine"], n_boot=0).chosen.model
    assert large.max_scale == pytest.approx(fl.capacity(m0.with_engine("gpu", batch_time=fit)).max_scale, rel=1e-9)


def test_bootstrap_fits_reuse_a_calibration_result_and_are_reproducible():
    prof = affine_profile(40, seed=5)
    res = fit_profile(prof, families=["affine", "piecewise-linear"], n_boot=0)
    a = bootstrap_fits(prof, res.chosen.family, n_boot=10, seed=7)
    b = bootstrap_fits(prof, res.chosen.family, n_boot=10, seed=7)
    assert isinstance(a, BootstrapFits) and a.replicates == b.replicates
    assert a.point.params == res.chosen.params and a.to_dict()["replicates_ok"] == 10


def test_interval_report_for_the_cli(tmp_path):
    prof = affine_profile(60, seed=3)
    path = tmp_path / "p.csv"
    path.write_text("tokens_in_batch,iteration_ms\n" + "".join(
        f"{n:g},{float(t)!r}\n" for n, t in zip(prof.tokens, prof.times_ms)))
    p = argparse.ArgumentParser()
    p.add_argument("--engine")
    p.add_argument("--seed", type=int, default=0)
    add_interval_arguments(p)
    args = p.parse_args(["--profile-fit", str(path), "--n-boot", "30", "--level", "0.9",
                         "--profile-family", "affine"])
    d = interval_report(args, model(B.Affine(C_MS, A_MS)))
    assert d["level"] == 0.9 and d["n_boot"] == 30
    assert d["max_scale"]["lo"] <= d["max_scale"]["point"] <= d["max_scale"]["hi"]
    mu = d["engines"]["gpu"]["max_token_rate_per_s"]
    assert mu["lo"] <= mu["point"] <= mu["hi"]
    assert "max_scale" in interval_text(d)


def test_scaled_batch_time():
    st = B.Staircase(11.28, 35.47, 128, preset="codellama-34b-a100")
    s = scaled_batch_time(st, 1.1)
    assert s.preset is None and s.to_dict() == {"kind": "staircase", "c_ms": 11.28 * 1.1, "a_ms": 35.47 * 1.1,
                                                "b0": 128}
    assert np.allclose(s.tokens_ms(np.arange(1, 600)), 1.1 * st.tokens_ms(np.arange(1, 600)))
    tab = B.Table([1, 100, 512], [5.0, 8.0, 20.0])
    assert np.allclose(scaled_batch_time(tab, 0.5).times_ms, [2.5, 4.0, 10.0])
    only_a = scaled_batch_time(B.Affine(2.0, 0.1), 2.0, "a_ms")
    assert (only_a.c_ms, only_a.a_ms) == (2.0, 0.2)


def test_errors():
    m0 = model(B.Affine(C_MS, A_MS))
    prof = affine_profile(20, seed=0)
    with pytest.raises(ModelError, match="level"):
        capacity_interval(m0, prof, 1.5, family="affine", n_boot=5)
    with pytest.raises(ModelError, match="table"):
        bootstrap_fits(prof, "table", n_boot=5)
    with pytest.raises(ModelError, match="n_boot"):
        bootstrap_fits(prof, "affine", n_boot=0)
    with pytest.raises(ModelError, match="engine"):
        capacity_interval(m0, prof, family="affine", n_boot=5, engine="nope")
    with pytest.raises(ModelError, match="rel_error"):
        capacity_sensitivity(m0, 1.5)
    with pytest.raises(ModelError, match="component"):
        scaled_batch_time(B.Affine(1.0, 0.1), 1.1, "b0")
    with pytest.raises(ModelError, match="factor"):
        scaled_batch_time(B.Affine(1.0, 0.1), -1.0)
    assert math.isfinite(capacity_interval(m0, prof, family="affine", n_boot=5).max_scale)
