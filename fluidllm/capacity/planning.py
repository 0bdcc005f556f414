"""Trace-driven capacity planning: the fewest engines of one GPU profile for a trace at a rate scale.

:func:`plan_engines` answers "how many engines of this kind does this traffic need?". The traffic is
a request trace (its offered rate λ = rate_scale × the trace's rate (n − 1)/span, its length law
the trace's empirical (v_p, v_d) pairs, or laws fitted by :func:`fluidllm.model.fit_lengths.fit_trace`)
or a :class:`~fluidllm.model.workload.Workload`. The engines form one replica set behind a JSQ
router (a one-call workflow, ``engine = ["e0", ..., "e{K-1}"]``, ``routing = "jsq-tokens"``) and the
capacity of K of them is the static planning LP of :func:`fluidllm.capacity.network.network_capacity`
on that network: K engines sustain θ_K λ, θ_K its ``max_scale``. The plan is the smallest K with

    λ ≤ U · θ_K λ,  i.e.  θ_K ≥ 1/U          (U = ``utilisation``, default 0.8),

so at K − 1 the offered rate exceeds U times the capacity. For identical engines under JSQ,
Li, Dai, Peng (arXiv 2504.07347 v3, Prop. 3) give θ_K λ = K μ*/(m_p + m_d) for token-count batch
times (μ* = max_n n/t(n), tokens/ms) and the LP is linear in K in general (each engine's polytope
is the same); the search starts from K = ⌈1/(U θ_1)⌉ and checks the LP at K and K − 1.

The plan uses the capacity the engine's POLICY reaches, never μ* unless the policy reaches it.
For a work-conserving policy each engine is limited to the batches such a policy runs under
backlog (``network_capacity(columns="work-conserving")``): full batches, so each engine serves
b_max/t(b_max) tokens/ms — below μ* when n/t(n) peaks before the budget (a piecewise-linear knee
b0 < b_max) — and Prop. 3 says JSQ over work-conserving engines reaches K b_max/t(b_max)/(m_p + m_d).
With k_max, a resident or KV cap that value is an upper bound (``outer_bound_caps``). For a policy
that is not work-conserving (``fastertransformer``, ``vllm``, a ``chunk_size`` flag) the plan can
only use the best any policy could do (μ*), an upper bound for it, and says so
(``policy_work_conserving``, ``basis``).

:func:`confirm_plan` checks the plan by simulation: the vectorized network core
(:func:`fluidllm.sim.network_core.run_network_core`, all replications advanced together; the reference
:func:`fluidllm.sim.network_reference.simulate_network_reference` for engines the core does not run,
with the same numbers) runs the K-engine replica set and the (K − 1)-engine one, replaying the trace
at the scaled rate with each request's own lengths (:class:`fluidllm.model.trace_replay.TraceReplay`;
replication r starts at a random row of the trace, so the R paths differ; the core gets each
replication's replay as its own model). The verdict is :func:`fluidllm.sim.verdict.backlog_verdict`
on the network token backlog, the test of :func:`fluidllm.sim.network_stability.network_stability`,
over six replay cycles by default (:data:`CONFIRM_CYCLES`), so that each of its six windows holds
one whole period of the looped trace. A workload source with a random arrival process goes to
``network_stability`` itself. Expected: STABLE at K (load U or less); at K − 1 UNSTABLE when its
load λ/(θ_{K−1} λ) exceeds 1, STABLE when it is only above U.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError, finite_number, integer, require
from ..model.arrivals import Arrival, PoissonArrival
from ..model.engine import Engine
from ..model.lengths import Independent, JointLengths
from ..model.network import Call, NetworkModel, Workflow
from ..model.policy import PolicySpec
from ..model.traces import DATASETS, Trace, load_trace
from ..model.workload import Workload
from .network import NetworkCapacity, network_capacity
from .rate import max_token_rate

__all__ = ["PlanResult", "ConfirmResult", "ConfirmRow", "plan_engines", "confirm_plan", "replica_set_model",
           "load_engine", "LENGTHS"]

LENGTHS = ("empirical", "fitted")
_ROUTING = ("jsq-tokens", "jsq-requests")
_TOL = 1e-9          # relative slack of θ_K ≥ 1/U: the LP is exact to ~1e-12, so equality counts as met
WORKFLOW, CALL = "trace", "req"


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------

def load_engine(engine: Engine | str | Path | None = None, *, preset: str | None = None, token_budget: int = 512,
                policy: str | PolicySpec | None = None, name: str | None = None) -> Engine:
    """The engine profile: an :class:`Engine`, a TOML file with ``[engines.NAME]`` tables (``name``
    picks one when there are several), or a batch-time ``preset`` with ``token_budget``; ``policy``
    replaces its policy.

    Raises:
        ModelError: neither or both of engine and preset, a missing or bad file, an unknown engine
            name or preset, a bad policy.
    """
    require((engine is None) != (preset is None), "engine", engine, "give an engine (Engine or TOML file) or a preset, "
            "not both and not neither")
    if preset is not None:
        from ..presets import get_preset

        eng = Engine(name or "gpu", token_budget, get_preset(preset, "preset"))
    elif isinstance(engine, Engine):
        eng = engine
    else:
        from ..model.io import load_model

        m = load_model(engine)
        names = list(m.engines)
        if name is None:
            require(len(names) == 1, "engine", str(engine), f"holds engines {names}: name one of them")
            name = names[0]
        require(name in m.engines, "engine name", name, f"must be one of {names}")
        eng = m.engines[name]
    if policy is not None:
        eng = dataclasses.replace(eng, policy=policy if isinstance(policy, PolicySpec) else PolicySpec(policy))
    return eng


def _source(source: Trace | Workload | str | Path) -> tuple[Trace | None, Workload | None]:
    if isinstance(source, Trace):
        return source, None
    if isinstance(source, Workload):
        return None, source
    if isinstance(source, (str, Path)):
        if isinstance(source, str) and source in DATASETS and not Path(source).exists():
            return load_trace(dataset=source), None
        return load_trace(source), None
    raise ModelError("source", type(source).__name__, "must be a Trace, a Workload, a trace file or a dataset name "
                     f"({sorted(DATASETS)})")


def _fitted(trace: Trace, criterion: str) -> tuple[JointLengths, dict[str, Any]]:
    from ..model.fit_lengths import fit_trace

    f = fit_trace(trace.prefill, trace.decode, criterion)
    pl, dl = f.prefill.fit(f.prefill.best).law, f.decode.fit(f.decode.best).law
    info = {"prefill": {"best": f.prefill.best, **pl.to_dict()}, "decode": {"best": f.decode.best, **dl.to_dict()},
            "criterion": criterion, "spearman": f.spearman, "spearman_p": f.spearman_p}
    return Independent(pl, dl), info


def replica_set_model(engine: Engine, k: int, arrival: Arrival, lengths: JointLengths,
                      routing: str = "jsq-tokens") -> NetworkModel:
    """K copies ``e0..e{K-1}`` of ``engine`` behind one router: a one-call workflow ``trace.req``.

    Raises:
        ModelError: k < 1, a bad routing rule.
    """
    k = integer(k, "engines", minimum=1)
    engs = {f"e{i}": dataclasses.replace(engine, name=f"e{i}") for i in range(k)}
    call = Call(CALL, tuple(engs), lengths, routing=routing if k > 1 else None)
    return NetworkModel(engs, {WORKFLOW: Workflow(WORKFLOW, arrival, (call,))})


# --------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class PlanResult:
    """The fewest engines K for the offered load at ``utilisation`` (:func:`plan_engines`).

    Rates in requests/s and tokens/s. ``capacity_*``: what K engines sustain (θ_K λ) and its share
    per engine; ``load_per_engine``: λ / (θ_K λ) = 1/θ_K, each engine's load under the LP split
    (≤ ``utilisation``); ``load_at_k_minus_1``: 1/θ_{K−1} (> ``utilisation``; > 1 means K − 1 engines
    are over capacity; None at K = 1). ``max_token_rate_per_s``, ``argmax_batch_tokens``: μ* of one
    engine. ``binding``: the limit that binds on a saturated engine (token_budget, batch_requests,
    kv_memory, batch_time). ``closed_form_requests_per_s``: K μ*/(m_p + m_d) (Prop. 3) where the
    batch time counts tokens only and there is no k_max or KV cap, else None. ``lengths``: the law
    used (kind, means, and the fits for ``fitted``). ``searched``: every (K, θ_K) the LP was solved at.
    ``model``: the K-engine replica set at the offered rate; ``network``: its LP result.
    """

    engines_needed: int
    engine: Engine
    routing: str
    utilisation: float
    rate_scale: float
    offered_rate_per_s: float
    offered_tokens_per_s: float
    mean_prefill: float
    mean_decode: float
    capacity_requests_per_s: float
    capacity_tokens_per_s: float
    capacity_per_engine_requests_per_s: float
    capacity_per_engine_tokens_per_s: float
    load_per_engine: float
    load_at_k_minus_1: float | None
    max_token_rate_per_s: float
    argmax_batch_tokens: int
    binding: str
    binding_all: tuple[str, ...]
    closed_form_requests_per_s: float | None
    policy: str
    policy_work_conserving: bool
    work_conserving_token_rate_per_s: float
    recommended_token_budget: int | None
    basis: str
    lengths: dict[str, Any]
    source: dict[str, Any]
    searched: tuple[tuple[int, float], ...]
    model: NetworkModel = field(repr=False)
    network: NetworkCapacity = field(repr=False)
    trace: Trace | None = field(repr=False, default=None)
    workload: Workload | None = field(repr=False, default=None)

    @property
    def lengths_law(self) -> JointLengths:
        return self.model.workflows[WORKFLOW].calls[0].lengths

    def to_dict(self) -> dict[str, Any]:
        e = self.engine
        eng = {"name": e.name, "token_budget": e.token_budget, "max_batch_requests": e.max_batch_requests,
               "kv_capacity_tokens": e.kv_capacity_tokens, "batch_time": e.batch_time.to_dict(),
               "policy": self.policy, "work_conserving": self.policy_work_conserving}
        return {"engines_needed": self.engines_needed, "engine": eng, "routing": self.routing,
                "utilisation": self.utilisation, "rate_scale": self.rate_scale,
                "offered_rate_per_s": self.offered_rate_per_s, "offered_tokens_per_s": self.offered_tokens_per_s,
                "mean_prefill": self.mean_prefill, "mean_decode": self.mean_decode,
                "capacity_requests_per_s": self.capacity_requests_per_s,
                "capacity_tokens_per_s": self.capacity_tokens_per_s,
                "capacity_per_engine_requests_per_s": self.capacity_per_engine_requests_per_s,
                "capacity_per_engine_tokens_per_s": self.capacity_per_engine_tokens_per_s,
                "load_per_engine": self.load_per_engine, "load_at_k_minus_1": _num(self.load_at_k_minus_1),
                "max_token_rate_per_s": self.max_token_rate_per_s, "argmax_batch_tokens": self.argmax_batch_tokens,
                "binding": self.binding, "binding_all": list(self.binding_all),
                "closed_form_requests_per_s": _num(self.closed_form_requests_per_s),
                "work_conserving_token_rate_per_s": _num(self.work_conserving_token_rate_per_s),
                "recommended_token_budget": self.recommended_token_budget, "basis": self.basis,
                "lengths": self.lengths, "source": self.source,
                "searched": [{"engines": k, "max_scale": _num(t)} for k, t in self.searched]}

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    def table(self) -> str:
        km1 = ("n/a (K = 1)" if self.load_at_k_minus_1 is None else
               f"{self.load_at_k_minus_1:.4g}" + (" (over capacity)" if self.load_at_k_minus_1 > 1 else ""))
        lines = [
            f"plan: {self.engines_needed} x engine '{self.engine.name}' (b_max {self.engine.token_budget}, "
            f"{self.policy}, {self.routing}) at utilisation <= {self.utilisation:g}",
            f"offered: {self.offered_rate_per_s:.6g} req/s = {self.offered_tokens_per_s:.6g} tokens/s "
            f"(rate scale {self.rate_scale:g}; m_p {self.mean_prefill:.5g}, m_d {self.mean_decode:.5g}; "
            f"lengths {self.lengths['kind']})",
            f"per engine: capacity {self.capacity_per_engine_requests_per_s:.6g} req/s = "
            f"{self.capacity_per_engine_tokens_per_s:.6g} tokens/s ({self.basis}; work-conserving b_max/t(b_max) "
            f"{self.work_conserving_token_rate_per_s:.6g} tokens/s, mu* {self.max_token_rate_per_s:.6g} tokens/s at "
            f"{self.argmax_batch_tokens} tokens); binding: {self.binding}",
            f"load per engine at K = {self.engines_needed}: {self.load_per_engine:.4g}; at K - 1: {km1}",
            f"capacity of K engines: {self.capacity_requests_per_s:.6g} req/s"
            + (f" (Prop. 3 closed form {self.closed_form_requests_per_s:.6g})"
               if self.closed_form_requests_per_s is not None else ""),
        ]
        if not self.policy_work_conserving:
            lines.append(f"note: {self.policy} is not work-conserving: the LP capacity is only an upper bound for it")
        if self.recommended_token_budget is not None:
            lines.append(f"note: token_budget = {self.recommended_token_budget} (where n/t(n) peaks) would let a "
                         f"work-conserving policy reach mu* per engine")
        return "\n".join(lines)


def plan_columns(engine: Engine) -> str:
    """The LP column set a plan for ``engine`` uses: ``"work-conserving"`` for a work-conserving
    policy (what it reaches), else ``"any"`` (the best any policy could do: an upper bound)."""
    return "work-conserving" if engine.policy.work_conserving else "any"


def plan_engines(source: Trace | Workload | str | Path, engine: Engine | str | Path | None = None, *,
                 preset: str | None = None, token_budget: int = 512, utilisation: float = 0.8,
                 rate_scale: float = 1.0, policy: str | PolicySpec | None = None, lengths: str = "empirical",
                 criterion: str = "bic", routing: str = "jsq-tokens", max_engines: int = 100_000,
                 solver: str | None = None, engine_name: str | None = None) -> PlanResult:
    """Fewest engines K of one profile with offered rate ≤ ``utilisation`` × the LP capacity of K (module text).

    ``source``: a trace (:class:`Trace`, a file, or a vendored dataset name) or a :class:`Workload`.
    ``engine``/``preset``/``token_budget``/``policy``/``engine_name``: see :func:`load_engine`. ``rate_scale``
    multiplies the offered rate (the trace's speedup). ``lengths``: ``"empirical"`` (the trace's
    pairs) or ``"fitted"`` (independent prefill and decode laws, best by ``criterion``); a workload
    keeps its own.

    Raises:
        ModelError: bad arguments (named), a source with zero rate or zero tokens, an engine whose
            capacity is zero, K above ``max_engines``, LP failure.
    """
    U = finite_number(utilisation, "utilisation", minimum=0, strict=True)
    require(U <= 1, "utilisation", U, "must be in (0, 1]")
    scale = finite_number(rate_scale, "rate_scale", minimum=0, strict=True)
    require(routing in _ROUTING, "routing", routing, f"must be one of {list(_ROUTING)} (the rules Prop. 3 covers)")
    require(lengths in LENGTHS, "lengths", lengths, f"must be one of {list(LENGTHS)}")
    kmax = integer(max_engines, "max_engines", minimum=1)
    eng = load_engine(engine, preset=preset, token_budget=token_budget, policy=policy, name=engine_name)
    trace, wl = _source(source)
    if trace is not None:
        require(len(trace) >= 2 and trace.arrival_ms[-1] > trace.arrival_ms[0], "source", f"<{len(trace)} requests>",
                "a trace needs at least 2 requests over a positive span to give a rate")
        lam = trace.rate_per_s * scale
        arrival: Arrival = PoissonArrival(lam)        # the LP reads only the rate
        if lengths == "empirical":
            law: JointLengths = trace.lengths()
            info: dict[str, Any] = {"kind": "empirical", "requests": len(trace)}
        else:
            law, fits = _fitted(trace, criterion)
            info = {"kind": "fitted", **fits}
        src = {**dict(trace.source), "requests": len(trace), "span_s": float(trace.arrival_ms[-1]) / 1000.0,
               "rate_per_s": trace.rate_per_s}
    else:
        assert wl is not None
        arrival = wl.arrival.scaled(scale)
        lam = arrival.rate_per_s
        law = wl.lengths
        info = {"kind": "workload", "law": wl.lengths.kind}
        src = {"workload": wl.name, "arrival": wl.arrival.kind, "rate_per_s": wl.arrival.rate_per_s}
    mp, md = law.mean_prefill, law.mean_decode
    info.update(mean_prefill=mp, mean_decode=md)
    require(lam > 0 and mp + md > 0, "source", src, "must offer a positive rate of requests with tokens")

    searched: dict[int, tuple[float, NetworkCapacity]] = {}

    cols = plan_columns(eng)

    def theta(k: int) -> float:
        if k not in searched:
            nc = network_capacity(replica_set_model(eng, k, arrival, law, routing).class_network(), solver=solver,
                                  columns=cols)
            searched[k] = (float(nc.max_scale), nc)
        return searched[k][0]

    def ok(k: int) -> bool:
        return theta(k) * U >= 1.0 - _TOL

    t1 = theta(1)
    if not t1 > 0:
        raise ModelError("engine", eng.name, f"has zero capacity for this workload (LP max_scale {t1})")
    k = max(1, math.ceil((1.0 - _TOL) / (U * t1)))
    require(k <= kmax, "max_engines", kmax, f"is too few: the load needs about {k} engines")
    while not ok(k):
        k += 1
        require(k <= kmax, "max_engines", kmax, f"is too few: {k - 1} engines are not enough")
    while k > 1 and ok(k - 1):
        k -= 1
    th_k, nc = theta(k), searched[k][1]
    th_m1 = theta(k - 1) if k > 1 else None
    mu = max_token_rate(eng.batch_time, eng.token_budget) if eng.batch_time.tokens_only else None
    if mu is not None:
        mu_s, arg = mu.tokens_per_s, int(mu.argmax_tokens)
    else:
        first = next(iter(nc.engines.values()))
        mu_s, arg = first.max_token_rate_per_s, first.argmax_batch_tokens
    b = eng.token_budget
    wc_rate = (b / float(np.asarray(eng.batch_time.tokens_ms(b))) * 1000.0 if eng.batch_time.tokens_only
               else next(iter(nc.engines.values())).max_token_rate_per_s)
    no_caps = (mu is not None and eng.max_batch_requests is None and eng.max_resident_requests is None
               and eng.kv_capacity_tokens is None)
    # Prop. 3: K work-conserving engines behind JSQ sustain K b_max/t(b_max)/(m_p + m_d)
    closed = k * wc_rate / (mp + md) if no_caps and cols == "work-conserving" else None
    recommend = (int(arg) if no_caps and wc_rate < mu_s * (1 - 1e-9) and arg < b else None)
    if cols == "work-conserving":
        basis = ("work-conserving policy capacity (Thm 2, exact)" if no_caps else
                 "work-conserving policy capacity (upper bound with the engine's caps)")
    else:
        basis = f"best any policy could do (upper bound: {eng.policy.label} is not work-conserving)"
    sat = [nc.engines[b] for b in nc.bottlenecks] or list(nc.engines.values())
    cap = th_k * lam
    model = replica_set_model(eng, k, arrival, law, routing)
    return PlanResult(
        engines_needed=k, engine=eng, routing=routing, utilisation=U, rate_scale=scale, offered_rate_per_s=lam,
        offered_tokens_per_s=lam * (mp + md), mean_prefill=mp, mean_decode=md, capacity_requests_per_s=cap,
        capacity_tokens_per_s=cap * (mp + md), capacity_per_engine_requests_per_s=cap / k,
        capacity_per_engine_tokens_per_s=cap * (mp + md) / k, load_per_engine=1.0 / th_k,
        load_at_k_minus_1=None if th_m1 is None else (math.inf if th_m1 == 0 else 1.0 / th_m1),
        max_token_rate_per_s=float(mu_s), argmax_batch_tokens=arg, binding=sat[0].binding,
        binding_all=tuple(sat[0].binding_all), closed_form_requests_per_s=closed, policy=eng.policy.label,
        policy_work_conserving=bool(eng.policy.work_conserving), work_conserving_token_rate_per_s=float(wc_rate),
        recommended_token_budget=recommend, basis=basis, lengths=info, source=src,
        searched=tuple(sorted((kk, v[0]) for kk, v in searched.items())), model=model, network=nc,
        trace=trace, workload=wl)


# --------------------------------------------------------------------------------------------------
# Confirmation by simulation
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConfirmRow:
    """The simulated verdict for one engine count: ``load`` = offered / LP capacity of ``engines``;
    ``expected`` = STABLE below 1, UNSTABLE above; ``agrees``: the verdict is the expected one."""

    engines: int
    load: float
    expected: str
    verdict: str
    slope_tokens_per_s: float
    slope_interval: tuple[float, float]
    offered_tokens_per_s: float
    horizon_s: float
    replications: int
    starts: tuple[int, ...]
    reason: str
    simulator: str = "reference"

    @property
    def agrees(self) -> bool:
        return self.verdict == self.expected

    def to_dict(self) -> dict[str, Any]:
        return {"engines": self.engines, "load": _num(self.load), "expected": self.expected, "verdict": self.verdict,
                "agrees": self.agrees, "slope_tokens_per_s": _num(self.slope_tokens_per_s),
                "slope_interval": [_num(x) for x in self.slope_interval],
                "offered_tokens_per_s": self.offered_tokens_per_s, "horizon_s": self.horizon_s,
                "replications": self.replications, "starts": list(self.starts), "reason": self.reason,
                "simulator": self.simulator}


@dataclass(frozen=True)
class ConfirmResult:
    """:func:`confirm_plan`: the rows at K and K − 1 (none at K − 1 when K = 1) and the test used."""

    at_k: ConfirmRow
    at_k_minus_1: ConfirmRow | None
    replay: str
    test: str
    seed: int

    @property
    def confirmed(self) -> bool:
        """STABLE at K, and at K − 1 the expected verdict (UNSTABLE when over capacity)."""
        return self.at_k.verdict == "STABLE" and (self.at_k_minus_1 is None or self.at_k_minus_1.agrees)

    def to_dict(self) -> dict[str, Any]:
        return {"confirmed": self.confirmed, "at_k": self.at_k.to_dict(),
                "at_k_minus_1": None if self.at_k_minus_1 is None else self.at_k_minus_1.to_dict(),
                "replay": self.replay, "test": self.test, "seed": self.seed}

    def table(self) -> str:
        out = []
        for r in (self.at_k, self.at_k_minus_1):
            if r is None:
                continue
            lo, hi = r.slope_interval
            out.append(f"K = {r.engines:<4} load {r.load:7.4f}  expected {r.expected:<8} simulated {r.verdict:<12} "
                       f"slope {r.slope_tokens_per_s:10.4g} tokens/s [{lo:.4g}, {hi:.4g}]  "
                       f"({r.horizon_s:g} s x {r.replications}, {r.simulator})")
        out.append(f"confirmed: {'yes' if self.confirmed else 'NO'} ({self.replay})")
        return "\n".join(out)


#: Default ``confirm_plan`` horizon for a trace, in replay cycles. The replay is periodic (the trace looped)
#: and the backlog test compares six equal windows, so six cycles give each window exactly one whole
#: period: the trace's own rate swings (bursts, idle stretches) cancel out of every window-to-window
#: comparison, as they would not in windows covering different parts of the trace.
CONFIRM_CYCLES = 6


def confirm_seed(seed: int, k: int) -> int:
    """The simulation seed of engine count ``k``: replication r runs with ``default_rng([confirm_seed(seed, k), r])``."""
    return int(np.random.SeedSequence([int(seed), int(k)]).generate_state(1)[0])


def _row_trace(plan: PlanResult, k: int, horizon_ms: float | None, R: int, seed: int, alpha: float,
               tolerance: float, extensions: int, simulator: str, workers: int) -> tuple[ConfirmRow, str]:
    from ..model.trace_replay import TraceReplay, replay_for_horizon
    from ..sim.network_stability import GRID_POINTS, choose_simulator, run_core_blocks, run_reference_backlogs
    from ..sim.verdict import backlog_verdict

    tr = plan.trace
    assert tr is not None
    base = replica_set_model(plan.engine, k, PoissonArrival(plan.offered_rate_per_s), plan.lengths_law, plan.routing)
    sim = choose_simulator(base, simulator)
    H = horizon_ms if horizon_ms is not None else CONFIRM_CYCLES * TraceReplay(tr, plan.rate_scale).cycle_ms
    starts = tuple(int(s) for s in np.random.default_rng([seed, k]).integers(0, len(tr), R))
    sk = confirm_seed(seed, k)
    for attempt in range(extensions + 1):
        grid = H * np.arange(GRID_POINTS) / GRID_POINTS
        models, offered = [], 0.0
        for s in starts:
            rep = replay_for_horizon(tr, plan.rate_scale, H, start=s)
            law = rep.lengths() if plan.lengths["kind"] == "empirical" else plan.lengths_law
            models.append(replica_set_model(plan.engine, k, rep.arrival(), law, plan.routing))
            offered += rep.rate_per_s * (law.mean_prefill + law.mean_decode) / R
        if sim == "core":
            blocks = run_core_blocks(models[0], H, sk, R, GRID_POINTS, workers, replication_models=models)
            back = np.concatenate([b.backlog_tokens for b in blocks]).astype(float)
        else:
            back = run_reference_backlogs(models, H, sk, grid, workers)
        v = backlog_verdict(grid, back, offered_tokens_per_s=offered, alpha=alpha, tolerance=tolerance)
        if v.verdict != "INCONCLUSIVE" or attempt == extensions:
            break
        H *= 2                        # as network_stability: a longer run, same replays
    return _row(plan, k, v.verdict, v.slope_tokens_per_s, tuple(v.slope_interval), offered, H / 1000.0, R,
                starts, v.reason, sim), v.test


def _row(plan: PlanResult, k: int, verdict: str, slope: float, iv: tuple[float, float], offered: float, h_s: float,
         R: int, starts: tuple[int, ...], reason: str, simulator: str) -> ConfirmRow:
    th = next(t for kk, t in plan.searched if kk == k) if any(kk == k for kk, _ in plan.searched) else None
    if th is None:
        nc = network_capacity(replica_set_model(plan.engine, k, PoissonArrival(plan.offered_rate_per_s),
                                                plan.lengths_law, plan.routing).class_network(),
                              columns=plan_columns(plan.engine))
        th = float(nc.max_scale)
    load = math.inf if th == 0 else 1.0 / th
    return ConfirmRow(k, load, "STABLE" if load < 1 else "UNSTABLE", verdict, float(slope),
                      (float(iv[0]), float(iv[1])), float(offered), float(h_s), R, starts, reason, simulator)


def confirm_plan(plan: PlanResult, horizon_s: float | None = None, replications: int = 16, seed: int = 0, *,
                 alpha: float = 0.01, tolerance: float = 0.02, extensions: int = 1, simulator: str = "auto",
                 workers: int = 1) -> ConfirmResult:
    """Simulate the plan's replica set at K and at K − 1 engines (module text) and give each a verdict.

    ``horizon_s``: simulated seconds per replication. For a trace the default is
    :data:`CONFIRM_CYCLES` (6) cycles of the replay (6 × span / rate_scale), so each of the backlog
    test's six windows covers one whole period of the looped trace; a horizon that is not a multiple
    of six cycles compares windows holding different parts of the trace. For a workload source the
    default is :func:`fluidllm.sim.network_stability.network_horizon_ms`. ``replications`` ≥ 2;
    replication r of engine count k replays from row ``default_rng([seed, k]).integers(0, n, R)[r]``
    and simulates with ``default_rng([confirm_seed(seed, k), r])``. ``simulator``: ``auto`` (the
    vectorized network core where it runs the engine, else the reference), ``core`` or
    ``reference``; both give the same numbers. ``workers`` > 1 splits the replications over that
    many processes (same numbers).

    Raises:
        ModelError: bad arguments (named).
    """
    from ..sim.network_stability import SIMULATORS, network_stability

    require(isinstance(plan, PlanResult), "plan", plan, "must be a PlanResult from plan_engines")
    R = integer(replications, "replications", minimum=2)
    seed = integer(seed, "seed", minimum=0)
    ext = integer(extensions, "extensions", minimum=0)
    W = integer(workers, "workers", minimum=1)
    require(simulator in SIMULATORS, "simulator", simulator, f"must be one of {list(SIMULATORS)}")
    H = None if horizon_s is None else finite_number(horizon_s, "horizon_s", minimum=0, strict=True) * 1000.0
    ks = [plan.engines_needed] + ([plan.engines_needed - 1] if plan.engines_needed > 1 else [])
    rows: list[ConfirmRow] = []
    test = ""
    if plan.trace is not None:
        replay = (f"trace replay at speedup {plan.rate_scale:g} with each request's own lengths"
                  if plan.lengths["kind"] == "empirical" else
                  f"trace arrivals at speedup {plan.rate_scale:g}, lengths drawn from the fitted laws")
        for k in ks:
            row, test = _row_trace(plan, k, H, R, seed, alpha, tolerance, ext, simulator, W)
            rows.append(row)
    else:
        assert plan.workload is not None
        replay = f"workload arrivals ({plan.workload.arrival.kind}) scaled by {plan.rate_scale:g}"
        arrival = plan.workload.arrival.scaled(plan.rate_scale)
        for k in ks:
            m = replica_set_model(plan.engine, k, arrival, plan.lengths_law, plan.routing)
            s = network_stability(m, replications=R, horizon_s=horizon_s, seed=confirm_seed(seed, k), alpha=alpha,
                                  tolerance=tolerance, extensions=ext, simulator=simulator, workers=W)
            test = s.test
            rows.append(_row(plan, k, s.verdict, s.slope_tokens_per_s, s.slope_interval, s.offered_tokens_per_s,
                             s.horizons_s[-1], R, (), s.reason, s.simulator))
    return ConfirmResult(rows[0], rows[1] if len(rows) > 1 else None, replay, test, seed)
