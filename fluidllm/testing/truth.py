"""The truth harness: every capacity claim checked against the simulator on random models.

For a model, :func:`check_model` compares what :func:`fluidllm.capacity` claims with what the
simulator does under overload and near the boundary:

* ``mu_star``: no policy serves more useful tokens per second (served − recomputed) than μ*, the best
  token rate of any feasible batch (Li, Dai, Peng arXiv 2504.07347, Thm 2(a)); every policy.
* ``work_conserving_rate``: a work-conserving policy under backlog runs only the batches of the
  work-conserving LP (full batches, or batches at the per-batch request cap), so its saturated
  useful token rate is at most ``work_conserving_token_rate_per_s``; and, where the claim is exact
  (token-count batch time, no k_max, resident or KV cap: Thm 2(b)), equal to b_max/t(b_max).
* ``resident_requests``: with a resident cap and one workload, completions per second under
  overload (admission is FCFS and residents are few, so completions are not biased to short
  requests) are at most the claimed ``policy_max_scale`` × λ (the Little's-law row).
* ``support_feasible``: every batch of the LP's optimal mix can be formed under the engine's caps
  (d + q ≤ min(k_max, R), d ≤ the KV decode cap, p + d ≤ b_max): a mix that the caps forbid means
  a cap was left out of the LP.
* ``verdicts`` (optional, costlier): for an exact work-conserving claim s*, the stability verdict at
  ``0.8 s*`` must not be UNSTABLE and at ``1.25 s*`` must not be STABLE.

The saturated rate is measured by common random numbers: the same seed run to H/2 and to H gives
the tokens served in (H/2, H] (the first half is warm-up from empty, when small batches can be more
efficient than full ones), over replications. The tolerance (default 3 %) covers that estimate.

:func:`random_model` draws models over every batch-time family (constant, affine, piecewise-linear,
staircase, table, two-feature), token budgets, caps (k_max, resident, KV), length laws
(deterministic, geometric, Poisson, uniform, lognormal) and policies. :data:`REGRESSION_CASES` are the
configurations of issue 16 that gave confident wrong answers (kept so that they stay caught).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import integer, require
from ..model.batchtime import Affine, Constant, PiecewiseLinear, Staircase, Table, TwoFeature
from ..model.engine import Engine
from ..model.lengths import Deterministic, Geometric, Independent, Lognormal, Poisson, Uniform
from ..model.model import Model
from ..model.arrivals import PoissonArrival
from ..model.policy import PolicySpec
from ..model.workload import Workload

__all__ = ["TruthCheck", "TruthRow", "check_model", "support_violations", "random_model", "REGRESSION_CASES", "regression_model",
           "TRUTH_POLICIES"]

#: policies the harness draws from (work-conserving and not).
TRUTH_POLICIES = ("sarathi", "orca", "kfcfs", "vllm-v1", "vllm", "fastertransformer")


@dataclass(frozen=True)
class TruthCheck:
    """One comparison: ``claim`` (what capacity says) against ``measured`` (the simulator) under
    ``relation`` (``<=`` or ``==`` within ``tolerance``, relative); ``ok`` whether it holds."""

    name: str
    claim: float
    measured: float
    relation: str
    tolerance: float
    ok: bool
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        f = lambda x: float(x) if math.isfinite(x) else None  # noqa: E731
        return {"name": self.name, "claim": f(self.claim), "measured": f(self.measured), "relation": self.relation,
                "tolerance": self.tolerance, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class TruthRow:
    """Every check of one model (:func:`check_model`); ``ok`` when all hold."""

    label: str
    policy: str
    work_conserving: bool
    exact: bool
    checks: tuple[TruthCheck, ...]
    model: Model = field(repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> tuple[TruthCheck, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "policy": self.policy, "work_conserving": self.work_conserving,
                "exact": self.exact, "ok": self.ok, "checks": [c.to_dict() for c in self.checks]}


def support_violations(engine: Engine, support: Sequence[dict[str, Any]], decode_context: float = 0.0) -> list[str]:
    """The columns of an LP mix (``EngineCapacity.support``) that ``engine``'s caps forbid, described."""
    from ..capacity.configlp import decode_cap, touch_cap

    cap, dcap = touch_cap(engine), decode_cap(engine, decode_context)
    bad = []
    for c in support:
        p, d = int(c["prefill_tokens"]), int(c["decode_tokens"])
        q = int(c.get("prefill_requests", int(p > 0)))
        q = min(q, 1) if p > 0 else 0            # the fewest prefill requests that carry p tokens
        why = []
        if p + d > engine.token_budget:
            why.append(f"{p + d} tokens > token_budget {engine.token_budget}")
        if cap is not None and d + q > cap:
            why.append(f"{d + q} requests > per-batch cap {cap}")
        if dcap is not None and d > dcap:
            why.append(f"{d} decoders > KV decode cap {dcap}")
        if why:
            bad.append(f"({p} prefill, {d} decode): " + "; ".join(why))
    return bad


def _check(name: str, claim: float, measured: float, relation: str, tol: float, detail: str = "") -> TruthCheck:
    if relation == "<=":
        ok = measured <= claim * (1 + tol) + 1e-9
    else:
        ok = abs(measured - claim) <= tol * max(abs(claim), 1e-12)
    return TruthCheck(name, float(claim), float(measured), relation, tol, bool(ok), detail)


def _saturated(model: Model, load: float, horizon_ms: float, replications: int, seed: int) -> tuple[float, float]:
    """(useful tokens/s, completions/s) in (H/2, H] at ``load``, by common random numbers."""
    from ..sim.simulate import simulate

    out = []
    for h in (horizon_ms / 2.0, horizon_ms):
        r = simulate(model, replications=replications, horizon_s=h / 1000.0, seed=seed, load=load, grid_points=24)
        useful = r.prefill_tokens_served + r.decode_tokens_served - r.recomputed_tokens
        out.append((useful.astype(float), r.completed.astype(float), r.end_ms.astype(float)))
    (u1, c1, e1), (u2, c2, e2) = out
    dt = (e2 - e1) / 1000.0
    return float(np.mean((u2 - u1) / dt)), float(np.mean((c2 - c1) / dt))


def _horizon_ms(engine: Engine, batches: int) -> float:
    t_full = float(np.asarray(engine.batch_time.batch_ms(engine.token_budget, 0, 0)))
    return batches * t_full


def check_model(model: Model, *, label: str = "", seed: int = 0, replications: int = 2, batches: int = 3000,
                tolerance: float = 0.03, overload: float = 1.3, verdicts: bool = False,
                claim_policy_max_scale: float | None = None) -> TruthRow:
    """Check :func:`fluidllm.capacity`'s claims for the one engine of ``model`` against simulation
    (module docstring). ``batches``: the horizon in full-batch times; ``overload``: the load, as a
    multiple of the best any policy could do, used for the saturated rates. ``claim_policy_max_scale``
    replaces the claimed capacity of the engine's policy (to show that a wrong claim is caught).

    Raises:
        ModelError: a model with other than one engine and at least one loaded workload; bad counts.
    """
    from ..capacity import capacity

    require(len(model.engines) == 1, "model.engines", sorted(model.engines), "must hold exactly one engine")
    replications = integer(replications, "replications", minimum=1)
    batches = integer(batches, "batches", minimum=100)
    (name, eng), = model.engines.items()
    wls = model.workloads_on(name)
    lam = sum(w.arrival.rate_per_s for w in wls)
    require(lam > 0, "workloads", [w.name for w in wls], "must offer a positive arrival rate")
    cap = capacity(model)
    ec = cap.engines[name]
    offered = ec.offered_tokens_per_s
    H = _horizon_ms(eng, batches)
    load = overload * ec.max_scale
    tok, done = _saturated(model, load, H, replications, seed)
    wc = eng.policy.work_conserving
    claim = ec.policy_max_scale if claim_policy_max_scale is None else claim_policy_max_scale
    exact = wc and ec.work_conserving_exact and claim_policy_max_scale is None
    checks = [_check("mu_star", ec.max_token_rate_per_s, tok, "<=", tolerance,
                     "useful tokens/s under overload <= mu* (any policy)")]
    from ..capacity import engine_demand

    bad = support_violations(eng, ec.support, engine_demand(eng, wls).decode_context)
    checks.append(TruthCheck("support_feasible", 0.0, float(len(bad)), "== 0", 0.0, not bad, "; ".join(bad)))
    if wc:
        if claim_policy_max_scale is not None:       # a claimed capacity, read as a token rate along the mix
            rel = "==" if ec.work_conserving_exact else "<="
            checks.append(_check("work_conserving_rate", claim * offered, tok, rel, tolerance,
                                 "claimed capacity x offered tokens/s vs the saturated token rate"))
        else:
            rel = "==" if exact else "<="
            checks.append(_check("work_conserving_rate", ec.work_conserving_token_rate_per_s, tok, rel, tolerance,
                                 "b_max/t(b_max) (exact) or the best work-conserving batch (bound)"))
    if eng.max_resident_requests is not None and len(wls) == 1 and claim is not None:
        checks.append(_check("resident_requests", claim * lam, done, "<=", tolerance,
                             "completions/s under overload <= claimed capacity (req/s)"))
    if verdicts and exact and claim is not None and math.isfinite(claim):
        from ..sim.stability import stability

        lo = stability(model, load=0.8 * claim, replications=8, seed=seed)
        hi = stability(model, load=1.25 * claim, replications=8, seed=seed)
        checks.append(TruthCheck("verdict_below", 0.8 * claim, 0.8 * claim, "not UNSTABLE", 0.0,
                                 lo.verdict != "UNSTABLE", f"{lo.verdict}: {lo.reason}"))
        checks.append(TruthCheck("verdict_above", 1.25 * claim, 1.25 * claim, "not STABLE", 0.0,
                                 hi.verdict != "STABLE", f"{hi.verdict}: {hi.reason}"))
    return TruthRow(label or name, eng.policy.label, wc, bool(exact), tuple(checks), model)


# ----------------------------------------------------------------------------------- random models


def _batch_time(rng: np.random.Generator, family: str, b: int):
    c = float(rng.uniform(5, 30))
    a = float(rng.uniform(0.02, 0.5))
    if family == "constant":
        return Constant(c)
    if family == "affine":
        return Affine(c, a)
    if family == "piecewise-linear":
        return PiecewiseLinear(c, a, int(rng.integers(1, b + 1)))
    if family == "staircase":
        return Staircase(c, float(rng.uniform(5, 30)), int(rng.integers(1, b + 1)))
    if family == "table":
        n = np.unique(np.r_[1, np.sort(rng.integers(2, b + 1, size=4)), b])
        t = c + np.cumsum(rng.uniform(0, 2.0, size=n.size)) + a * n
        return Table(n, t)
    return TwoFeature(c, a, int(rng.integers(0, b + 1)), decode_ms=float(rng.uniform(0, 0.05)),
                      kv_ms=float(rng.uniform(0, 1e-4)))


def _law(rng: np.random.Generator, kind: str, mean: float, low: int):
    if kind == "deterministic":
        return Deterministic(max(low, int(round(mean))))
    if kind == "geometric":
        return Geometric(max(float(low), mean), min=low)
    if kind == "poisson":
        return Poisson(max(float(low), mean), min=low)
    if kind == "uniform":
        return Uniform(low, max(low + 1, int(2 * mean) - low))
    return Lognormal(max(float(low) + 1.0, mean), 0.6)


FAMILIES = ("constant", "affine", "piecewise-linear", "staircase", "table", "two-feature")
LAWS = ("deterministic", "geometric", "poisson", "uniform", "lognormal")


def random_model(rng: np.random.Generator | int, *, policy: str | None = None, family: str | None = None,
                 caps: bool | None = None) -> Model:
    """A random one-engine model (module docstring): budget 16–256, batch time of a random family,
    optional k_max / resident / KV caps (``caps``: force them on or off), one or two workloads with
    random length laws; arrival rates at half the best any policy could do.

    Raises:
        ModelError: an unknown ``policy`` or ``family``.
    """
    from ..capacity import capacity

    rng = np.random.default_rng(rng)
    fam = family or str(rng.choice(FAMILIES))
    require(fam in FAMILIES, "family", fam, f"must be one of {list(FAMILIES)}")
    b = int(rng.integers(16, 257))
    bt = _batch_time(rng, fam, b)
    use_caps = bool(rng.random() < 0.5) if caps is None else caps
    kmax = resident = kv = None
    if use_caps:
        which = rng.integers(0, 3)
        if which == 0:
            kmax = int(rng.integers(2, b + 1))
        elif which == 1:
            resident = int(rng.integers(2, 64))
        else:
            kv = int(rng.integers(4 * b, 40 * b))
    pol = policy or str(rng.choice(TRUTH_POLICIES))
    eng = Engine("e", b, bt, max_batch_requests=kmax, max_resident_requests=resident, kv_capacity_tokens=kv,
                 policy=PolicySpec(pol))
    wls = {}
    for i in range(int(rng.integers(1, 3))):
        mp = float(rng.uniform(1, min(60, b)))
        md = float(rng.uniform(0, 40))
        pk, dk = str(rng.choice(LAWS)), str(rng.choice(LAWS))
        lp = _law(rng, pk, mp, 1)
        ld = _law(rng, dk, md, 0) if md >= 1 else Deterministic(int(rng.integers(0, 2)))
        if pol in ("vllm", "fastertransformer") and lp.max_value > b:   # whole prompts must fit
            lp = Uniform(1, b)
        wls[f"w{i}"] = Workload(f"w{i}", PoissonArrival(1.0), Independent(lp, ld), engine="e")
    m = Model({"e": eng}, wls)
    s = capacity(m).max_scale
    return m.scaled(0.5 * s) if math.isfinite(s) and s > 0 else m


# ------------------------------------------------------------------------------- regression cases

#: issue 16's confident wrong answers, as (label, TOML text).
REGRESSION_CASES: dict[str, str] = {
    "item1-knee-below-budget": """
[engines.gpu]
token_budget = 2048
policy = "sarathi"
batch_time = { preset = "llama-2-7b-a100" }
[workloads.w]
arrival = { kind = "poisson", rate_per_s = 75 }
prefill = { kind = "deterministic", value = 100 }
decode  = { kind = "deterministic", value = 100 }
""",
    "item1-staircase-b0-not-dividing": """
[engines.gpu]
token_budget = 200
policy = "sarathi"
batch_time = { preset = "codellama-34b-a100" }
[workloads.w]
arrival = { kind = "poisson", rate_per_s = 5 }
prefill = { kind = "deterministic", value = 100 }
decode  = { kind = "deterministic", value = 100 }
""",
    "item2-resident-cap": """
[engines.gpu]
token_budget = 512
max_resident_requests = 8
policy = "sarathi"
batch_time = { preset = "codellama-34b-a100" }
[workloads.w]
arrival = { kind = "poisson", rate_per_s = 1 }
prefill = { kind = "deterministic", value = 100 }
decode  = { kind = "deterministic", value = 100 }
""",
}


def regression_model(label: str) -> Model:
    """The model of one :data:`REGRESSION_CASES` entry.

    Raises:
        ModelError: an unknown label.
    """
    from ..model.io import loads_model

    require(label in REGRESSION_CASES, "label", label, f"must be one of {sorted(REGRESSION_CASES)}")
    return loads_model(REGRESSION_CASES[label])  # type: ignore[return-value]


def check_many(models: Sequence[tuple[str, Model]], **kw: Any) -> list[TruthRow]:
    """:func:`check_model` over ``(label, model)`` pairs."""
    return [check_model(m, label=lab, **kw) for lab, m in models]
