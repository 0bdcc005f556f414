"""The truth harness (fluidllm.testing.truth) in the suite: issue 16's wrong answers stay fixed, and
capacity's claims hold against the simulator on random models of every family."""
from __future__ import annotations

import json

import pytest

from fluidllm import capacity, policy_capacity
from fluidllm.cli import main
from fluidllm.errors import ModelError
from fluidllm.model.policy import PolicySpec
from fluidllm.testing.truth import (REGRESSION_CASES, check_model, random_model, regression_model,
                                    support_violations)


def test_item1_work_conserving_capacity_is_b_max_over_t_b_max():
    m = regression_model("item1-knee-below-budget")       # llama-2-7b-a100 knee 283, b_max 2048, 75 req/s
    c = capacity(m)
    e = c.engines["gpu"]
    t_full = float(e.work_conserving_lp.batch_ms.max())
    assert e.work_conserving_token_rate_per_s == pytest.approx(2048 / t_full * 1000, rel=1e-12)
    assert e.work_conserving_max_scale * 75 == pytest.approx(62.3, abs=0.05)     # the true capacity, req/s
    assert e.max_scale * 75 == pytest.approx(93.84, abs=0.05)                    # mu*: the best any policy
    assert e.work_conserving_exact and e.recommended_token_budget == 283
    assert c.policy_max_scale == pytest.approx(e.work_conserving_max_scale) and c.policy_method == "analytic"
    pc = policy_capacity(m, "sarathi")
    assert pc.method == "analytic" and pc.max_scale == pytest.approx(e.work_conserving_max_scale)
    assert pc.max_scale < 1 < pc.bound_max_scale and pc.loss_ratio == pytest.approx(1 - 62.3 / 93.84, abs=2e-3)
    # at the recommended budget the work-conserving capacity is mu*
    m2 = m.with_engine("gpu", token_budget=e.recommended_token_budget)
    assert capacity(m2).engines["gpu"].work_conserving_max_scale == pytest.approx(e.max_scale, rel=1e-6)


def test_item1_staircase_b0_not_dividing_budget():
    e = capacity(regression_model("item1-staircase-b0-not-dividing")).engines["gpu"]   # b_max 200, b0 128
    t200 = 11.28 + 35.47 * 2
    assert e.work_conserving_token_rate_per_s == pytest.approx(200 / t200 * 1000, rel=1e-9)
    assert e.max_token_rate_per_s == pytest.approx(128 / 46.75 * 1000, rel=1e-9)
    assert e.recommended_token_budget == 128


def test_item2_resident_cap_has_its_row():
    m = regression_model("item2-resident-cap")             # b_max 512, R = 8, (100, 100) tokens
    e = capacity(m).engines["gpu"]
    assert e.max_scale == pytest.approx(8 / (101 * 46.75) * 1000, rel=1e-6)   # 1.694 req/s, not 16.7
    assert e.binding == "resident_requests" and not e.work_conserving_exact
    assert e.policy_method == "upper bound" and any("max_resident_requests" in c for c in e.outer_bound_caps)
    assert not support_violations(m.engines["gpu"], e.support)
    # the old LP (no resident row, no per-batch cap) proposed a mix 8 residents cannot form
    old = capacity(m.with_engine("gpu", max_resident_requests=None)).engines["gpu"]
    assert old.max_scale > 16 and support_violations(m.engines["gpu"], old.support)


@pytest.mark.parametrize("label", sorted(REGRESSION_CASES))
def test_regression_cases_hold_and_old_claims_are_caught(label):
    m = regression_model(label)
    row = check_model(m, label=label, batches=1500)
    assert row.ok, [c.to_dict() for c in row.failures]
    if label.startswith("item1"):
        # the old answer (mu*, the any-policy LP, claimed as the work-conserving capacity) fails the harness
        bad = check_model(m, label=label, batches=1500, claim_policy_max_scale=capacity(m).max_scale)
        assert [c.name for c in bad.failures] == ["work_conserving_rate"]


def test_plan_uses_the_policy_capacity():
    from fluidllm import plan_engines

    p = plan_engines("azure-conv-2023", preset="llama-2-7b-a100", rate_scale=10)
    assert p.capacity_per_engine_requests_per_s == pytest.approx(10.884, abs=0.01)   # was 13.74 (mu*)
    assert p.basis.startswith("work-conserving") and p.recommended_token_budget == 283
    assert p.closed_form_requests_per_s == pytest.approx(p.capacity_requests_per_s, rel=1e-6)


@pytest.mark.parametrize("mode", ["swap", "banana"])
def test_item6_unknown_preemption_mode_refused(mode, tmp_path, capsys):
    with pytest.raises(ModelError, match="preemption"):
        PolicySpec("vllm-v1", {"preemption": mode})
    f = tmp_path / "m.toml"
    f.write_text(REGRESSION_CASES["item2-resident-cap"].replace(
        'policy = "sarathi"', f'kv_capacity_tokens = 20000\npolicy = {{ kind = "vllm-v1", preemption = "{mode}" }}'))
    assert main(["capacity", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "preemption" in err[0] and mode in err[0]


def test_capacity_json_names_both_meanings(capsys):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "m.toml"
        f.write_text(REGRESSION_CASES["item1-knee-below-budget"])
        assert main(["capacity", str(f), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["max_scale"] == pytest.approx(1.2512, abs=1e-4)
    assert d["policy_max_scale"] == pytest.approx(0.8309, abs=1e-4) and d["policy_method"] == "analytic"
    e = d["engines"]["gpu"]
    assert e["recommended_token_budget"] == 283 and e["work_conserving_exact"] is True


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10))
def test_random_models_claims_hold(seed):
    m = random_model(seed)
    row = check_model(m, label=f"random-{seed}", batches=1500, seed=seed)
    assert row.ok, (m, [c.to_dict() for c in row.failures])


def test_network_resident_row_and_policy_capacity_only_when_feed_forward():
    from fluidllm.model.io import loads_model

    net = loads_model("""
[engines.e1]
token_budget = 512
max_resident_requests = 8
policy = "sarathi"
batch_time = { preset = "codellama-34b-a100" }
[workflows.A]
arrival = { kind = "poisson", rate_per_s = 1.0 }
[[workflows.A.calls]]
id = "c"
engine = "e1"
prefill = { kind = "deterministic", value = 100 }
decode  = { kind = "deterministic", value = 100 }
""")
    c = capacity(net)
    single = capacity(regression_model("item2-resident-cap"))
    assert c.max_scale == pytest.approx(single.max_scale, rel=1e-6)        # the same resident row
    assert c.engines["e1"].binding == "resident_requests"
    rs = capacity(__import__("fluidllm").load_model("examples/networks/rybko_stolyar.toml"))
    assert rs.policy_max_scale is None and "Rybko" in rs.policy_note     # cyclic: no analytic policy value
    dag = capacity(__import__("fluidllm").load_model("examples/networks/dag.toml"))
    assert dag.policy_max_scale == pytest.approx(dag.max_scale)          # feed-forward, b0 | b_max
