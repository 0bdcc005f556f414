"""Test your scheduling policy: the engine's rules, work conservation, vectorized = scalar.

For a plug-in policy (``name`` + ``plan(view)``, :mod:`fluidllm.policies.plugin`) — or any built-in
one — in a plain pytest file::

    from fluidllm.testing import check_invariants, check_work_conserving

    def test_rules():
        check_invariants(MyPolicy(), "model.toml").assert_ok()     # on my engine's states

    def test_work_conserving():
        assert check_work_conserving(MyPolicy()).work_conserving  # on every engine, up to real scale

Every check judges the policy on the states an engine can reach — an
:class:`~fluidllm.testing.envelope.Envelope`: a model's engine (its budget, caps, KV limit and length
laws; a limit it does not have is never shown), or :data:`DEFAULT_ENVELOPE` — searching the
envelope's small corner exhaustively, structured extreme states (hundreds of decoders, b_max ± 1, a
huge prompt, a waiting queue of hundreds, ...) and hypothesis states (derandomised from ``seed``, no
example database); a failing state is shrunk to a minimal one and returned in a frozen report
(``report.counterexample.text()``: the state and the batch, readable), a pass says what it rests on
(``report.search``). :func:`brute_force` lists every reachable state of a small envelope: the oracle
the search agrees with. The strategies are in :mod:`fluidllm.testing.strategies`, reachability in
:mod:`fluidllm.testing.envelope`. ``check_policy`` (behind ``fluidllm check-policy``) adds the
policy's capacity on a model beside the work-conserving bound.

Needs hypothesis (the ``test`` extra: ``pip install 'fluidllm[test]'``); does not import pytest.
"""
from __future__ import annotations

from . import _hypothesis  # noqa: F401  (a clear ImportError without hypothesis)
from . import strategies
from .brute import BruteForceReport, brute_force, enumerate_states, small_envelope
from .checks import (DEFAULT_MAX_EXAMPLES, CheckReport, Counterexample, InvariantsReport, MatchReport, SearchStats,
                     WorkConservingReport, as_policy, check_invariants, check_matches, check_work_conserving)
from .envelope import DEFAULT_ENVELOPE, Envelope, RequestClass, Support, envelope_for, structured_states, unreachable
from .report import CheckPolicyResult, check_policy

__all__ = ["check_invariants", "check_work_conserving", "check_matches", "check_policy", "as_policy",
           "brute_force", "enumerate_states", "small_envelope", "envelope_for", "structured_states", "unreachable",
           "Envelope", "RequestClass", "Support", "DEFAULT_ENVELOPE", "DEFAULT_MAX_EXAMPLES",
           "CheckReport", "InvariantsReport", "WorkConservingReport", "MatchReport", "Counterexample", "SearchStats",
           "BruteForceReport", "CheckPolicyResult", "strategies"]
