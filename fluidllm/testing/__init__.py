"""Test your scheduling policy: the engine's rules, work conservation, vectorized = scalar.

For a plug-in policy (``name`` + ``plan(view)``, :mod:`fluidllm.policies.plugin`) — or any built-in
one — in a plain pytest file::

    from fluidllm.testing import check_invariants, check_work_conserving

    def test_rules():
        check_invariants(MyPolicy()).assert_ok()

    def test_work_conserving():
        assert check_work_conserving(MyPolicy()).work_conserving

Every check searches engine states with hypothesis (derandomised from ``seed``, no example
database), shrinks a failing state to a minimal one and returns a frozen report with it
(``report.counterexample.text()``: the state and the batch, readable). The strategies themselves
are in :mod:`fluidllm.testing.strategies`. ``check_policy`` (behind ``fluidllm check-policy``) adds
the policy's capacity on a model beside the work-conserving bound.

Needs hypothesis (the ``test`` extra: ``pip install 'fluidllm[test]'``); does not import pytest.
"""
from __future__ import annotations

from . import _hypothesis  # noqa: F401  (a clear ImportError without hypothesis)
from . import strategies
from .checks import (CheckReport, Counterexample, InvariantsReport, MatchReport, WorkConservingReport, as_policy,
                     check_invariants, check_matches, check_work_conserving)
from .report import CheckPolicyResult, check_policy

__all__ = ["check_invariants", "check_work_conserving", "check_matches", "check_policy", "as_policy",
           "CheckReport", "InvariantsReport", "WorkConservingReport", "MatchReport", "Counterexample",
           "CheckPolicyResult", "strategies"]
