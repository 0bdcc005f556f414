"""Exact discrete-time Markov chains of one engine at batch epochs, for small instances.

:func:`build_chain` builds the chain (model: :mod:`fluidllm.markov.chain`), :func:`solve` its
stationary law and figures, :func:`drift_certificate` and :func:`instability_witness` prove
positive recurrence or instability of the *untruncated* chain (Foster–Lyapunov; level-independent
drift beyond a finite set; a transience criterion) or say "truncated, not a proof"
(:mod:`fluidllm.markov.drift`).
"""
from .chain import (MARKOV_POLICIES, Chain, ChainResult, GeometricDecode, bernoulli_arrivals, build_chain,
                    poisson_arrivals, solve, stationary)
from .drift import (TOKENS_LEFT, DriftCertificate, InstabilityWitness, drift, drift_certificate, instability_witness,
                    untruncated_drift)

__all__ = ["MARKOV_POLICIES", "Chain", "ChainResult", "GeometricDecode", "bernoulli_arrivals", "build_chain",
           "poisson_arrivals", "solve", "stationary", "DriftCertificate", "InstabilityWitness", "drift",
           "drift_certificate", "instability_witness", "untruncated_drift", "TOKENS_LEFT"]
