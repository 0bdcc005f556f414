"""Tests of my_policy.py, as a user writes them: run `python -m pytest test_my_policy.py` here."""
from fluidllm.testing import check_invariants, check_matches, check_work_conserving

from my_policy import MyPolicy


def test_plans_obey_the_engine_rules():
    check_invariants(MyPolicy(), max_examples=100).assert_ok()
    check_invariants(MyPolicy(prefill_cap=4), max_examples=100).assert_ok()


def test_without_a_cap_it_is_work_conserving():
    report = check_work_conserving(MyPolicy(), max_examples=200)
    report.assert_ok()
    assert report.agrees_with_claim


def test_the_prefill_cap_breaks_work_conservation():
    report = check_work_conserving(MyPolicy(prefill_cap=4), max_examples=200)
    assert not report.work_conserving and report.agrees_with_claim
    ce = report.counterexample
    print(ce.text())                       # the minimal state and batch (pytest -s shows it)
    # The minimal state: prompts only, more prompt tokens than the cap, a budget above the cap.
    assert ce.batch_tokens == 4 < min(ce.budget_tokens, ce.demand_tokens)


def test_vectorized_rule_matches_the_plan():
    check_matches(MyPolicy(), max_examples=50).assert_ok()
    check_matches(MyPolicy(prefill_cap=4), max_examples=50).assert_ok()
