"""Capacity (stability) regions: closed forms, sympy conditions, the configuration LP.

``capacity(model)`` answers "what load can this setup sustain": for each engine μ* (tokens/s) with
its maximising batch size, the largest factor ``max_scale`` by which the current arrival rates can
grow and stay inside the fluid stability region (configuration LP with token budget, k_max and KV
memory), the binding limit, dual values, and the closed form where the batch time has one.
"""
from __future__ import annotations

from typing import Any

import math

from .._stdio import silence_solver_banner
from ..errors import ModelError
from ..model.engine import Engine
from ..model.model import Model
from ..model.workload import Workload
from .configlp import ConfigLP, Demand, decode_cap, extreme_configurations, solve_config_lp
from .rate import TokenRate, max_token_rate, max_token_rate_mixed, token_rate_curve
from .region import TokenRegion, token_region
from .result import Capacity, EngineCapacity, WorkloadCapacity
from .symbolic import SymbolicCapacity, symbolic_capacity, symbolic_max_token_rate

__all__ = ["capacity", "engine_capacity", "demand_of", "engine_demand", "outer_bound_caps", "Capacity", "EngineCapacity", "WorkloadCapacity",
           "ConfigLP", "Demand", "solve_config_lp", "extreme_configurations", "TokenRate", "max_token_rate",
           "token_rate_curve", "TokenRegion", "token_region", "SymbolicCapacity", "symbolic_capacity",
           "symbolic_max_token_rate"]

_PARAMETRIC = ("constant", "affine", "piecewise-linear", "staircase")

silence_solver_banner()   # HiGHS prints a banner into fd 1 on its first use: never into a user's output


def demand_of(workloads: list[Workload], *, per_request: bool = False, kv: bool = True,
              resident_budget: int | None = None) -> Demand:
    """The LP demand of ``workloads`` at their current rates (or at 1 request/s each if
    ``per_request``): prefill and decode tokens/ms, requests/ms, KV token-batches/ms, mean
    decode KV context κ (tokens), and (with ``resident_budget`` = the engine's token budget b)
    resident slot-batches/ms λ E[⌈v_p/b⌉ + v_d] for a resident cap."""
    lp = ld = lr = lg = ctx = lres = 0.0
    for w in workloads:
        lam = (1.0 if per_request else w.arrival.rate_per_s) / 1000.0
        L = w.lengths
        lp += lam * L.mean_prefill
        ld += lam * L.mean_decode
        lr += lam
        if kv:
            lg += lam * L.mean_kv_token_batches
        if resident_budget is not None and lam > 0:
            lres += lam * L.mean_resident_batches(resident_budget)
        ctx += lam * L.mean_decode * L.mean_decode_context
    return Demand(lp, ld, lr, lg, ctx / ld if ld > 0 else 0.0, lres)


def engine_demand(engine: Engine, workloads: list[Workload], *, per_request: bool = False) -> Demand:
    """:func:`demand_of` with the rows ``engine`` needs (KV memory, resident cap)."""
    return demand_of(workloads, per_request=per_request, kv=engine.kv_capacity_tokens is not None,
                     resident_budget=engine.token_budget if engine.max_resident_requests is not None else None)


def outer_bound_caps(engine: Engine) -> tuple[str, ...]:
    """The limits for which the work-conserving LP is only an upper bound (each with why)."""
    out = []
    if engine.max_batch_requests is not None:
        out.append("max_batch_requests (k_max: work-conserving policies can be unstable inside the region, "
                   "Li-Dai-Peng v3 Thm 10)")
    if engine.max_resident_requests is not None:
        out.append("max_resident_requests (Little's-law row over each request's shortest residence)")
    if engine.kv_capacity_tokens is not None:
        out.append("kv_capacity_tokens (memory row over each request's shortest life; preemption not counted)")
    if not engine.batch_time.tokens_only:
        out.append("batch_time (depends on the batch mix: a work-conserving policy's own mix may be slower)")
    return tuple(out)


def _binding(engine: Engine, lp: ConfigLP, dem: Demand) -> tuple[str, tuple[str, ...]]:
    found = []
    sup = lp.support()
    dcap = decode_cap(engine, dem.decode_context)
    if engine.kv_capacity_tokens is not None and (
            lp.duals.get("kv_memory", 0.0) > 1e-9 or any(c["decode_tokens"] == dcap for c in sup)):
        found.append("kv_memory")
    K, R = engine.max_batch_requests, engine.max_resident_requests
    touched = [c["decode_tokens"] + c.get("prefill_requests", int(c["prefill_tokens"] > 0)) for c in sup]
    if R is not None and (lp.duals.get("resident_requests", 0.0) > 1e-9 or any(n >= R for n in touched)):
        found.append("resident_requests")
    if K is not None and any(c["decode_tokens"] + (c["prefill_tokens"] > 0) >= K for c in sup):
        found.append("batch_requests")
    if any(c["prefill_tokens"] + c["decode_tokens"] == engine.token_budget for c in sup):
        found.append("token_budget")
    if not found:
        found.append("batch_time")
    return found[0], tuple(found)


def engine_capacity(engine: Engine, workloads: list[Workload], *, solver: str | None = None) -> EngineCapacity:
    """Capacity of one engine for the given workloads (see :func:`capacity`).

    Raises:
        ModelError: LP solver failure.
    """
    dem = engine_demand(engine, workloads)
    if engine.batch_time.tokens_only and engine.kv_capacity_tokens is None:
        rate = max_token_rate(engine.batch_time, engine.token_budget)
    else:
        rate = max_token_rate_mixed(engine, dem.decode_context)
    lp = solve_config_lp(engine, dem, solver=solver)
    wlp = solve_config_lp(engine, dem, solver=solver, columns="work-conserving")
    binding, allb = _binding(engine, lp, dem) if lp.fractions.size else ("none", ())
    caps = outer_bound_caps(engine)
    exact = not caps
    if wlp.configurations.size:
        n_w = wlp.configurations[:, 0] + wlp.configurations[:, 1]
        wc_rate = float((n_w / wlp.batch_ms).max()) * 1000.0
    else:
        wc_rate = 0.0
    # a work-conserving policy reaches μ* only with its budget at the maximiser (tokens-only, no caps)
    recommend = None
    if exact and wc_rate < rate.tokens_per_s * (1 - 1e-9) and rate.argmax_tokens < engine.token_budget:
        recommend = int(rate.argmax_tokens)
    if engine.policy.work_conserving:
        pol_scale: float | None = wlp.max_scale
        pol_method = "analytic" if exact else "upper bound"
    else:
        pol_scale, pol_method = None, "simulated only (fluidllm capacity --policy)"
    sym = None
    if engine.batch_time.kind in _PARAMETRIC:
        sym = symbolic_capacity(engine, workloads)
    return EngineCapacity(
        name=engine.name, token_budget=engine.token_budget, max_batch_requests=engine.max_batch_requests,
        kv_capacity_tokens=engine.kv_capacity_tokens, policy=engine.policy.name,
        work_conserving=engine.policy.work_conserving, max_token_rate_per_s=rate.tokens_per_s,
        argmax_batch_tokens=rate.argmax_tokens, argmax_batch_ms=rate.batch_ms,
        offered_tokens_per_s=dem.tokens_per_ms * 1000.0, max_scale=lp.max_scale, binding=binding,
        binding_all=allb, duals=lp.duals, support=tuple(lp.support()),
        work_conserving_max_scale=wlp.max_scale, work_conserving_token_rate_per_s=wc_rate,
        work_conserving_exact=exact, outer_bound_caps=caps, recommended_token_budget=recommend,
        policy_max_scale=pol_scale, policy_method=pol_method, symbolic=sym, lp=lp, work_conserving_lp=wlp)


def _engine_graph_cyclic(cn: Any) -> bool:
    """Whether routing can take work from an engine back to itself through OTHER engines: a cycle
    in the graph with an edge e → f (e ≠ f) when a class at e routes to a class at f. Without one
    the engines form a feed-forward network (a call may return to its own engine: a re-entrant
    station), where every work-conserving policy is stable below the work-conserving bound
    (station by station in feed-forward order, each a single multiclass station: Dai 1995,
    Chen 1995); with one, it need not be (Rybko-Stolyar)."""
    import networkx as nx
    import numpy as np

    P = np.asarray(cn.routing, dtype=float)
    g = nx.DiGraph()
    g.add_nodes_from(cn.engines)
    for i, ci in enumerate(cn.classes):
        for j in np.flatnonzero(P[i] > 0):
            for e in ci.engines:
                for f in cn.classes[int(j)].engines:
                    if f != e:
                        g.add_edge(e, f)
    return not nx.is_directed_acyclic_graph(g)


def capacity(model: Model | Any, *, solver: str | None = None) -> Capacity | Any:
    """Capacity of every engine of ``model`` and the largest common scale of all arrival rates.

    ``max_scale`` = min over engines of the configuration-LP scale (``inf`` with no load);
    each workload's ``max_rate_per_s`` is its rate times its engine's scale (for a zero-rate
    workload: the largest rate it can add with the others at their current rates). A network model
    (``[workflows.*]``, :class:`~fluidllm.model.network.NetworkModel`) gets the static planning LP of
    :func:`fluidllm.capacity.network.network_capacity` over its class-level form instead.

    Raises:
        ModelError: LP solver failure (status and messages named).
    """
    from ..model.network import NetworkModel

    if isinstance(model, NetworkModel):
        import dataclasses

        from .network import network_capacity

        cn = model.class_network()
        nc = network_capacity(cn, solver=solver)
        if all(e.policy.work_conserving for e in cn.engines.values()):
            nw = network_capacity(cn, solver=solver, columns="work-conserving")
            caps = sorted({c.split(" ")[0] for e in cn.engines.values() for c in outer_bound_caps(e)})
            if _engine_graph_cyclic(cn):
                # Rybko-Stolyar: work-conserving policies can be unstable inside this value
                return dataclasses.replace(nc, policy_note=(
                    f"not analytic: work returns to an engine through another one (a cycle in the engine "
                    f"graph), where a work-conserving policy can be unstable below the work-conserving bound "
                    f"{nw.max_scale:.6g} (Rybko-Stolyar, Li-Dai-Peng v3 Sec. 5.4; the paper proves K-FCFS reaches "
                    f"it for DAG and fork-join workflows); simulate it (fluidllm stability)"))
            note = ("work-conserving engines, each limited to the batches it runs under backlog; reached by "
                    "every work-conserving policy on this feed-forward engine graph (Li-Dai-Peng v3 Sec. 5; "
                    "Dai 1995)"
                    + (f"; an upper bound with {', '.join(caps)}" if caps else ""))
            return dataclasses.replace(nc, policy_max_scale=nw.max_scale, policy_note=note)
        return dataclasses.replace(nc, policy_note="some engine's policy is not work-conserving: simulate it "
                                                   "(fluidllm stability)")
    engines: dict[str, EngineCapacity] = {}
    for name, e in model.engines.items():
        engines[name] = engine_capacity(e, model.workloads_on(name), solver=solver)
    scale, bottleneck = math.inf, None
    for name, ec in engines.items():
        if ec.max_scale < scale:
            scale, bottleneck = ec.max_scale, name
    workloads: dict[str, WorkloadCapacity] = {}
    for name, w in model.workloads.items():
        ec = engines[w.engine]  # type: ignore[index]
        if w.rate_per_s > 0:
            mr: float | None = w.rate_per_s * ec.max_scale
        else:
            e = model.engines[w.engine]  # type: ignore[index]
            others = [o for o in model.workloads_on(e.name) if o.name != name]
            lp = solve_config_lp(e, engine_demand(e, [w], per_request=True), solver=solver,
                                 base=engine_demand(e, others))
            mr = lp.max_scale if lp.max_scale >= 0 else None
        workloads[name] = WorkloadCapacity(name, w.engine, w.rate_per_s, mr,  # type: ignore[arg-type]
                                           w.lengths.mean_prefill, w.lengths.mean_decode)
    return Capacity(scale, bottleneck, engines, workloads)
