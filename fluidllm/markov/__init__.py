"""Exact discrete-time Markov chains of one engine at batch epochs, for small instances.

:func:`build_chain` builds the chain (model: :mod:`fluidllm.markov.chain`), :func:`solve` its
stationary law and figures, :func:`drift_certificate` and :func:`instability_witness` check
Foster–Lyapunov drift state by state (:mod:`fluidllm.markov.drift`).
"""
from .chain import (MARKOV_POLICIES, Chain, ChainResult, GeometricDecode, bernoulli_arrivals, build_chain,
                    poisson_arrivals, solve, stationary)
from .drift import DriftCertificate, InstabilityWitness, drift, drift_certificate, instability_witness

__all__ = ["MARKOV_POLICIES", "Chain", "ChainResult", "GeometricDecode", "bernoulli_arrivals", "build_chain",
           "poisson_arrivals", "solve", "stationary", "DriftCertificate", "InstabilityWitness", "drift",
           "drift_certificate", "instability_witness"]
