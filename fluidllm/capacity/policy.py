"""A policy's own capacity, beside the work-conserving bound: analytic where theory gives it,
otherwise the simulator's bracketed stability boundary.

* Work-conserving policies (orca, sarathi, kfcfs, vllm-v1) on the paper's model (token-count batch
  time, no k_max, resident or KV cap): Theorem 2 (Li, Dai, Peng) — the configuration-LP scale
  ``capacity(model).max_scale``; method ``analytic``.
* FasterTransformer (stylised and static), one workload: the renewal-reward rate of saturated
  request-level batching cycles (:mod:`fluidllm.capacity.static`); ``analytic`` (exact DP) or
  ``monte-carlo`` with its interval.
* Everything else (vanilla vLLM, caps, several workloads under FT): ``simulated`` — the bracket
  [largest STABLE load, smallest UNSTABLE load] of :func:`fluidllm.stability_boundary`; the reported
  max_scale is its midpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import require
from ..model.model import Model
from ..model.policy import PolicySpec
from .static import static_batching_rate, static_batching_rate_mc

__all__ = ["PolicyCapacity", "policy_capacity"]

_WC = ("orca", "sarathi", "kfcfs", "vllm-v1")
_STATIC = ("fastertransformer", "fastertransformer-static")


@dataclass(frozen=True)
class PolicyCapacity:
    """A policy's maximum stable load as a multiple of the model's current arrival rates.

    Attributes:
        name: the policy; engine: the engine.
        max_scale: the policy's capacity (multiple of the current rates).
        method: ``analytic``, ``monte-carlo`` or ``simulated``.
        interval: (lo, hi) on max_scale (Monte-Carlo 95 % interval or the simulated bracket); None if exact.
        work_conserving_max_scale: the bound every work-conserving policy reaches (Theorem 2 / the LP).
        loss_ratio: 1 − max_scale / work_conserving_max_scale.
        detail: how it was obtained.
    """

    name: str
    engine: str
    max_scale: float
    method: str
    interval: tuple[float, float] | None
    work_conserving_max_scale: float
    loss_ratio: float
    detail: str

    def to_dict(self) -> dict[str, Any]:
        f = lambda x: None if x is None or not math.isfinite(x) else float(x)  # noqa: E731
        return {"name": self.name, "engine": self.engine, "max_scale": f(self.max_scale), "method": self.method,
                "interval": None if self.interval is None else [f(self.interval[0]), f(self.interval[1])],
                "work_conserving_max_scale": f(self.work_conserving_max_scale), "loss_ratio": f(self.loss_ratio),
                "detail": self.detail}

    def line(self) -> str:
        iv = "" if self.interval is None else f" [{self.interval[0]:.4g}, {self.interval[1]:.4g}]"
        return (f"policy {self.name}: max_scale {self.max_scale:.4g}{iv} ({self.method}); work-conserving bound "
                f"{self.work_conserving_max_scale:.4g}; loss {100 * self.loss_ratio:.1f} %  — {self.detail}")


def policy_capacity(model: Model, policy: str | PolicySpec | None = None, *, engine: str | None = None,
                    replications: int = 8, seed: int = 0, boundary_points: int = 8,
                    boundary_rounds: int = 2) -> PolicyCapacity:
    """The capacity of ``policy`` (default: the engine's own) on one engine of ``model``.

    Raises:
        ModelError: an unknown engine or policy (named).
    """
    from ..sim.simulate import pick_engine
    from ..sim.stability import stability_boundary
    from . import capacity

    eng, workloads = pick_engine(model, engine)
    spec = eng.policy if policy is None else (policy if isinstance(policy, PolicySpec) else PolicySpec(policy))
    m = model.with_engine(eng.name, policy=spec)
    wc = capacity(m).engines[eng.name]
    wc_scale = capacity(m).max_scale
    paper = (eng.batch_time.tokens_only and eng.max_resident_requests is None and eng.kv_capacity_tokens is None)
    lam = sum(w.arrival.rate_per_s for w in workloads)
    require(lam > 0, "load", lam, "must be positive: every arrival rate on the engine is 0")

    def result(scale: float, method: str, interval: tuple[float, float] | None, detail: str) -> PolicyCapacity:
        return PolicyCapacity(spec.name, eng.name, scale, method, interval, wc_scale,
                              1.0 - scale / wc_scale if wc_scale > 0 else math.nan, detail)

    if spec.name in _WC and paper and eng.max_batch_requests is None:
        return result(wc_scale, "analytic", None,
                      f"work-conserving: Theorem 2, mu* = {wc.max_token_rate_per_s:.6g} tokens/s")
    if spec.name in _STATIC and len(workloads) == 1 and eng.kv_capacity_tokens is None and \
            eng.max_resident_requests is None and not spec.flag("split_long_prompts"):
        L = workloads[0].lengths
        try:
            r = static_batching_rate(eng, L)
        except Exception:           # not independent or not a token-count batch time
            r = static_batching_rate_mc(eng, L, seed=seed)
        iv = None if r.interval is None else (r.interval[0] / lam, r.interval[1] / lam)
        meth = "analytic" if r.method == "exact" else "monte-carlo"
        return result(r.rate_per_s / lam, meth, iv,
                      f"renewal-reward over saturated cycles: E[G] = {r.mean_group:.4g} requests per "
                      f"{r.mean_cycle_ms:.6g} ms cycle, {r.rate_per_s:.6g} req/s"
                      + (f"; {100 * r.unschedulable_fraction:.3g} % of prompts never fit" if r.unschedulable_fraction else ""))
    b = stability_boundary(m, lo=0.05 * wc_scale, hi=1.2 * wc_scale, points=boundary_points,
                           rounds=boundary_rounds, replications=replications, seed=seed, engine=eng.name)
    lo = b.stable_load if b.stable_load is not None else 0.0
    hi = b.unstable_load if b.unstable_load is not None else math.inf
    mid = 0.5 * (lo + hi) if math.isfinite(hi) else lo
    return result(mid, "simulated", (lo, hi),
                  f"stability boundary of the simulator ({boundary_rounds} rounds x {boundary_points} loads x "
                  f"{replications} replications, horizon {b.horizon_s:g} s)")
