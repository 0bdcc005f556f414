"""Result objects of capacity analyses: frozen, plottable, serialisable (``to_dict``, JSON)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from .configlp import ConfigLP
from .symbolic import SymbolicCapacity

__all__ = ["EngineCapacity", "WorkloadCapacity", "Capacity"]


def _num(x: float | None) -> float | None:
    """JSON-safe number: ``inf``/``nan`` become null (documented as unbounded)."""
    if x is None or not math.isfinite(x):
        return None
    return float(x)


@dataclass(frozen=True)
class EngineCapacity:
    """Capacity of one engine for the workloads sent to it: the best any policy could do beside
    what this engine's own policy reaches.

    ``max_token_rate_per_s`` is μ* (tokens/s), attained by batches of ``argmax_batch_tokens``;
    ``max_scale`` the factor by which this engine's arrival rates can grow under the BEST policy
    (configuration LP over every batch: an upper bound for every policy, Theorem 2(a));
    ``binding`` the limit that decides it: ``token_budget`` (the best batches fill b_max),
    ``batch_requests`` (k_max), ``resident_requests`` (R), ``kv_memory`` (M), or ``batch_time``
    (n/t(n) peaks below b_max).

    ``work_conserving_max_scale``: the same LP restricted to the batches a work-conserving policy
    runs under backlog (full batches, or batches at the per-batch request cap): every
    work-conserving policy's capacity, exactly (``work_conserving_exact``: Theorem 2(b), token-count
    batch time and no k_max, resident or KV cap) or as an upper bound (the caps it leaves to the
    simulator are in ``outer_bound_caps``). Its token rate is ``work_conserving_token_rate_per_s``
    (b_max/t(b_max) without caps). ``recommended_token_budget``: where b_max/t(b_max) < μ*, the
    token budget (the smallest n attaining μ*) at which a work-conserving policy reaches μ*.
    ``policy_max_scale``/``policy_method``: this engine's own policy — the work-conserving value for
    a work-conserving policy (``analytic`` when exact, ``upper bound`` otherwise), None for any
    other policy (its capacity needs the simulator: ``fluidllm capacity --policy``).
    """

    name: str
    token_budget: int
    max_batch_requests: int | None
    kv_capacity_tokens: int | None
    policy: str
    work_conserving: bool
    max_token_rate_per_s: float
    argmax_batch_tokens: int
    argmax_batch_ms: float
    offered_tokens_per_s: float
    max_scale: float
    binding: str
    binding_all: tuple[str, ...]
    duals: dict[str, float]
    support: tuple[dict[str, float], ...]
    work_conserving_max_scale: float = math.nan
    work_conserving_token_rate_per_s: float = math.nan
    work_conserving_exact: bool = False
    outer_bound_caps: tuple[str, ...] = ()
    recommended_token_budget: int | None = None
    policy_max_scale: float | None = None
    policy_method: str = "unknown"
    symbolic: SymbolicCapacity | None = field(default=None, repr=False)
    lp: ConfigLP | None = field(default=None, repr=False)
    work_conserving_lp: ConfigLP | None = field(default=None, repr=False)

    @property
    def utilisation(self) -> float:
        """Offered load as a fraction of the capacity along the current mix (1 / max_scale)."""
        return 0.0 if math.isinf(self.max_scale) else 1.0 / self.max_scale

    def to_dict(self) -> dict[str, Any]:
        return {
            "token_budget": self.token_budget, "max_batch_requests": self.max_batch_requests,
            "kv_capacity_tokens": self.kv_capacity_tokens, "policy": self.policy,
            "work_conserving": self.work_conserving,
            "max_token_rate_per_s": self.max_token_rate_per_s, "argmax_batch_tokens": self.argmax_batch_tokens,
            "argmax_batch_ms": self.argmax_batch_ms, "offered_tokens_per_s": self.offered_tokens_per_s,
            "max_scale": _num(self.max_scale), "utilisation": self.utilisation, "binding": self.binding,
            "binding_all": list(self.binding_all), "duals": self.duals, "support": list(self.support),
            "work_conserving_max_scale": _num(self.work_conserving_max_scale),
            "work_conserving_token_rate_per_s": _num(self.work_conserving_token_rate_per_s),
            "work_conserving_exact": self.work_conserving_exact, "outer_bound_caps": list(self.outer_bound_caps),
            "recommended_token_budget": self.recommended_token_budget,
            "policy_max_scale": _num(self.policy_max_scale), "policy_method": self.policy_method,
            "lp": None if self.lp is None else {"status": self.lp.status, "solver": self.lp.solver,
                                                 "columns": int(self.lp.configurations.shape[0]),
                                                 "columns_priced": self.lp.columns_priced},
            "symbolic": None if self.symbolic is None else self.symbolic.to_dict(),
        }


@dataclass(frozen=True)
class WorkloadCapacity:
    """One workload's rate now and at the boundary along its engine's current mix (requests/s)."""

    name: str
    engine: str
    rate_per_s: float
    max_rate_per_s: float | None
    mean_prefill_tokens: float
    mean_decode_tokens: float

    @property
    def max_token_rate_per_s(self) -> float | None:
        if self.max_rate_per_s is None:
            return None
        return self.max_rate_per_s * (self.mean_prefill_tokens + self.mean_decode_tokens)

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "rate_per_s": self.rate_per_s, "max_rate_per_s": _num(self.max_rate_per_s),
                "max_token_rate_per_s": _num(self.max_token_rate_per_s),
                "mean_prefill_tokens": self.mean_prefill_tokens, "mean_decode_tokens": self.mean_decode_tokens}


@dataclass(frozen=True)
class Capacity:
    """Capacity of a model: ``max_scale`` (every rate × max_scale stays inside the stability region;
    < 1 means overloaded), the bottleneck engine, and per-engine and per-workload results."""

    max_scale: float
    bottleneck: str | None
    engines: dict[str, EngineCapacity]
    workloads: dict[str, WorkloadCapacity]

    @property
    def position(self) -> str:
        """``inside``, ``boundary`` (|max_scale − 1| ≤ 1e-9: fluid-critical) or ``outside``."""
        if abs(self.max_scale - 1.0) <= 1e-9:
            return "boundary"
        return "inside" if self.max_scale > 1.0 else "outside"

    @property
    def stable(self) -> bool:
        """Whether the current rates lie strictly inside the (fluid) region."""
        return self.position == "inside"

    @property
    def policy_max_scale(self) -> float | None:
        """The model's own policies' capacity: min over engines of ``policy_max_scale`` (None if some
        engine's policy needs the simulator)."""
        vals = [e.policy_max_scale for e in self.engines.values()]
        if not vals or any(v is None for v in vals):
            return None
        return min(vals)  # type: ignore[type-var]

    @property
    def policy_method(self) -> str:
        """``analytic`` (every engine exact), ``upper bound`` (some engine's caps are only bounded) or
        the reason there is none."""
        ms = [e.policy_method for e in self.engines.values()]
        if self.policy_max_scale is None:
            return "simulated only (fluidllm capacity --policy)"
        return "analytic" if all(m == "analytic" for m in ms) else "upper bound"

    def to_dict(self) -> dict[str, Any]:
        return {"max_scale": _num(self.max_scale),
                "meaning": "max_scale: the best any policy could do (configuration LP, an upper bound for every "
                           "policy); policy_max_scale: what the model's own policies reach",
                "policy_max_scale": _num(self.policy_max_scale), "policy_method": self.policy_method,
                "stable": self.stable, "position": self.position, "bottleneck": self.bottleneck,
                "engines": {k: v.to_dict() for k, v in self.engines.items()},
                "workloads": {k: v.to_dict() for k, v in self.workloads.items()}}

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    def table(self) -> str:
        """A readable report (tokens/s, requests/s, binding constraint, maximising batch size)."""
        lines = []
        ms = "unbounded (no load)" if math.isinf(self.max_scale) else f"{self.max_scale:.6g}"
        verdict = {"inside": "inside the region", "boundary": "ON THE BOUNDARY of the region (fluid-critical)",
                   "outside": "OVERLOADED (outside the region)"}[self.position]
        lines.append(f"best any policy could do: max_scale {ms}: current rates are {verdict}" +
                     (f"; bottleneck engine {self.bottleneck}" if self.bottleneck else ""))
        ps = self.policy_max_scale
        if ps is None:
            lines.append("this model's policies: not analytic (a policy that is not work-conserving): "
                         "fluidllm capacity MODEL --policy NAME brackets it by simulation")
        else:
            pv = ("inside their capacity" if ps > 1 + 1e-9 else "AT their capacity" if ps >= 1 - 1e-9
                  else "OVERLOADED for these policies")
            what = ("exact, Theorem 2: work-conserving" if self.policy_method == "analytic"
                    else "upper bound: caps below are left to the simulator")
            lines.append(f"this model's policies reach: max_scale {ps:.6g} ({what}): current rates are {pv}")
        lines.append("")
        hdr = f"{'engine':<12} {'b_max':>6} {'k_max':>6} {'mu* tok/s':>11} {'argmax n':>8} {'t(n) ms':>9} " \
              f"{'offered tok/s':>13} {'util':>7} {'max_scale':>10} {'WC tok/s':>10} {'policy':>10}  binding"
        lines += [hdr, "-" * len(hdr)]
        for e in self.engines.values():
            k = "-" if e.max_batch_requests is None else str(e.max_batch_requests)
            s = "inf" if math.isinf(e.max_scale) else f"{e.max_scale:.5g}"
            p = "sim" if e.policy_max_scale is None else (
                "inf" if math.isinf(e.policy_max_scale) else f"{e.policy_max_scale:.5g}")
            lines.append(f"{e.name:<12} {e.token_budget:>6} {k:>6} {e.max_token_rate_per_s:>11.2f} "
                         f"{e.argmax_batch_tokens:>8} {e.argmax_batch_ms:>9.3f} {e.offered_tokens_per_s:>13.2f} "
                         f"{e.utilisation:>7.3f} {s:>10} {e.work_conserving_token_rate_per_s:>10.2f} {p:>10}  "
                         f"{e.binding}")
        lines.append("(max_scale: best any policy, an upper bound for all; WC tok/s: the token rate every "
                     "work-conserving policy keeps under backlog; policy: the engine's own policy "
                     f"{'/'.join(sorted({e.policy for e in self.engines.values()}))})")
        for e in self.engines.values():
            if e.recommended_token_budget is not None:
                lines.append(f"{e.name}: b_max/t(b_max) = {e.work_conserving_token_rate_per_s:.6g} tokens/s is below "
                             f"mu* = {e.max_token_rate_per_s:.6g} (n/t(n) peaks at n = {e.argmax_batch_tokens}): a "
                             f"work-conserving policy reaches mu* with token_budget = {e.recommended_token_budget}")
            for c in e.outer_bound_caps:
                lines.append(f"{e.name}: upper bound only for {c}")
        lines.append("")
        hdr = f"{'workload':<14} {'engine':<10} {'rate req/s':>10} {'max req/s':>11} {'m_p':>9} {'m_d':>9} {'max tok/s':>11}"
        lines += [hdr, "-" * len(hdr)]
        for w in self.workloads.values():
            mr = "-" if w.max_rate_per_s is None else f"{w.max_rate_per_s:.4f}"
            mt = "-" if w.max_token_rate_per_s is None else f"{w.max_token_rate_per_s:.2f}"
            lines.append(f"{w.name:<14} {w.engine:<10} {w.rate_per_s:>10.4f} {mr:>11} {w.mean_prefill_tokens:>9.2f} "
                         f"{w.mean_decode_tokens:>9.2f} {mt:>11}")
        for e in self.engines.values():
            if e.support:
                lines.append("")
                lines.append(f"{e.name}: optimal batch mix (configuration LP; duals {_fmt_duals(e.duals)})")
                for c in e.support[:6]:
                    lines.append(f"  {c['time_fraction']:.4f} of time in batches of {c['prefill_tokens']} prefill "
                                 f"+ {c['decode_tokens']} decode tokens ({c['batch_ms']:.3f} ms)")
            if e.symbolic is not None:
                lines.append(f"{e.name}: closed form mu*(b) = {e.symbolic.mu} tokens/ms"
                             f" = {e.symbolic.mu_value:.6g} (brute force {e.symbolic.brute_force:.6g})")
        return "\n".join(lines)


def _fmt_duals(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in d.items() if abs(v) > 1e-12) or "none"
