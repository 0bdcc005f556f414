"""Simulation of LLM engines.

* :mod:`fluidllm.sim.draws` — the random draws of one replication (:func:`draw_requests`), shared
  by every simulator so that they can be compared on the same requests.
* :mod:`fluidllm.sim.reference` — the plain, one-replication oracle simulator
  (:func:`simulate_reference`, :func:`run_reference`).
"""
from .draws import Requests, draw_requests
from .reference import (REFERENCE_POLICIES, Batch, Plan, PlanViolation, ReferenceRun, RequestView, View,
                        check_plan, plan_batch, run_reference, simulate_reference)

__all__ = [
    "Requests", "draw_requests", "REFERENCE_POLICIES", "Batch", "Plan", "PlanViolation", "ReferenceRun",
    "RequestView", "View", "check_plan", "plan_batch", "run_reference", "simulate_reference",
]
