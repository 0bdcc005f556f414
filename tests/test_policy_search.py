"""The simulated policy-capacity search (fluidllm.capacity.policy_search).

Checked against an independent method (the renewal-reward capacity of request-level batching,
fluidllm.capacity.static, for FasterTransformer), against Theorem 2 (a work-conserving policy's
bracket holds the LP bound), for determinism (same seed, same bracket, on any number of worker
processes) and for bad input. Each confirmed verdict is wrong with probability <= 0.5 % and the
seeds are fixed, so these are deterministic tests of a method whose error rate is stated.
"""
from __future__ import annotations

import json

import pytest

import fluidllm as fl
from fluidllm.capacity.policy import policy_capacity
from fluidllm.capacity.policy_search import PolicySearchResult, policy_capacity_search
from fluidllm.model.arrivals import PoissonArrival
from fluidllm.model.batchtime import Staircase
from fluidllm.model.lengths import Deterministic, Geometric, Independent


def _model(policy: str = "sarathi") -> fl.Model:
    """Prompts of 100 tokens, geometric output of mean 8, b_max = 512 on the paper's staircase, 1 req/s:
    short batching cycles, so a 5 % bracket costs seconds."""
    e = fl.Engine("e", 512, Staircase(11.28, 35.47, 128), policy=fl.PolicySpec(policy))
    w = fl.Workload("w", PoissonArrival(1.0), Independent(Deterministic(100), Geometric(8.0)), "e")
    return fl.Model({"e": e}, {"w": w})


def _same(a: PolicySearchResult, b: PolicySearchResult) -> bool:
    da, db = a.to_dict(), b.to_dict()
    for d in (da, db):
        d.pop("wall_s")
        d.pop("detail")
    return da == db


@pytest.mark.slow
def test_fastertransformer_bracket_holds_the_renewal_reward_capacity() -> None:
    # Independent check: the analytic renewal-reward rate of saturated cycles (exact DP) must lie in
    # the simulated bracket, which the search finds knowing nothing of it.
    m = _model("fastertransformer")
    exact = policy_capacity(m)
    assert exact.method == "analytic"
    r = policy_capacity_search(m, precision=0.05, replications=16, seed=3)
    assert r.lo_source == "confirmed" and r.hi_source == "confirmed" and r.met_precision, r.detail()
    assert r.lo <= exact.max_scale <= r.hi, (r.interval, exact.max_scale)
    assert r.hi - r.lo <= 0.05 * r.mid * (1 + 1e-12)
    # the pilot's saturated throughput is close for request-level batching (its service does not
    # depend on the arrival rate once backlogged); the bound of Theorem 2(a) is far above
    assert abs(r.saturated_estimate / exact.max_scale - 1) < 0.15 and r.hi < r.upper
    assert r.error_bound == pytest.approx(r.verdicts * 0.005) and r.error_bound <= 0.02
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["interval"] == [r.lo, r.hi] and d["steps"][0]["stage"] == "pilot"
    assert {s["stage"] for s in d["steps"]} == {"pilot", "estimate", "confirm"}


@pytest.mark.slow
def test_work_conserving_bracket_holds_the_lp_bound_and_is_deterministic(capsys) -> None:
    # Theorem 2: a work-conserving policy's capacity is the LP bound; the search may confirm loads
    # above it (up to 1.1 x), so the upper side is checked by simulation, not assumed.
    m = _model("sarathi")
    wc = fl.capacity(m).max_scale
    kw = dict(precision=0.1, replications=8, seed=5, max_rounds=2)
    a = policy_capacity_search(m, progress=True, **kw)
    out, err = capsys.readouterr()
    assert out == "" and "[policy-search sarathi] pilot" in err and "confirm 1 look 1" in err
    assert a.lo <= wc <= a.hi, (a.interval, wc)
    b = policy_capacity_search(m, workers=2, **kw)            # same seed, two processes: same numbers
    assert _same(a, b)
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_policy_capacity_simulated_branch_reports_the_search() -> None:
    # vanilla vLLM is not work-conserving: policy_capacity falls back on the search.
    m = _model("vllm")
    pc = policy_capacity(m, "vllm", replications=8, seed=1)
    assert pc.method == "simulated" and pc.interval is not None
    lo, hi = pc.interval
    assert 0 < lo < hi <= 1.1 * fl.capacity(m).max_scale
    assert pc.max_scale == pytest.approx(0.5 * (lo + hi))
    assert hi - lo <= 0.02 * pc.max_scale * (1 + 1e-12), pc.detail
    assert "sequential search" in pc.detail and "P(bracket wrong)" in pc.detail
    assert isinstance(pc.boundary, PolicySearchResult) and len(pc.boundary.rounds) >= 3
    json.dumps(pc.to_dict(), allow_nan=False)


@pytest.mark.parametrize("kw, field", [
    ({"precision": 0.0}, "precision"), ({"precision": 0.7}, "precision"), ({"alpha": 0.0}, "alpha"),
    ({"alpha": 0.9}, "alpha"), ({"replications": 1}, "replications"), ({"max_looks": 0}, "max_looks"),
    ({"max_rounds": 0}, "max_rounds"), ({"upper": -1.0}, "upper"), ({"lower": 50.0}, "lower"),
    ({"window_s": 0.0}, "window_s"), ({"seed": -1}, "seed"), ({"workers": 0}, "workers"),
    ({"policy": "bogus"}, "policy"), ({"engine": "nope"}, "engine")])
def test_bad_arguments_name_field_value_and_what_is_allowed(kw, field) -> None:
    with pytest.raises(fl.ModelError) as ei:
        policy_capacity_search(_model("vllm"), **kw)
    e = ei.value
    assert field in e.field and e.allowed, (e.field, e.allowed)
    assert str(e).startswith(e.field)


def test_no_load_is_an_error() -> None:
    e = fl.Engine("e", 512, Staircase(11.28, 35.47, 128), policy=fl.PolicySpec("vllm"))
    w = fl.Workload("w", PoissonArrival(0.0), Independent(Deterministic(100), Geometric(8.0)), "e")
    with pytest.raises(fl.ModelError, match="load"):
        policy_capacity_search(fl.Model({"e": e}, {"w": w}))
