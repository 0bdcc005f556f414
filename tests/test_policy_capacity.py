"""Capacity of request-level batching (FasterTransformer) and `capacity --policy`.

Checked three ways: a closed form on deterministic lengths, the exact DP against a Monte-Carlo of
saturated cycles (95 % interval), and the simulator's stability verdicts on both sides of the
analytic boundary (α = 1 % per verdict, fixed seeds).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import fluidllm as fl
from fluidllm.capacity.policy import policy_capacity
from fluidllm.capacity.static import static_batching_rate, static_batching_rate_mc
from fluidllm.cli import main
from fluidllm.model.arrivals import PoissonArrival
from fluidllm.model.batchtime import Staircase
from fluidllm.model.lengths import Deterministic, Geometric, Independent, Uniform

STAIR = Staircase(11.28, 35.47, 128)


def engine(policy: str = "fastertransformer", b: int = 512, kmax: int | None = None) -> fl.Engine:
    return fl.Engine("e", b, STAIR, max_batch_requests=kmax, policy=fl.PolicySpec(policy))


def test_deterministic_lengths_closed_form() -> None:
    # Prompts 129: floor(512/129) = 3 per group; 10 decode batches of 3 tokens each.
    r = static_batching_rate(engine(), Independent(Deterministic(129), Deterministic(10)))
    t = lambda n: 11.28 + 35.47 * np.ceil(n / 128)  # noqa: E731
    assert r.mean_group == 3
    assert r.rate_per_s == pytest.approx(3 / (t(387) + 10 * t(3)) * 1000, rel=1e-12)
    # k_max = 2 caps the group.
    r2 = static_batching_rate(engine(kmax=2), Independent(Deterministic(129), Deterministic(10)))
    assert r2.rate_per_s == pytest.approx(2 / (t(258) + 10 * t(2)) * 1000, rel=1e-12)


@pytest.mark.parametrize("lengths", [Independent(Uniform(20, 300), Geometric(30.0)),
                                     Independent(Uniform(1, 200), Uniform(0, 40))])
def test_exact_rate_matches_monte_carlo(lengths) -> None:
    ex = static_batching_rate(engine(), lengths)
    mc = static_batching_rate_mc(engine(), lengths, cycles=20000, seed=3)
    lo, hi = mc.interval
    assert lo <= ex.rate_per_s <= hi, (ex.rate_per_s, mc.interval)


def test_prompts_that_never_fit_make_capacity_zero() -> None:
    r = static_batching_rate(engine(b=128), Independent(Uniform(100, 200), Deterministic(3)))
    assert r.rate_per_s == 0 and r.unschedulable_fraction == pytest.approx(72 / 101)


def _model(policy: str, rate: float) -> fl.Model:
    w = fl.Workload("w", PoissonArrival(rate), Independent(Deterministic(100), Geometric(8.0)), "e")
    return fl.Model({"e": engine(policy)}, {"w": w})


@pytest.mark.parametrize("policy", ["fastertransformer", "fastertransformer-static"])
def test_simulator_confirms_the_analytic_boundary(policy: str) -> None:
    m = _model(policy, 1.0)
    pc = policy_capacity(m)
    assert pc.method == "analytic" and 0 < pc.max_scale < pc.work_conserving_max_scale
    below = fl.stability(m, load=0.8 * pc.max_scale, replications=8, horizon_s=600, seed=1)
    above = fl.stability(m, load=1.25 * pc.max_scale, replications=8, horizon_s=600, seed=1)
    assert below.verdict == "STABLE", below.reason
    assert above.verdict == "UNSTABLE", above.reason
    # Above the boundary the backlog grows at (λ − λ*)(m_p + m_d) (bulk-service fluid limit).
    lam_star = pc.max_scale * 1.0
    expect = (1.25 - 1.0) * lam_star * (100 + 8.0)
    assert above.slope_interval[0] <= expect <= above.slope_interval[1], (above.slope_interval, expect)


def test_work_conserving_policy_reports_the_bound_and_cli(capsys) -> None:
    m = fl.load_model("examples/paper_codellama_b512.toml")
    pc = policy_capacity(m, "orca")
    assert pc.method == "analytic" and pc.loss_ratio == 0 and pc.max_scale == pytest.approx(fl.capacity(m).max_scale)
    assert main(["capacity", "examples/paper_codellama_b512.toml", "--policy", "fastertransformer", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["policy"]["name"] == "fastertransformer" and d["policy"]["method"] == "analytic"
    assert 0 < d["policy"]["max_scale"] < 0.05 and d["policy"]["loss_ratio"] > 0.9
    assert main(["capacity", "examples/paper_codellama_b512.toml", "--policy", "bogus"]) == 2


def test_policy_capacity_table_checks_every_analytic_value_against_the_simulator() -> None:
    # Each verdict inside the brackets is wrong with probability <= 1 %; seeds are fixed.
    m = _model("sarathi", 1.0)
    t = fl.policy_capacity_table(m, ("fastertransformer", "vllm", "sarathi"), replications=8, horizon_s=300,
                                 boundary_points=6, seed=2)
    wc = fl.capacity(m).max_scale
    assert t.work_conserving_max_scale == pytest.approx(wc) and t.rate_per_s == 1.0
    ft, vllm, sar = (t.row(n) for n in ("fastertransformer", "vllm", "sarathi"))
    assert ft.analytic.method == "analytic" and ft.agrees is True
    assert ft.simulated[0] <= ft.analytic.max_scale <= ft.simulated[1]
    assert sar.work_conserving and sar.analytic.max_scale == pytest.approx(wc) and sar.agrees is True
    # vanilla vLLM has no closed form: only a bracket, strictly inside (0, 1.1 wc], below the bound's top
    assert vllm.analytic is None and vllm.agrees is None and 0 < vllm.simulated[0] < vllm.simulated[1] <= 1.1 * wc
    assert vllm.boundary is not None and len(vllm.boundary.rounds) >= 1
    md = t.markdown()
    assert md.count("\n") == 2 + 2 and "| vllm | no | — |" in md
    d = json.loads(json.dumps(t.to_dict()))
    assert [r["name"] for r in d["rows"]] == ["fastertransformer", "vllm", "sarathi"]
    with pytest.raises(fl.ModelError, match="policies"):
        fl.policy_capacity_table(m, ())
