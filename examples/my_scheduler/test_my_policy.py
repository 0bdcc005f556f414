"""Tests of my_policy.py, as a user writes them: run `python -m pytest test_my_policy.py` here.

Each check judges the policy on the states an engine can reach: given the model file, those of its
engine (b_max 512, no caps, no KV limit, 129-token prompts); without one, those of every engine
fluidllm models (KV limits and per-batch caps included, budgets up to 4096, thousands of requests).
"""
from pathlib import Path

from fluidllm.testing import check_invariants, check_matches, check_work_conserving

from my_policy import MyPolicy

MODEL = Path(__file__).with_name("model.toml")


def test_plans_obey_the_engine_rules():
    check_invariants(MyPolicy(), max_examples=100).assert_ok()            # on every engine
    check_invariants(MyPolicy(prefill_cap=4), MODEL, max_examples=100).assert_ok()   # on mine


def test_without_a_cap_it_is_work_conserving():
    report = check_work_conserving(MyPolicy(), MODEL, max_examples=200)
    report.assert_ok()
    assert report.agrees_with_claim
    print(report.summary())                # what the YES rests on: states, sizes, families searched


def test_the_prefill_cap_breaks_work_conservation():
    report = check_work_conserving(MyPolicy(prefill_cap=4), MODEL, max_examples=200)
    assert not report.work_conserving and report.agrees_with_claim
    ce = report.counterexample
    print(ce.text())                       # the minimal state and batch (pytest -s shows it)
    # The minimal state on this engine: one 129-token prompt alone; the batch stops at the cap.
    assert [r.prefill_left for r in ce.view.requests] == [129]
    assert ce.batch_tokens == 4 < min(ce.budget_tokens, ce.demand_tokens)


def test_vectorized_rule_matches_the_plan():
    check_matches(MyPolicy(), max_examples=50).assert_ok()
    check_matches(MyPolicy(prefill_cap=4), max_examples=50).assert_ok()
