"""Simulation of LLM engines.

* :mod:`fluidllm.sim.draws` — the random draws of one replication (:func:`draw_requests`), shared
  by every simulator so that they can be compared on the same requests.
* :mod:`fluidllm.sim.reference` — the plain, one-replication oracle simulator
  (:func:`simulate_reference`, :func:`run_reference`).
* :mod:`fluidllm.sim.core` — the vectorized core (R replications in lock-step, any backend);
  :mod:`fluidllm.sim.source` its arrival sources, :mod:`fluidllm.sim.backend` the array backends.
* :mod:`fluidllm.sim.simulate` — :func:`simulate` (-> :class:`SimResult`, :mod:`fluidllm.sim.result`).
* :mod:`fluidllm.sim.verdict` and :mod:`fluidllm.sim.stability` — the stability verdict,
  :func:`stability` and the vectorized boundary search :func:`stability_boundary`.
"""
from .backend import available_backends, get_backend
from .core import run_core
from .draws import Requests, draw_requests
from .reference import (REFERENCE_POLICIES, Batch, Plan, PlanViolation, ReferenceRun, RequestView, View,
                        check_plan, plan_batch, run_reference, simulate_reference)

from .result import SimResult
from .simulate import simulate
from .source import FixedSource, StreamSource
from .stability import BoundaryResult, StabilityResult, stability, stability_boundary
from .verdict import Verdict, backlog_verdict, recommended_horizon_ms

__all__ = [
    "available_backends", "get_backend", "run_core", "SimResult", "simulate", "FixedSource", "StreamSource",
    "BoundaryResult", "StabilityResult", "stability", "stability_boundary", "Verdict", "backlog_verdict",
    "recommended_horizon_ms",
    "Requests", "draw_requests", "REFERENCE_POLICIES", "Batch", "Plan", "PlanViolation", "ReferenceRun",
    "RequestView", "View", "check_plan", "plan_batch", "run_reference", "simulate_reference",
]
