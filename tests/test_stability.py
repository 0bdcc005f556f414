"""The stability verdict on the real simulator: the fluid oracle's slope, slow settling, errors.

Statistical claims here are 99 % intervals (α = 0.01 per verdict, so a wrong definite verdict has
probability <= 1 %, see fluidllm.sim.verdict); seeds are fixed, so the outcomes are deterministic
in CI. The expected values come from theory (Li, Dai, Peng, Thm 2: a work-conserving policy's
token backlog grows at max(0, λ(m_p + m_d) − μ*)), not from earlier runs.
"""
from __future__ import annotations

import math

import pytest

import fluidllm as fl
from fluidllm.sim.stability import fluid_slope_tokens_per_s, offered_tokens_per_s

PAPER = "examples/paper_codellama_b512.toml"


@pytest.fixture(scope="module")
def model() -> fl.Model:
    return fl.load_model(PAPER)


@pytest.fixture(scope="module")
def max_scale(model: fl.Model) -> float:
    return fl.capacity(model).max_scale


@pytest.mark.parametrize("policy", ["sarathi", "orca"])
def test_overload_slope_matches_the_fluid_oracle(model: fl.Model, max_scale: float, policy: str) -> None:
    m = model.with_engine("a100", policy=fl.PolicySpec(policy))
    load = 1.2 * max_scale
    r = fl.stability(m, load=load, replications=16, horizon_s=900, seed=11)
    eng, wl = m.engines["a100"], m.workloads_on("a100")
    fluid = fluid_slope_tokens_per_s(eng, wl, load)
    # μ* = 512 / t(512) tokens/ms for the staircase with b0 | b_max (paper notes).
    assert fluid == pytest.approx(offered_tokens_per_s(wl, load) - 512 / 153.16 * 1000, rel=1e-9)
    assert r.verdict == "UNSTABLE" and r.fluid_slope_tokens_per_s == pytest.approx(fluid)
    lo, hi = r.slope_interval
    assert lo <= fluid <= hi, (r.slope_tokens_per_s, r.slope_interval, fluid)


def test_below_capacity_is_stable_and_oracle_is_zero(model: fl.Model, max_scale: float) -> None:
    r = fl.stability(model, load=0.7 * max_scale, replications=8, seed=3)
    assert r.verdict == "STABLE" and r.fluid_slope_tokens_per_s == 0.0
    assert r.slope_interval[0] <= 0.0 <= r.slope_interval[1] or abs(r.slope_tokens_per_s) < 0.02 * r.offered_tokens_per_s


def test_slow_settling_at_high_load_is_not_called_unstable(model: fl.Model, max_scale: float) -> None:
    # At 0.97 of capacity a work-conserving queue takes minutes to settle; over 60 s the backlog
    # only grows. The verdict must not call that UNSTABLE (INCONCLUSIVE is the honest answer).
    r = fl.stability(model, load=0.97 * max_scale, replications=8, horizon_s=60, seed=5, extensions=0)
    assert r.verdict != "UNSTABLE", r.reason


def test_fastertransformer_collapses_at_three_quarters_of_capacity(model: fl.Model, max_scale: float) -> None:
    # Stylised FT (decode-first, no mixing, whole prompts): a new prompt waits until every decoder
    # has finished, so with geometric outputs it admits at most floor(512/129) = 3 prompts per
    # decode cycle — far below the arrival rate. Not work-conserving: no fluid oracle.
    m = model.with_engine("a100", policy=fl.PolicySpec("fastertransformer"))
    r = fl.stability(m, load=0.75 * max_scale, replications=4, horizon_s=300, seed=2)
    assert r.verdict == "UNSTABLE" and r.fluid_slope_tokens_per_s is None
    assert r.slope_interval[0] > 0.5 * r.offered_tokens_per_s


def test_boundary_search_brackets_the_work_conserving_capacity(model: fl.Model, max_scale: float) -> None:
    b = fl.stability_boundary(model, lo=0.5 * max_scale, hi=1.5 * max_scale, points=6, rounds=1,
                              replications=6, horizon_s=900, seed=1)
    # Thm 2: stable below max_scale, unstable above; the bracket must contain it.
    assert b.stable_load is not None and b.unstable_load is not None
    assert b.stable_load <= max_scale * 1.001 and b.unstable_load >= max_scale * 0.999
    assert len(b.rounds[0]) == 6 and b.to_dict()["rounds"][0][0]["load"] == pytest.approx(0.5 * max_scale)


def test_bad_arguments_name_the_field(model: fl.Model) -> None:
    with pytest.raises(fl.ModelError, match="load"):
        fl.stability(model, load=-1)
    with pytest.raises(fl.ModelError, match="replications"):
        fl.stability(model, replications=1)
    with pytest.raises(fl.ModelError, match="hi"):
        fl.stability_boundary(model, lo=1.0, hi=0.5)
    with pytest.raises(fl.ModelError, match="engine"):
        fl.simulate(model, engine="nope")
    with pytest.raises(fl.ModelError, match="backend"):
        fl.simulate(model, backend="tpu")
    assert math.isfinite(fl.simulate(model, replications=2, horizon_s=5).throughput_requests_per_s[0])
