"""A policy's own capacity, beside the work-conserving bound: analytic where theory gives it,
otherwise the simulator's bracketed stability boundary.

* Work-conserving policies (orca, sarathi, kfcfs, vllm-v1) on the paper's model (token-count batch
  time, no k_max, resident or KV cap): Theorem 2 (Li, Dai, Peng) — under backlog every batch holds
  b_max tokens, so the capacity is b_max/t(b_max) per unit of token load: the work-conserving LP
  scale ``capacity(model).engines[e].work_conserving_max_scale``, which is below the best any
  policy could do (``max_scale``, μ*) when n/t(n) peaks before the budget; method ``analytic``.
* FasterTransformer (stylised and static), one workload: the renewal-reward rate of saturated
  request-level batching cycles (:mod:`fluidllm.capacity.static`); ``analytic`` (exact DP) or
  ``monte-carlo`` with its interval.
* Everything else (vanilla vLLM, caps, several workloads under FT): ``simulated`` — the bracket
  [load confirmed STABLE, load confirmed UNSTABLE] of the sequential search
  :func:`fluidllm.capacity.policy_search.policy_capacity_search` (the sign of the backlogged drift,
  common random numbers across loads, seeded by the LP bound; each confirmed verdict wrong with
  probability ≤ 0.5 %, width ≤ ``precision`` of the midpoint when met); the reported max_scale is
  its midpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import integer, require
from ..model.model import Model
from ..model.policy import PolicySpec
from .static import static_batching_rate, static_batching_rate_mc

__all__ = ["PolicyCapacity", "policy_capacity", "PolicyCapacityRow", "PolicyCapacityTable", "policy_capacity_table"]

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
        work_conserving_max_scale: what every work-conserving policy reaches (exactly on the paper's
            model, Theorem 2: b_max/t(b_max); an upper bound for them with caps).
        loss_ratio: 1 − max_scale / bound_max_scale (the loss against the best any policy could do).
        bound_max_scale: the best any policy could do (configuration LP over every batch, μ*).
        recommended_token_budget: the token budget at which a work-conserving policy reaches μ*
            (where b_max/t(b_max) < μ*), else None.
        detail: how it was obtained.
        boundary: for ``simulated``, the :class:`~fluidllm.capacity.policy_search.PolicySearchResult`
            (every load tried, its drift and verdict).
    """

    name: str
    engine: str
    max_scale: float
    method: str
    interval: tuple[float, float] | None
    work_conserving_max_scale: float
    loss_ratio: float
    detail: str
    boundary: Any = field(default=None, compare=False, repr=False)
    bound_max_scale: float = math.nan
    recommended_token_budget: int | None = None

    def to_dict(self) -> dict[str, Any]:
        f = lambda x: None if x is None or not math.isfinite(x) else float(x)  # noqa: E731
        return {"name": self.name, "engine": self.engine, "max_scale": f(self.max_scale), "method": self.method,
                "interval": None if self.interval is None else [f(self.interval[0]), f(self.interval[1])],
                "work_conserving_max_scale": f(self.work_conserving_max_scale), "loss_ratio": f(self.loss_ratio),
                "bound_max_scale": f(self.bound_max_scale), "recommended_token_budget": self.recommended_token_budget,
                "detail": self.detail}

    def line(self) -> str:
        iv = "" if self.interval is None else f" [{self.interval[0]:.4g}, {self.interval[1]:.4g}]"
        rec = ("" if self.recommended_token_budget is None else
               f"; token_budget = {self.recommended_token_budget} would let a work-conserving policy reach the best")
        return (f"policy {self.name}: max_scale {self.max_scale:.4g}{iv} ({self.method}; this policy's own capacity); "
                f"every work-conserving policy {self.work_conserving_max_scale:.4g}; best any policy "
                f"{self.bound_max_scale:.4g}; loss vs best {100 * self.loss_ratio:.1f} %{rec}  — {self.detail}")


def _boundary(m: Model, eng_name: str, wc_scale: float, *, replications: int, seed: int, points: int, rounds: int,
              horizon_s: float | None, workers: int, precision: float = 0.02, progress: bool = False,
              lower: float | None = None):
    """The simulated bracket: :func:`fluidllm.capacity.policy_search.policy_capacity_search` between
    ``lower`` (default 0) and ``wc_scale`` (the configuration-LP bound: Theorem 2(a), no policy is
    stable above it; the search warms up at 1.1 × it and may confirm instability up to there).

    ``replications`` is the fewest replications per load at a look; ``points``, ``rounds`` and
    ``horizon_s`` (the old grid search's effort) do not apply: the search sizes its window and
    replications from a pilot run to reach ``precision``.
    """
    from .policy_search import policy_capacity_search

    return policy_capacity_search(m, engine=eng_name, upper=wc_scale, lower=lower, precision=precision,
                                  replications=replications, seed=seed, workers=workers, progress=progress)


def _bracket(b: Any, wc_scale: float) -> tuple[float, float]:
    """(lo, hi) of a :class:`~fluidllm.capacity.policy_search.PolicySearchResult` (lo confirmed STABLE
    or the lower bound; hi confirmed UNSTABLE or ``wc_scale``, Theorem 2(a))."""
    return float(b.lo), float(b.hi)


def policy_capacity(model: Model, policy: str | PolicySpec | None = None, *, engine: str | None = None,
                    replications: int = 8, seed: int = 0, boundary_points: int = 8,
                    boundary_rounds: int = 2, horizon_s: float | None = None, workers: int = 1,
                    precision: float = 0.02, progress: bool = False) -> PolicyCapacity:
    """The capacity of ``policy`` (default: the engine's own) on one engine of ``model``.

    Analytic where theory gives it (see the module docstring); otherwise the simulator's bracket
    from :func:`fluidllm.capacity.policy_search.policy_capacity_search` below the best any policy
    could do (the LP bound), to a width of ``precision`` × its midpoint, with at least
    ``replications`` runs per load and ``workers`` processes; ``progress`` prints one line per
    simulation to stderr. ``boundary_points``, ``boundary_rounds`` and ``horizon_s`` are kept for
    callers of the former grid search and do not change the search.

    Raises:
        ModelError: an unknown engine or policy (named); bad counts or precision.
    """
    from ..sim.simulate import pick_engine
    from . import capacity

    eng, workloads = pick_engine(model, engine)
    spec = eng.policy if policy is None else (policy if isinstance(policy, PolicySpec) else PolicySpec(policy))
    m = model.with_engine(eng.name, policy=spec)
    cap = capacity(m)
    wc = cap.engines[eng.name]
    wc_scale = cap.max_scale                       # the best any policy could do: the search's ceiling
    wc_policy_scale = wc.work_conserving_max_scale
    lam = sum(w.arrival.rate_per_s for w in workloads)
    require(lam > 0, "load", lam, "must be positive: every arrival rate on the engine is 0")

    def result(scale: float, method: str, interval: tuple[float, float] | None, detail: str,
               boundary: Any = None) -> PolicyCapacity:
        loss = 1.0 - scale / wc_scale if wc_scale > 0 else math.nan
        loss = 0.0 if abs(loss) < 1e-9 else loss      # round-off of two LP solves, not a gain
        return PolicyCapacity(spec.label, eng.name, scale, method, interval, wc_policy_scale, loss, detail, boundary,
                              wc_scale, wc.recommended_token_budget)

    if spec.name in _WC and spec.work_conserving and wc.work_conserving_exact:
        return result(wc_policy_scale, "analytic", None,
                      f"work-conserving: Theorem 2, every batch under backlog holds b_max = {eng.token_budget} "
                      f"tokens: b_max/t(b_max) = {wc.work_conserving_token_rate_per_s:.6g} tokens/s "
                      f"(mu* = {wc.max_token_rate_per_s:.6g} at n = {wc.argmax_batch_tokens})")
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
    # Simulated: a sequential search with common random numbers on the backlogged drift, seeded by
    # the LP bound above (fluidllm.capacity.policy_search); the bracket is [lo confirmed STABLE,
    # hi confirmed UNSTABLE], each verdict wrong w.p. <= 0.5 %, width <= 2 % of the midpoint when met.
    b = _boundary(m, eng.name, wc_scale, replications=replications, seed=seed, points=boundary_points,
                  rounds=boundary_rounds, horizon_s=horizon_s, workers=workers, precision=precision,
                  progress=progress)
    lo, hi = _bracket(b, wc_scale)
    return result(0.5 * (lo + hi), "simulated", (lo, hi), b.detail(), b)


@dataclass(frozen=True)
class PolicyCapacityRow:
    """One policy in a :class:`PolicyCapacityTable`.

    Attributes:
        name: the policy; work_conserving: its declared class.
        analytic: the analytic (or Monte-Carlo) capacity, None where theory gives none.
        simulated: the simulator's bracket (lo, hi) on max_scale, None if not simulated.
        boundary: the full :class:`~fluidllm.capacity.policy_search.PolicySearchResult` (loads and verdicts).
        agrees: the analytic value (or its interval) meets the simulated bracket; None if either is missing.
    """

    name: str
    work_conserving: bool
    analytic: PolicyCapacity | None
    simulated: tuple[float, float] | None
    boundary: Any
    agrees: bool | None

    @property
    def max_scale(self) -> float:
        """The best estimate: the analytic value, else the bracket's midpoint."""
        if self.analytic is not None:
            return self.analytic.max_scale
        return 0.5 * (self.simulated[0] + self.simulated[1]) if self.simulated else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "work_conserving": self.work_conserving, "max_scale": _f(self.max_scale),
                "analytic": None if self.analytic is None else self.analytic.to_dict(),
                "simulated": None if self.simulated is None else [_f(self.simulated[0]), _f(self.simulated[1])],
                "boundary": None if self.boundary is None else self.boundary.to_dict(), "agrees": self.agrees}


def _f(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class PolicyCapacityTable:
    """Each policy's own capacity on one engine, analytic beside simulated (:func:`policy_capacity_table`).

    ``work_conserving_max_scale`` is the bound of Theorem 2 / the configuration LP; ``rate_per_s`` the
    model's total arrival rate on the engine (max_scale × rate_per_s = requests/s at the boundary).
    """

    engine: str
    work_conserving_max_scale: float
    rate_per_s: float
    rows: tuple[PolicyCapacityRow, ...]
    replications: int
    horizon_s: float | None
    seed: int

    def row(self, name: str) -> PolicyCapacityRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "work_conserving_max_scale": _f(self.work_conserving_max_scale),
                "rate_per_s": self.rate_per_s, "replications": self.replications, "horizon_s": self.horizon_s,
                "seed": self.seed, "rows": [r.to_dict() for r in self.rows]}

    def markdown(self) -> str:
        """A Markdown table: policy, class, analytic capacity, simulated bracket, agreement, loss."""
        wc = self.work_conserving_max_scale
        lines = ["| policy | work-conserving | analytic max_scale (method) | simulated bracket | agrees | "
                 "req/s at boundary | loss vs best any policy |", "|---|---|---|---|---|---:|---:|"]
        for r in self.rows:
            a = "—" if r.analytic is None else f"{r.analytic.max_scale:.4g} ({r.analytic.method}" + (
                "" if r.analytic.interval is None else
                f", [{r.analytic.interval[0]:.4g}, {r.analytic.interval[1]:.4g}]") + ")"
            s = "—" if r.simulated is None else f"[{r.simulated[0]:.4g}, {r.simulated[1]:.4g}]"
            ag = {True: "yes", False: "**NO**", None: "—"}[r.agrees]
            if r.analytic is None and r.simulated is not None:   # only a bracket: the loss is a range
                loss = (f"{100 * max(0.0, 1 - r.simulated[1] / wc):.0f}–"
                        f"{100 * max(0.0, 1 - r.simulated[0] / wc):.0f} %")
                rate = f"[{r.simulated[0] * self.rate_per_s:.4g}, {r.simulated[1] * self.rate_per_s:.4g}]"
            else:
                loss = f"{100 * (1 - r.max_scale / wc):.1f} %"
                rate = f"{r.max_scale * self.rate_per_s:.4g}"
            lines.append(f"| {r.name} | {'yes' if r.work_conserving else 'no'} | {a} | {s} | {ag} | {rate} | {loss} |")
        return "\n".join(lines)

    def table(self) -> str:
        """Plain-text form of :meth:`markdown`."""
        return self.markdown()


def policy_capacity_table(model: Model, policies: Sequence[str | PolicySpec] = (
        "fastertransformer", "fastertransformer-static", "vllm", "orca", "sarathi"), *, engine: str | None = None,
        replications: int = 8, seed: int = 0, horizon_s: float | None = None, workers: int = 1,
        simulate: bool = True, boundary_points: int = 8, boundary_rounds: int = 2,
        precision: float = 0.02) -> PolicyCapacityTable:
    """Each policy's capacity on one engine: analytic where theory gives it, and (``simulate``) the
    simulator's stability bracket for every policy — so each analytic value is checked against it.

    The bracket comes from :func:`fluidllm.capacity.policy_search.policy_capacity_search` below the
    LP bound (each confirmed verdict wrong with probability ≤ 0.5 %, width ≤ ``precision`` of its
    midpoint), so an analytic value outside it is either a wrong theory or a wrong simulator. For a work-conserving policy the bracket's top must not exceed
    ~the bound (Theorem 2(a)).

    Raises:
        ModelError: an unknown engine or policy (named), bad counts.
    """
    from ..sim.simulate import pick_engine
    from . import capacity

    eng, workloads = pick_engine(model, engine)
    require(len(policies) > 0, "policies", list(policies), "must name at least one policy")
    replications = integer(replications, "replications", minimum=2)
    wc_scale = capacity(model).max_scale
    lam = sum(w.arrival.rate_per_s for w in workloads)
    rows = []
    for p in policies:
        spec = p if isinstance(p, PolicySpec) else PolicySpec(p)
        m = model.with_engine(eng.name, policy=spec)
        pc = policy_capacity(m, spec, engine=eng.name, replications=replications, seed=seed, horizon_s=horizon_s,
                             boundary_points=boundary_points, boundary_rounds=boundary_rounds, workers=workers,
                             precision=precision)
        analytic = pc if pc.method != "simulated" else None
        b, sim = pc.boundary, pc.interval if analytic is None else None
        if simulate and analytic is not None:
            b = _boundary(m, eng.name, wc_scale, replications=replications, seed=seed, points=boundary_points,
                          rounds=boundary_rounds, horizon_s=horizon_s, workers=workers, precision=precision)
            sim = _bracket(b, wc_scale)
        agrees = None
        if analytic is not None and sim is not None:
            a_lo, a_hi = analytic.interval if analytic.interval is not None else (analytic.max_scale,) * 2
            agrees = bool(a_hi >= sim[0] and a_lo <= sim[1])
        rows.append(PolicyCapacityRow(spec.label, spec.work_conserving, analytic, sim, b, agrees))
    return PolicyCapacityTable(eng.name, wc_scale, lam, tuple(rows), replications, horizon_s, seed)
