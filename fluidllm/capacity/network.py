"""The static planning LP of an agent network: capacity along a direction, the region, its bottlenecks.

Input: the class-level form :class:`fluidllm.model.ClassNetwork` (classes k with mean tokens
(m_p,k, m_d,k), an engine or a replica set E_k, exogenous rates α and routing P; visit rates
λ = (I − Pᵀ)⁻¹ α). The LP (Li, Dai, Peng arXiv 2504.07347 v3 §5; the per-engine polytope is the
configuration LP of :mod:`.configlp`, §6 Thm 10 for k_max, the memory row of Nie, Si, Zhou
arXiv 2605.04595 / Ao et al. arXiv 2504.11320):

    maximise θ over θ ≥ 0, x ≥ 0, y ≥ 0
    Σ_{e ∈ E_k} x_{k,e} = θ λ_k                               (routing, one row per class)
    x_{k,e} = θ λ_k w_{k,e}                                   (split: fixed-split classes only)
    Σ_c y_{e,c} p_c / t_c ≥ Σ_k x_{k,e} m_p,k                 (prefill_tokens, per engine)
    Σ_c y_{e,c} d_c / t_c ≥ Σ_k x_{k,e} m_d,k                 (decode_tokens)
    Σ_c y_{e,c} q_c / t_c ≥ Σ_{k: m_p,k > 0} x_{k,e}          (prefill_requests: one prefill slot)
    M_e Σ_c y_{e,c} / t_c ≥ Σ_k x_{k,e} E[g_k]                (kv_memory, engines with M only)
    R_e Σ_c y_{e,c} / t_c ≥ Σ_k x_{k,e} (m_d,k + max(1{m_p,k>0}, m_p,k/b_e))
                                                              (resident_requests, engines with a
                                                               resident cap R_e: Little's law over
                                                               each call's fewest resident batches,
                                                               ⌈v_p/b⌉ + v_d ≥ that by Jensen)
    Σ_c y_{e,c} ≤ 1                                           (time)

x_{k,e} is the visit rate of class k at engine e (req/s), y_{e,c} the time fraction engine e
spends in batch configuration c = (p, d, q) (columns of :func:`.configlp.extreme_configurations`,
Pareto-pruned; exact for token-count batch times, column generation for two-feature ones).
The per-engine polytope is thus exactly the single-engine configuration LP's (token budget,
k_max, KV memory); the network couples engines only through the routing rows.

Routing (``split``): ``"rule"`` (default) leaves the split free for adaptive rules (``jsq-tokens``,
``jsq-requests``: the LP picks the best static split, which JSQ tracks) and fixes it for static
rules (``round-robin``, ``random``: equal shares, or ``weights`` when given; ``weighted``: the
weights); ``"free"`` frees every split (the best any routing can do, Prop. 3 of the paper).

What the class means cannot carry (KV memory): E[g_k] (a request's KV token-batches) and the
decode context κ_k (mean prior tokens of a decode token) depend on the length law, not only on
the means. They are taken, per class, from ``kv_moments[name] = (E[g], κ)``, else from the
attributes ``mean_kv_token_batches`` / ``mean_decode_context`` of the JobClass if it has them,
else from deterministic lengths at the means: E[g] = (m_d + 1)(m_p + m_d/2), κ = m_p + (m_d − 1)/2.
For independent random lengths E[g] is larger by Var(v_d)/2, so the fallback is an outer bound.
An engine's κ (which sets its per-batch decode cap ⌊M/(κ+1)⌋ and, for two-feature batch
times, the decode KV context) is the decode-weighted mean of κ_k over the classes it may serve,
each weighted by λ_k m_d,k times its share (equal shares for free splits): exact for fixed
engines, an approximation for replica sets of engines with KV memory.

The region: :func:`network_region_halfspaces` gives {r ≥ 0 : A r ≤ b} in chosen workflows' (or
classes') exogenous rates, the others held at their current rates — by Gale's theorem (exact
enumeration, token-budget-only engines) or by projecting the LP above with support-function LPs
(any engines); :func:`region_vertices` intersects it (scipy HalfspaceIntersection) for 2-D and
3-D slices. The region is the closure: the fluid-stable rates are its interior. It is a
necessary condition for every policy; for DAG routing work-conserving policies reach it, for
cyclic routing (Rybko–Stolyar) some do not (Li, Dai, Peng v3 §5).
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import ModelError, require
from ..model.classes import ClassNetwork
from ..model.engine import Engine
from .configlp import (COLUMN_SETS, ConfigLP, Demand, _feasible, _q_max, _times, decode_cap, extreme_configurations,
                       touch_cap, work_conserving_mask)
from .rate import TokenRate, max_token_rate, max_token_rate_mixed

__all__ = ["NetworkCapacity", "NetworkEngineCapacity", "NetworkRegion", "network_capacity",
           "network_region_halfspaces", "region_vertices", "SPLITS"]

SPLITS = ("rule", "free")
_ADAPTIVE = ("jsq-tokens", "jsq-requests")
_ROWS = ("prefill_tokens", "decode_tokens", "prefill_requests", "kv_memory", "resident_requests")
_DUAL_TOL = 1e-7


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# --------------------------------------------------------------------------------------------------
# Per-class data and the LP as data
# --------------------------------------------------------------------------------------------------

def _kv_moments(cn: ClassNetwork, kv_moments: Mapping[str, tuple[float, float]] | None) -> tuple[np.ndarray, np.ndarray]:
    """(E[g_k], κ_k) per class (see module docstring for the fallbacks)."""
    g, kappa = np.zeros(len(cn.classes)), np.zeros(len(cn.classes))
    kv_moments = dict(kv_moments or {})
    unknown = set(kv_moments) - set(cn.class_names)
    require(not unknown, "kv_moments", sorted(unknown), f"must name classes of the network {cn.class_names}")
    for i, c in enumerate(cn.classes):
        mp, md = c.mean_prefill, c.mean_decode
        if c.name in kv_moments:
            g[i], kappa[i] = (float(v) for v in kv_moments[c.name])
        else:
            g[i] = getattr(c, "mean_kv_token_batches", None) or (md + 1.0) * (mp + md / 2.0)
            kappa[i] = getattr(c, "mean_decode_context", None) or (mp + max(md - 1.0, 0.0) / 2.0 if md > 0 else 0.0)
    return g, kappa


def _shares(cn: ClassNetwork, split: str) -> list[np.ndarray | None]:
    """Per class: fixed shares over its engines, or None when the LP chooses the split."""
    require(split in SPLITS, "split", split, f"must be one of {list(SPLITS)}")
    out: list[np.ndarray | None] = []
    for c in cn.classes:
        n = len(c.engines)
        if n == 1:
            out.append(np.ones(1))
        elif split == "free" or c.routing in _ADAPTIVE:
            out.append(None)
        else:
            w = np.ones(n) if c.weights is None else np.asarray(c.weights, dtype=float)
            out.append(w / w.sum())
    return out


def _pareto(R: np.ndarray, block: int = 256) -> np.ndarray:
    """Mask of rows of R not dominated (≤ everywhere, < somewhere) by another row; of equal rows
    one is kept. Rows are visited by decreasing sum (only those can dominate later ones) in blocks,
    each checked against the frontier found so far and then within itself."""
    n = R.shape[0]
    keep = np.zeros(n, dtype=bool)
    order = np.argsort(-R.sum(1), kind="stable")
    Rs = R[order]
    front = np.zeros((0, R.shape[1]))

    def dominated(cand: np.ndarray, by: np.ndarray, strict_only: bool) -> np.ndarray:
        if by.shape[0] == 0:
            return np.zeros(cand.shape[0], dtype=bool)
        ge = np.all(by[None, :, :] >= cand[:, None, :] - 1e-12, axis=2)
        if strict_only:
            return np.any(ge, axis=1)          # equal to or above a frontier row: drop
        gt = np.any(by[None, :, :] > cand[:, None, :] + 1e-12, axis=2)
        i = np.arange(cand.shape[0])
        earlier = i[None, :] < i[:, None]
        return np.any(ge & (gt | earlier), axis=1)

    for s in range(0, n, block):
        blk = Rs[s:s + block]
        ok = ~dominated(blk, front, True)
        sub = blk[ok]
        ok2 = ~dominated(sub, sub, False)
        idx = np.arange(s, s + blk.shape[0])[ok][ok2]
        keep[order[idx]] = True
        front = np.vstack([front, sub[ok2]])
    return keep


@dataclass
class _EngineCols:
    cfg: np.ndarray      # (C, 3) p, d, q
    t: np.ndarray        # (C,) batch ms
    kappa: float
    mu_ms: float         # max token rate, tokens/ms (row scaling)


_COL_CACHE: dict[Any, _EngineCols] = {}


def _columns(engine: Engine, kappa: float, columns: str = "any") -> _EngineCols:
    """Pareto-maximal extreme configurations of ``engine`` (exact for token-count batch times);
    ``columns="work-conserving"`` keeps only those a work-conserving policy runs under backlog
    (:func:`.configlp.work_conserving_mask`)."""
    key = None
    try:
        key = (columns, engine.token_budget, engine.max_batch_requests, engine.max_resident_requests, engine.kv_capacity_tokens, engine.batch_time,
               round(kappa, 9) if (engine.kv_capacity_tokens is not None or not engine.batch_time.tokens_only) else 0)
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _COL_CACHE:
        return _COL_CACHE[key]
    cfg = extreme_configurations(engine, kappa)
    if columns != "any":
        cfg = cfg[work_conserving_mask(engine, cfg)]
    t = _times(engine, cfg, kappa)
    R = cfg / t[:, None]
    if engine.kv_capacity_tokens is not None:
        R = np.column_stack([R, 1.0 / t])
    keep = _pareto(R)
    cfg, t = cfg[keep], t[keep]
    mu = float(((cfg[:, 0] + cfg[:, 1]) / t).max()) if cfg.size else 1.0
    out = _EngineCols(cfg, t, kappa, max(mu, 1e-300))
    if key is not None:
        if len(_COL_CACHE) >= 512:
            _COL_CACHE.clear()
        _COL_CACHE[key] = out
    return out


@dataclass
class _LPData:
    """The LP as sparse matrices (x in req/s, y time fractions; engine rows scaled by 1/μ_e)."""

    names: list[str]                  # engine names, in order
    pairs_k: np.ndarray               # class index of each routing variable
    pairs_e: np.ndarray               # engine index of each routing variable
    shares: list[np.ndarray | None]
    cols: list[_EngineCols]
    col_engine: np.ndarray            # engine index of each y column
    G: dict[str, sp.csr_matrix]       # rows × y, per row kind
    H: dict[str, sp.csr_matrix]       # rows × x
    row_engines: dict[str, np.ndarray]  # engine index of each row, per kind
    T: sp.csr_matrix                  # engines × y (time)
    B: sp.csr_matrix                  # classes × x (routing sums)
    F: sp.csr_matrix                  # fixed-split rows × x
    F_share: np.ndarray               # share w_{k,e} of each fixed-split row
    F_class: np.ndarray               # class of each fixed-split row
    g: np.ndarray
    kappa: np.ndarray


def _engine_kappa(cn: ClassNetwork, lam: np.ndarray, shares, kappa_k: np.ndarray) -> dict[str, float]:
    num: dict[str, float] = {e: 0.0 for e in cn.engines}
    den: dict[str, float] = {e: 0.0 for e in cn.engines}
    for i, c in enumerate(cn.classes):
        w = shares[i] if shares[i] is not None else np.full(len(c.engines), 1.0 / len(c.engines))
        for e, s in zip(c.engines, w):
            wt = lam[i] * c.mean_decode * s
            num[e] += wt * kappa_k[i]
            den[e] += wt
    return {e: (num[e] / den[e] if den[e] > 0 else 0.0) for e in cn.engines}


def _build(cn: ClassNetwork, weight: np.ndarray, split: str, kv_moments, extra_cols=None,
           decode_context: Mapping[str, float] | None = None, columns: str = "any") -> _LPData:
    """``weight``: per-class visit weights used for each engine's κ (the direction's visit rates);
    ``decode_context``: engine → κ, overriding that."""
    shares = _shares(cn, split)
    g, kappa = _kv_moments(cn, kv_moments)
    names = list(cn.engines)
    eidx = {e: j for j, e in enumerate(names)}
    kap_e = _engine_kappa(cn, weight, shares, kappa)
    for e, v in dict(decode_context or {}).items():
        require(e in cn.engines, "decode_context", e, f"must name engines of the network {sorted(cn.engines)}")
        kap_e[e] = float(v)
    cols = [_columns(cn.engines[e], kap_e[e], columns) for e in names]
    if extra_cols:
        for j, extra in extra_cols.items():
            c = cols[j]
            cols[j] = _EngineCols(np.vstack([c.cfg, extra[0]]), np.r_[c.t, extra[1]], c.kappa, c.mu_ms)
    pk, pe = [], []
    for i, c in enumerate(cn.classes):
        for e in c.engines:
            pk.append(i)
            pe.append(eidx[e])
    pairs_k, pairs_e = np.array(pk, dtype=int), np.array(pe, dtype=int)
    ncol = np.array([c.cfg.shape[0] for c in cols])
    col_engine = np.repeat(np.arange(len(names)), ncol)
    cfg = np.vstack([c.cfg for c in cols]).astype(float) if len(cols) else np.zeros((0, 3))
    t = np.concatenate([c.t for c in cols])
    mu = np.array([c.mu_ms for c in cols])
    inv = 1.0 / t / mu[col_engine]          # y coefficient scale: per ms, relative to μ_e
    mp = np.array([c.mean_prefill for c in cn.classes])
    md = np.array([c.mean_decode for c in cn.classes])
    needs_slot = (mp > 0).astype(float)
    has_kv = np.array([cn.engines[e].kv_capacity_tokens is not None for e in names])
    M = np.array([float(cn.engines[e].kv_capacity_tokens or 0) for e in names])
    has_res = np.array([cn.engines[e].max_resident_requests is not None for e in names])
    Rcap = np.array([float(cn.engines[e].max_resident_requests or 0) for e in names])
    budget = np.array([float(cn.engines[e].token_budget) for e in names])
    ycoef = {"prefill_tokens": cfg[:, 0] * inv, "decode_tokens": cfg[:, 1] * inv,
             "prefill_requests": cfg[:, 2] * inv, "kv_memory": M[col_engine] * inv,
             "resident_requests": Rcap[col_engine] * inv}
    xper = {"prefill_tokens": mp, "decode_tokens": md, "prefill_requests": needs_slot, "kv_memory": g}
    nE, nX, nY = len(names), pairs_k.size, col_engine.size
    G, H, rows = {}, {}, {}
    for kind in _ROWS:
        sel = (np.flatnonzero(has_kv) if kind == "kv_memory" else np.flatnonzero(has_res)
               if kind == "resident_requests" else np.arange(nE))
        pos = -np.ones(nE, dtype=int)
        pos[sel] = np.arange(sel.size)
        ym = pos[col_engine] >= 0
        G[kind] = sp.csr_matrix((ycoef[kind][ym], (pos[col_engine][ym], np.flatnonzero(ym))), shape=(sel.size, nY))
        xm = pos[pairs_e] >= 0
        if kind == "resident_requests":       # per (class, engine): the fewest batches resident there
            per = md[pairs_k] + np.maximum(needs_slot[pairs_k], mp[pairs_k] / budget[pairs_e])
        else:
            per = xper[kind][pairs_k]
        h = per / 1000.0 / mu[pairs_e]        # req/s → per ms, relative to μ_e
        H[kind] = sp.csr_matrix((h[xm], (pos[pairs_e][xm], np.flatnonzero(xm))), shape=(sel.size, nX))
        rows[kind] = sel
    T = sp.csr_matrix((np.ones(nY), (col_engine, np.arange(nY))), shape=(nE, nY))
    B = sp.csr_matrix((np.ones(nX), (pairs_k, np.arange(nX))), shape=(len(cn.classes), nX))
    fx, fs, fc = [], [], []
    for v in range(nX):
        k = pairs_k[v]
        s = shares[k]
        if s is not None and s.size > 1:
            j = list(cn.classes[k].engines).index(names[pairs_e[v]])
            fx.append(v)
            fs.append(s[j])
            fc.append(k)
    F = sp.csr_matrix((np.ones(len(fx)), (np.arange(len(fx)), np.array(fx, dtype=int))), shape=(len(fx), nX))
    return _LPData(names, pairs_k, pairs_e, shares, cols, col_engine, G, H, rows, T, B, F,
                   np.array(fs), np.array(fc, dtype=int), g, kappa)


def _solve(prob, solver: str | None) -> str:
    import cvxpy as cp

    errors = []
    for name in ([solver] if solver else ["HIGHS", "CLARABEL"]):
        if name not in cp.installed_solvers():
            errors.append(f"{name} not installed")
            continue
        try:
            prob.solve(solver=name)
        except cp.error.SolverError as e:  # pragma: no cover - reported, not hidden
            errors.append(f"{name}: {e}")
            continue
        if prob.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            return name
        errors.append(f"{name}: status {prob.status}")
    raise ModelError("network", "static planning LP", "solver failure: " + "; ".join(errors))


# --------------------------------------------------------------------------------------------------
# Capacity along a direction
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NetworkEngineCapacity:
    """One engine at the optimum of the network LP.

    ``offered_tokens_per_s``, ``offered_requests_per_s``: the load routed to it at the current
    rates under the optimal split (x*/θ*; not unique off the bottleneck). ``utilisation``: that
    load over the engine's capacity along its own mix (1 / its single-engine configuration-LP
    scale; token load / μ* for token-budget-only engines). ``dual``: ∂θ*/∂(engine capacity, as a
    fraction of it) — the shadow price of its time row; ``elasticity`` = dual / θ* (the
    elasticities sum to 1). ``bottleneck``: the dual is positive. When several engines saturate
    at once (e.g. Rybko–Stolyar, every engine at the same load) the LP is dual-degenerate: any
    split of the elasticities among them is optimal and the solver names some; ``saturated``
    (utilisation × θ* ≥ 1 − 1e-6 under the optimal split) lists them all. ``binding``: which limit
    binds on a bottleneck (as in :func:`fluidllm.capacity`: token_budget, batch_requests,
    kv_memory, batch_time), else "none". ``decode_context``: the κ_e used (tokens).
    """

    name: str
    max_token_rate_per_s: float
    offered_tokens_per_s: float
    offered_requests_per_s: float
    utilisation: float
    dual: float
    elasticity: float
    bottleneck: bool
    binding: str
    binding_all: tuple[str, ...]
    row_duals: dict[str, float]
    support: tuple[dict[str, float], ...]
    decode_context: float = 0.0
    saturated: bool = False
    argmax_batch_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"max_token_rate_per_s": self.max_token_rate_per_s, "argmax_batch_tokens": self.argmax_batch_tokens,
                "offered_tokens_per_s": self.offered_tokens_per_s,
                "offered_requests_per_s": self.offered_requests_per_s, "utilisation": _num(self.utilisation),
                "dual": self.dual, "elasticity": self.elasticity, "bottleneck": self.bottleneck,
                "binding": self.binding, "binding_all": list(self.binding_all), "row_duals": self.row_duals,
                "support": list(self.support),
                "decode_context_tokens": self.decode_context, "saturated": self.saturated}


@dataclass(frozen=True, eq=False)
class NetworkCapacity:
    """Result of :func:`network_capacity`.

    ``max_scale`` θ*: every exogenous rate × θ* is on the boundary of the network's fluid region
    (θ* > 1: the current rates are inside). ``workflows``/``classes``: exogenous rate × θ*
    (req/s). ``routing``: class → engine → visit rate at the current rates under the optimal split
    (req/s). ``bottlenecks``: engines whose time row has a positive dual, largest first.
    ``problem``: the cvxpy problem; ``constraints``: its constraints by name (routing: one row per
    class; split: fixed-split pairs; prefill_tokens, decode_tokens, prefill_requests, time: one row
    per engine in ``engine_order``; kv_memory: one per engine with memory). Engine rows are scaled
    by 1/μ*_e (tokens/ms) and θ by ``theta_ref``: θ* = theta_ref × the problem's value.
    """

    max_scale: float
    status: str
    solver: str
    split: str
    workflows: dict[str, float]
    classes: dict[str, float]
    engines: dict[str, NetworkEngineCapacity]
    routing: dict[str, dict[str, float]]
    bottlenecks: tuple[str, ...]
    n_variables: int
    n_constraints: int
    theta_ref: float
    problem: Any = field(repr=False, default=None)
    constraints: dict[str, Any] = field(repr=False, default_factory=dict)
    engine_order: tuple[str, ...] = ()
    columns: str = "any"
    policy_max_scale: float | None = None
    policy_note: str = ""

    @property
    def position(self) -> str:
        if abs(self.max_scale - 1.0) <= 1e-9:
            return "boundary"
        return "inside" if self.max_scale > 1.0 else "outside"

    @property
    def stable(self) -> bool:
        return self.position == "inside"

    def to_dict(self) -> dict[str, Any]:
        return {"max_scale": _num(self.max_scale), "columns": self.columns,
                "policy_max_scale": _num(self.policy_max_scale), "policy_note": self.policy_note,
                "stable": self.stable, "position": self.position,
                "status": self.status, "solver": self.solver, "split": self.split,
                "bottlenecks": list(self.bottlenecks),
                "workflows": {k: {"max_rate_per_s": _num(v)} for k, v in self.workflows.items()},
                "classes": {k: {"max_rate_per_s": _num(v)} for k, v in self.classes.items()},
                "engines": {k: v.to_dict() for k, v in self.engines.items()}, "routing_per_s": self.routing,
                "lp": {"variables": self.n_variables, "constraints": self.n_constraints}}

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    def table(self) -> str:
        ms = "unbounded (no load)" if math.isinf(self.max_scale) else f"{self.max_scale:.6g}"
        verdict = {"inside": "inside the region", "boundary": "ON THE BOUNDARY (fluid-critical)",
                   "outside": "OVERLOADED (outside the region)"}[self.position]
        what = "best any policy could do" if self.columns == "any" else "work-conserving engines"
        lines = [f"network max_scale {ms} ({what}): current rates are {verdict}; split = {self.split}; "
                 f"bottleneck engines: {', '.join(self.bottlenecks) or 'none'}"]
        if self.policy_note:
            ps = "n/a" if self.policy_max_scale is None else f"{self.policy_max_scale:.6g}"
            lines.append(f"the engines' own policies: max_scale {ps} ({self.policy_note})")
        lines.append("")
        hdr = f"{'engine':<12} {'mu* tok/s':>11} {'offered tok/s':>13} {'util':>7} {'sat':>3} {'dual':>9} {'elast':>7}  binding"
        lines += [hdr, "-" * len(hdr)]
        for e in self.engines.values():
            lines.append(f"{e.name:<12} {e.max_token_rate_per_s:>11.2f} {e.offered_tokens_per_s:>13.2f} "
                         f"{e.utilisation:>7.3f} {'yes' if e.saturated else '':>3} {e.dual:>9.4g} {e.elasticity:>7.3f}"
                         f"  {e.binding}")
        lines += ["", f"{'workflow':<16} {'max req/s':>11}", "-" * 28]
        for w, v in self.workflows.items():
            lines.append(f"{w:<16} {v:>11.5g}")
        split = {k: v for k, v in self.routing.items() if len(v) > 1}
        if split:
            lines += ["", "replica-set split at the current rates (req/s):"]
            for k, v in split.items():
                lines.append(f"  {k}: " + ", ".join(f"{e} {r:.4g}" for e, r in v.items()))
        return "\n".join(lines)


def _theta_ref(cn: ClassNetwork, lam: np.ndarray, data: _LPData) -> float:
    """1 / the largest token utilisation under equal shares: θ* / θ_ref is O(1)."""
    load = np.zeros(len(data.names))
    for v in range(data.pairs_k.size):
        k = data.pairs_k[v]
        s = data.shares[k]
        share = 1.0 / len(cn.classes[k].engines) if s is None else s[list(cn.classes[k].engines).index(
            data.names[data.pairs_e[v]])]
        load[data.pairs_e[v]] += lam[k] * share * cn.classes[k].mean_tokens / 1000.0 / data.cols[data.pairs_e[v]].mu_ms
    m = load.max() if load.size else 0.0
    return 1.0 / m if m > 0 else 1.0


def _problem_theta(data: _LPData, lam_hat: np.ndarray):
    """cvxpy problem in normalised units: x = θ_ref λ f, max θ̃."""
    import cvxpy as cp

    nX, nY = data.pairs_k.size, data.col_engine.size
    f = cp.Variable(nX, nonneg=True, name="routing_fraction")
    y = cp.Variable(nY, nonneg=True, name="time_fraction")
    th = cp.Variable(name="scale")
    D = sp.diags(lam_hat[data.pairs_k])
    cons = {"routing": data.B @ f == th * np.ones(data.B.shape[0])}
    if data.F.shape[0]:
        cons["split"] = data.F @ f == th * data.F_share
    for kind in _ROWS:
        if data.G[kind].shape[0]:
            cons[kind] = data.G[kind] @ y >= (data.H[kind] @ D) @ f
    cons["time"] = data.T @ y <= 1
    prob = cp.Problem(cp.Maximize(th), list(cons.values()))
    return prob, f, y, th, cons


def network_capacity(cn: ClassNetwork, *, split: str = "rule", kv_moments: Mapping[str, tuple[float, float]] | None = None,
                     decode_context: Mapping[str, float] | None = None, solver: str | None = None,
                     engine_detail: bool = True, max_rounds: int = 50, columns: str = "any") -> NetworkCapacity:
    """Largest θ such that θ × (every exogenous rate) lies in the network's fluid stability region.

    The static planning LP of the module docstring along the direction of the current visit rates
    λ = (I − Pᵀ)⁻¹α (requests/s). ``split``: "rule" or "free" (module docstring). ``kv_moments``:
    per-class (E[g], κ) for KV memory; ``decode_context``: engine → κ_e (tokens), overriding the
    decode-weighted mean of the direction (module docstring). ``engine_detail``: compute each engine's utilisation (one
    single-engine configuration LP per engine with k_max or memory; closed form otherwise; with
    ``False`` every engine's utilisation is its token load / μ*, a lower bound where k_max or
    memory bind, and ``saturated`` follows it). ``columns``: ``"any"`` (the best any policy could
    do: each engine at μ*) or ``"work-conserving"`` (each engine limited to the batches a
    work-conserving policy runs under backlog: b_max/t(b_max) per engine without caps;
    :mod:`.configlp`).

    Raises:
        ModelError: solver failure (status and messages named); bad ``split``, ``kv_moments`` or
            ``columns``.
    """
    import cvxpy as cp

    require(columns in COLUMN_SETS, "columns", columns, f"must be one of {list(COLUMN_SETS)}")
    lam = np.asarray(cn.visit_rates, dtype=float)
    data = _build(cn, lam, split, kv_moments, None, decode_context, columns)
    if not np.any(lam > 0) or not any(cn.classes[k].mean_tokens > 0 for k in np.flatnonzero(lam > 0)):
        raise ModelError("arrival_rates", cn.arrival_rates.tolist(), "must load the network (some class with "
                         "positive rate and tokens) for a maximum scale")
    ref = _theta_ref(cn, lam, data)
    extra: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    two_feature = [j for j, e in enumerate(data.names) if not cn.engines[e].batch_time.tokens_only]
    for _ in range(max_rounds):
        prob, f, y, th, cons = _problem_theta(data, ref * lam)
        used = _solve(prob, solver)
        new = _price(cn, data, cons, two_feature, columns) if two_feature else {}
        if not new:
            break
        for j, (c, t) in new.items():
            old = extra.get(j)
            extra[j] = (c, t) if old is None else (np.vstack([old[0], c]), np.r_[old[1], t])
        data = _build(cn, lam, split, kv_moments, extra, decode_context, columns)
    else:
        raise ModelError("network", "static planning LP", f"column generation did not converge in {max_rounds} rounds")
    theta_n = float(th.value)
    theta = ref * theta_n
    fv = np.maximum(np.asarray(f.value, dtype=float), 0.0)
    yv = np.maximum(np.asarray(y.value, dtype=float), 0.0)
    # visit rates at the current rates under the optimal split: x / θ* = λ f / θ̃
    xr = lam[data.pairs_k] * fv / theta_n if theta_n > 0 else np.zeros_like(fv)
    time_dual = np.asarray(cons["time"].dual_value, dtype=float).reshape(-1)
    row_dual = {k: np.asarray(cons[k].dual_value, dtype=float).reshape(-1) for k in _ROWS if k in cons}
    routing: dict[str, dict[str, float]] = {}
    for v in range(xr.size):
        routing.setdefault(cn.classes[data.pairs_k[v]].name, {})[data.names[data.pairs_e[v]]] = float(xr[v])
    engines: dict[str, NetworkEngineCapacity] = {}
    bott = []
    y_off = np.r_[0, np.cumsum([c.cfg.shape[0] for c in data.cols])]
    for j, name in enumerate(data.names):
        eng = cn.engines[name]
        sel = data.pairs_e == j
        ks = data.pairs_k[sel]
        x_e = xr[sel]
        mp = np.array([cn.classes[k].mean_prefill for k in ks])
        md = np.array([cn.classes[k].mean_decode for k in ks])
        slot = (mp > 0).astype(float)
        res = (float(x_e @ (md + np.maximum(slot, mp / eng.token_budget))) / 1000
               if eng.max_resident_requests is not None else 0.0)
        dem = Demand(float(x_e @ mp) / 1000, float(x_e @ md) / 1000, float(x_e @ slot) / 1000,
                     float(x_e @ data.g[ks]) / 1000 if eng.kv_capacity_tokens is not None else 0.0,
                     data.cols[j].kappa, res)
        cols = data.cols[j]
        tokens_only_2d = (eng.batch_time.tokens_only and eng.max_batch_requests is None
                          and eng.max_resident_requests is None and eng.kv_capacity_tokens is None)
        tr = (max_token_rate(eng.batch_time, eng.token_budget) if tokens_only_2d
              else max_token_rate_mixed(eng, cols.kappa))
        mu_s = tr.tokens_per_s
        if columns != "any" and cols.cfg.size:     # the best token rate among the columns kept
            n_c = cols.cfg[:, 0] + cols.cfg[:, 1]
            i_c = int(np.argmax(n_c / cols.t))
            tr = TokenRate(float(n_c[i_c] / cols.t[i_c]), int(n_c[i_c]), float(cols.t[i_c]))
            mu_s = tr.tokens_per_s
        if dem.is_zero:
            util = 0.0
        elif tokens_only_2d or not engine_detail:
            util = dem.tokens_per_ms * 1000.0 / mu_s
        else:
            from .configlp import solve_config_lp
            s_e = solve_config_lp(eng, dem, solver=solver, columns=columns).max_scale
            util = 0.0 if math.isinf(s_e) else 1.0 / s_e
        dual = ref * float(time_dual[j])
        rd = {}
        for kind, arr in row_dual.items():
            pos = np.flatnonzero(data.row_engines[kind] == j)
            if pos.size:
                rd[kind] = ref * float(arr[pos[0]])
        is_b = bool(dual > _DUAL_TOL * max(1.0, theta))
        frac = yv[y_off[j]:y_off[j + 1]]
        lp_e = ConfigLP(theta, str(prob.status), used, cols.cfg, cols.t, frac, {**rd, "time": dual}, cols.cfg.shape[0])
        sup = tuple(lp_e.support()) if is_b else ()
        if is_b:
            from . import _binding  # lazy: capacity/__init__ may import this module
            binding, allb = _binding(eng, lp_e, dem)
            bott.append((dual, name))
        else:
            binding, allb = "none", ()
        engines[name] = NetworkEngineCapacity(name, mu_s, dem.tokens_per_ms * 1000.0, dem.requests_per_ms * 1000.0
                                              if dem.requests_per_ms else float(x_e.sum()), util, dual,
                                              dual / theta if theta > 0 else 0.0, is_b, binding, allb, rd, sup,
                                              cols.kappa, bool(util * theta >= 1 - 1e-6), int(tr.argmax_tokens))
    wf: dict[str, float] = {}
    for i, c in enumerate(cn.classes):
        key = c.workflow or c.name
        wf[key] = wf.get(key, 0.0) + float(cn.arrival_rates[i]) * theta
    classes = {c.name: float(cn.arrival_rates[i]) * theta for i, c in enumerate(cn.classes)}
    bottlenecks = tuple(n for _, n in sorted(bott, key=lambda t: -t[0]))
    nvar = data.pairs_k.size + data.col_engine.size + 1
    ncons = sum(int(np.prod(c.shape)) if c.shape else 1 for c in prob.constraints)
    return NetworkCapacity(theta, str(prob.status), used, split, wf, classes, engines, routing, bottlenecks,
                           nvar, ncons, ref, prob, dict(cons), tuple(data.names), columns)


def _price(cn: ClassNetwork, data: _LPData, cons, engines: list[int],
           columns: str = "any") -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Column generation for two-feature batch times: the most improving (p, d, q) per engine, by
    exact pricing over every p + d ≤ b_max with the engine's row duals (as in :mod:`.configlp`)."""
    out = {}
    td = np.asarray(cons["time"].dual_value, dtype=float).reshape(-1)
    duals = {k: np.asarray(cons[k].dual_value, dtype=float).reshape(-1) for k in _ROWS if k in cons}
    for j in engines:
        eng = cn.engines[data.names[j]]
        c = data.cols[j]
        pi = {}
        for kind, arr in duals.items():
            pos = np.flatnonzero(data.row_engines[kind] == j)
            pi[kind] = float(arr[pos[0]]) if pos.size else 0.0
        b, K = eng.token_budget, touch_cap(eng)
        P, D = np.meshgrid(np.arange(b + 1), np.arange(b + 1), indexing="ij")
        ok = _feasible(P, D, K, decode_cap(eng, c.kappa)) & (P + D <= b)
        P, D = P[ok], D[ok]
        Q = _q_max(P, D, K)
        if columns != "any":
            keep = work_conserving_mask(eng, np.column_stack([P, D, Q]))
            P, D, Q = P[keep], D[keep], Q[keep]
        tt = np.asarray(eng.batch_time.batch_ms(P, D, D * c.kappa), dtype=float)
        gain = (pi["prefill_tokens"] * P + pi["decode_tokens"] * D + pi["prefill_requests"] * Q
                + pi.get("kv_memory", 0.0) * (eng.kv_capacity_tokens or 0)
                + pi.get("resident_requests", 0.0) * (eng.max_resident_requests or 0)) / tt / c.mu_ms - td[j]
        i = int(np.argmax(gain))
        best = np.array([[P[i], D[i], Q[i]]], dtype=np.int64)
        if gain[i] > 1e-7 * max(1.0, abs(td[j])) and not np.any(np.all(c.cfg == best, axis=1)):
            out[j] = (best, tt[i:i + 1])
    return out


# --------------------------------------------------------------------------------------------------
# The region in the space of chosen exogenous rates
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class NetworkRegion:
    """{r ≥ 0 : A r ≤ b}: the closure of the fluid region in the exogenous rates ``coordinates``
    (req/s), the other workflows at their current rates. Rows are scaled so that b is 1 where
    the row's right side is positive. ``method``: "gale" (exact enumeration) or "lp" (exact
    projection by support-function LPs)."""

    coordinates: tuple[str, ...]
    A: np.ndarray
    b: np.ndarray
    method: str
    rows: tuple[str, ...] = ()
    decode_context: dict[str, float] = field(default_factory=dict)

    def contains(self, r: Sequence[float], strict: bool = True) -> bool:
        r = np.asarray(r, dtype=float)
        if np.any(r < 0):
            return False
        lhs = self.A @ r
        return bool(np.all(lhs < self.b) if strict else np.all(lhs <= self.b + 1e-9 * np.maximum(1.0, np.abs(self.b))))

    def max_scale(self, direction: Sequence[float]) -> float:
        """Largest s with s·direction in the region."""
        u = np.asarray(direction, dtype=float)
        require(u.shape == (len(self.coordinates),) and np.all(u >= 0) and np.any(u > 0), "direction", u.tolist(),
                f"must be {len(self.coordinates)} non-negative rates, not all zero")
        lhs = self.A @ u
        pos = lhs > 1e-15
        return float(np.min(self.b[pos] / lhs[pos])) if pos.any() else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {"coordinates": list(self.coordinates), "A": self.A.tolist(), "b": self.b.tolist(),
                "method": self.method, "rows": list(self.rows), "decode_context_tokens": self.decode_context}


def _coordinates(cn: ClassNetwork, workflows, classes) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """(names, Λ (K × d): exogenous rates per unit of each coordinate, α_base of the others)."""
    require((workflows is None) != (classes is None), "workflows", workflows, "give exactly one of workflows= or classes=")
    K = len(cn.classes)
    alpha = np.asarray(cn.arrival_rates, dtype=float)
    base = alpha.copy()
    cols = []
    if classes is not None:
        names = tuple(classes)
        for n in names:
            i = cn.index(n)
            v = np.zeros(K)
            v[i] = 1.0
            cols.append(v)
            base[i] = 0.0
    else:
        names = tuple(workflows)
        wf = [c.workflow or c.name for c in cn.classes]
        for n in names:
            idx = [i for i in range(K) if wf[i] == n]
            require(bool(idx), "workflows", n, f"must be one of {sorted(set(wf))}")
            v = np.zeros(K)
            if alpha[idx].sum() > 0:
                v[idx] = alpha[idx] / alpha[idx].sum()
            else:  # no current rate: enter at the classes no routing leads to, equally
                entry = [i for i in idx if cn.routing[:, i].sum() == 0] or idx[:1]
                v[entry] = 1.0 / len(entry)
            cols.append(v)
            base[idx] = 0.0
    require(len(set(names)) == len(names) and len(names) >= 1, "coordinates", names, "must be distinct, at least one")
    return names, np.column_stack(cols), base


def _token_only(cn: ClassNetwork) -> bool:
    ok_e = all(e.batch_time.tokens_only and e.max_batch_requests is None and e.max_resident_requests is None and e.kv_capacity_tokens is None
               for e in cn.engines.values())
    ok_k = all(c.mean_prefill == 0 or c.mean_prefill >= 1 for c in cn.classes)
    return ok_e and ok_k


def network_region_halfspaces(cn: ClassNetwork, *, workflows: Sequence[str] | None = None,
                              classes: Sequence[str] | None = None, split: str = "rule", method: str = "auto",
                              kv_moments: Mapping[str, tuple[float, float]] | None = None,
                              decode_context: Mapping[str, float] | None = None,
                              solver: str | None = None, max_component: int = 14,
                              max_queries: int = 500) -> NetworkRegion:
    """H-representation of the network's region in the chosen workflows' (or classes') exogenous
    rates r (req/s); the other workflows stay at their current rates.

    ``method="gale"`` (token-budget-only engines: no k_max, no memory, token-count batch time;
    exact): engine e has capacity μ*_e tokens/s and class k puts λ_k(r)(m_p,k + m_d,k) tokens on
    the engines of its replica set. With fixed engines (or fixed splits) this is one inequality
    per engine, Σ_k λ_k(r) m_k s_{k,e} ≤ μ*_e. Free splits make it a bipartite transportation
    problem; by Gale's theorem (max-flow/min-cut) it is feasible iff for every set S of engines
    Σ_{k free, E_k ⊆ S} λ_k(r) m_k + Σ_{e ∈ S} fixed load_e(r) ≤ Σ_{e ∈ S} μ*_e. The sets S are
    enumerated within each group of engines linked by free replica sets (≤ ``max_component``
    engines), keeping only S whose engines are linked by the free classes inside S (the others
    are sums of those rows).

    ``method="lp"`` (any engines; exact up to solver tolerance, dimension ≤ 4 or so): the region is
    the projection onto r of {(r, x, y)} of the static planning LP; it is computed by the
    iterative support-function method: the hull of support points found by the LP
    max u·r; each hull facet is queried along its normal and kept when no point lies beyond it.
    Engines with KV memory (or a two-feature batch time) have their decode context κ_e frozen at
    the current rates' mix (or ``decode_context``; reported in ``NetworkRegion.decode_context``):
    the true region is not a polytope when κ_e moves with the mix, and this is the exact projection
    of the LP at that κ (for token-count engines without memory κ plays no role). Two-feature
    engines use the token-count extreme columns here (no column generation): an inner bound.
    ``method="auto"``: gale where it applies, else lp.

    Raises:
        ModelError: bad coordinates; a group too large for gale; region unbounded or empty.
    """
    names, Lam, base = _coordinates(cn, workflows, classes)
    require(method in ("auto", "gale", "lp"), "method", method, "must be auto, gale or lp")
    if method == "auto":
        method = "gale" if _token_only(cn) else "lp"
    if method == "gale":
        require(_token_only(cn), "method", "gale", "needs token-budget-only engines (no k_max, memory, "
                "two-feature batch time) and classes with m_p = 0 or ≥ 1; use method='lp'")
        return _gale(cn, names, Lam, base, split, max_component)
    return _lp_region(cn, names, Lam, base, split, kv_moments, decode_context, solver, max_queries)


def _gale(cn, names, Lam, base, split, max_component) -> NetworkRegion:
    K = len(cn.classes)
    V = np.linalg.inv(np.eye(K) - cn.routing.T)
    lam_r = V @ Lam          # K × d: visits per unit of r
    lam_0 = V @ base         # K: visits from the others
    shares = _shares(cn, split)
    enames = list(cn.engines)
    eidx = {e: j for j, e in enumerate(enames)}
    mu = np.array([max_token_rate(cn.engines[e].batch_time, cn.engines[e].token_budget).tokens_per_s for e in enames])
    m = np.array([c.mean_tokens for c in cn.classes])
    nE, d = len(enames), len(names)
    fixed_A, fixed_b = np.zeros((nE, d)), np.zeros(nE)   # token load on each engine from fixed shares
    free = []
    for k, c in enumerate(cn.classes):
        if shares[k] is None:
            free.append((k, frozenset(eidx[e] for e in c.engines)))
        else:
            for e, s in zip(c.engines, shares[k]):
                fixed_A[eidx[e]] += s * m[k] * lam_r[k]
                fixed_b[eidx[e]] += s * m[k] * lam_0[k]
    # groups of engines linked by free replica sets (union-find)
    parent = list(range(nE))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a
    for _, Es in free:
        Es = sorted(Es)
        for e in Es[1:]:
            parent[find(e)] = find(Es[0])
    groups: dict[int, list[int]] = {}
    for e in range(nE):
        groups.setdefault(find(e), []).append(e)
    A, b, labels = [], [], []
    for grp in groups.values():
        require(len(grp) <= max_component, "max_component", len(grp),
                f"engine group {[enames[e] for e in grp]} is too large to enumerate; use method='lp'")
        gfree = [(k, Es) for k, Es in free if Es <= set(grp)]
        for r in range(1, len(grp) + 1):
            for S in itertools.combinations(grp, r):
                Sset = set(S)
                inside = [(k, Es) for k, Es in gfree if Es <= Sset]
                if len(S) > 1:  # keep S only if its engines are linked by the free classes inside it
                    par = {e: e for e in S}

                    def f2(a):
                        while par[a] != a:
                            a = par[a]
                        return a
                    for _, Es in inside:
                        Es = sorted(Es)
                        for e in Es[1:]:
                            par[f2(e)] = f2(Es[0])
                    if len({f2(e) for e in S}) > 1:
                        continue
                a = fixed_A[list(S)].sum(0) + sum((m[k] * lam_r[k] for k, _ in inside), np.zeros(d))
                rhs = mu[list(S)].sum() - fixed_b[list(S)].sum() - sum((m[k] * lam_0[k] for k, _ in inside), 0.0)
                if np.all(a <= 1e-15):
                    require(rhs >= -1e-9, "arrival_rates", [enames[e] for e in S],
                            "the other workflows alone overload these engines: the region is empty")
                    continue
                A.append(a)
                b.append(rhs)
                labels.append("+".join(enames[e] for e in S))
    return _finish(names, A, b, "gale", labels)


def _finish(names, A, b, method, labels, kappa=None) -> NetworkRegion:
    require(len(A) > 0, "coordinates", names, "load no engine: the region is unbounded")
    A_arr, b_arr = np.array(A, dtype=float), np.array(b, dtype=float)
    sc = np.where(b_arr > 1e-12, b_arr, np.linalg.norm(A_arr, axis=1))
    A_arr, b_arr = A_arr / sc[:, None], b_arr / sc
    # drop duplicate rows
    key = np.round(np.c_[A_arr, b_arr], 10)
    _, first = np.unique(key, axis=0, return_index=True)
    first = np.sort(first)
    return NetworkRegion(tuple(names), A_arr[first], b_arr[first], method, tuple(labels[i] for i in first),
                         dict(kappa or {}))


def _lp_region(cn, names, Lam, base, split, kv_moments, decode_context, solver, max_queries) -> NetworkRegion:
    import cvxpy as cp
    from scipy.spatial import ConvexHull

    K, d = len(cn.classes), len(names)
    V = np.linalg.inv(np.eye(K) - cn.routing.T)
    lam_r, lam_0 = V @ Lam, V @ base
    weight = np.asarray(cn.visit_rates) if np.any(cn.visit_rates > 0) else lam_r.sum(1) + lam_0
    data = _build(cn, weight, split, kv_moments, None, decode_context)
    kap = {n: c.kappa for n, c in zip(data.names, data.cols)}
    nX, nY = data.pairs_k.size, data.col_engine.size
    # rate scale per coordinate: r = R r̃ with R the coordinate's single-direction max (solved below)
    x = cp.Variable(nX, nonneg=True, name="visit_rate")
    y = cp.Variable(nY, nonneg=True, name="time_fraction")
    r = cp.Variable(d, nonneg=True, name="rate")
    Rs = cp.Parameter(d, nonneg=True, name="rate_scale")
    u = cp.Parameter(d, name="direction")
    cons = {"routing": data.B @ x == lam_r @ cp.multiply(Rs, r) + lam_0}
    if data.F.shape[0]:
        cons["split"] = data.F @ x == cp.multiply(data.F_share, lam_r[data.F_class] @ cp.multiply(Rs, r)
                                                  + lam_0[data.F_class])
    for kind in _ROWS:
        if data.G[kind].shape[0]:
            cons[kind] = data.G[kind] @ y >= data.H[kind] @ x
    cons["time"] = data.T @ y <= 1
    prob = cp.Problem(cp.Maximize(u @ r), list(cons.values()))

    def support(direction, scale):
        Rs.value, u.value = scale, direction
        _solve(prob, solver)
        return np.asarray(r.value, dtype=float) * scale, float(prob.value)

    # axis maxima (bounded iff each coordinate loads some engine)
    axis = np.zeros(d)
    for i in range(d):
        require(np.any(np.abs(lam_r[:, i]) > 0), "coordinates", names[i], "has no visits: the region is unbounded")
        e = np.zeros(d)
        e[i] = 1.0
        Rs.value, u.value = np.ones(d), e
        try:
            _solve(prob, solver)
        except ModelError:
            raise ModelError("coordinates", names[i], "the LP is unbounded or infeasible along it "
                             "(a coordinate that loads no engine, or the others alone overload one)") from None
        axis[i] = float(r.value[i])
        require(math.isfinite(axis[i]), "coordinates", names[i], "the region is unbounded along it")
    require(bool(np.all(axis > 0)), "coordinates", [n for n, a in zip(names, axis) if a <= 0],
            "cannot grow at all with the others at their current rates: the slice has no interior")
    scale = axis
    if d == 1:
        return _finish(names, [np.array([1.0])], [axis[0]], "lp", ["axis"], kap)
    pts = [np.zeros(d)] + [axis[i] * np.eye(d)[i] for i in range(d)]
    p, _ = support(np.ones(d) / scale, scale)
    pts.append(p)
    done: list[tuple[np.ndarray, float]] = []
    queries = 0
    while True:
        P = np.array(pts) / scale
        hull = ConvexHull(P, qhull_options="Qt" if d > 1 else "")
        added = False
        for eq in hull.equations:
            nrm, off = eq[:d], -eq[d]
            if np.all(nrm <= 1e-12):       # a facet r_i ≥ 0 (normal points out of the orthant)
                continue
            if any(np.allclose(nrm, n0, atol=1e-9) and abs(off - o0) < 1e-9 for n0, o0 in done):
                continue
            queries += 1
            require(queries <= max_queries, "max_queries", max_queries, "exceeded by the projection")
            pnew, val = support(nrm, scale)
            if val > off + 1e-7 * max(1.0, abs(off)):
                pts.append(pnew)
                added = True
            else:
                done.append((nrm.copy(), off))
        if not added:
            break
    A, b, labels = [], [], []
    for eq in hull.equations:
        nrm, off = eq[:d], -eq[d]
        if np.all(nrm <= 1e-12):
            continue
        A.append(nrm / scale)
        b.append(off)
        labels.append("facet")
    return _finish(names, A, b, "lp", labels, kap)


def region_vertices(region_or_network: NetworkRegion | ClassNetwork, *, workflows: Sequence[str] | None = None,
                    classes: Sequence[str] | None = None, **kw: Any) -> np.ndarray:
    """Vertices (req/s) of a 2-D or 3-D slice of the region: {r ≥ 0 : A r ≤ b} intersected by
    :class:`scipy.spatial.HalfspaceIntersection` (interior point: the Chebyshev centre, by
    linprog), rounded duplicates merged. 2-D vertices are counter-clockwise from the origin.
    Accepts a :class:`NetworkRegion` or a ClassNetwork (then ``workflows``/``classes`` and
    ``kw`` go to :func:`network_region_halfspaces`).

    Raises:
        ModelError: not 2-D or 3-D, or a region without interior.
    """
    from scipy.optimize import linprog
    from scipy.spatial import HalfspaceIntersection

    reg = region_or_network if isinstance(region_or_network, NetworkRegion) else \
        network_region_halfspaces(region_or_network, workflows=workflows, classes=classes, **kw)
    d = len(reg.coordinates)
    require(d in (2, 3), "coordinates", reg.coordinates, "must be 2 or 3 for vertices")
    A = np.vstack([reg.A, -np.eye(d)])
    b = np.r_[reg.b, np.zeros(d)]
    norm = np.linalg.norm(A, axis=1)
    res = linprog(np.r_[np.zeros(d), -1.0], A_ub=np.c_[A, norm], b_ub=b, bounds=[(None, None)] * d + [(0, None)],
                  method="highs")
    require(res.status == 0 and res.x[-1] > 1e-12, "region", reg.coordinates, "has no interior")
    hs = HalfspaceIntersection(np.c_[A, -b], res.x[:d])
    V = hs.intersections
    V[np.abs(V) < 1e-12 * max(1.0, np.abs(V).max())] = 0.0
    scale = np.maximum(np.abs(V).max(0), 1e-300)
    _, keep = np.unique(np.round(V / scale, 9), axis=0, return_index=True)
    V = V[np.sort(keep)]
    if d == 2:
        c = V.mean(0)
        ang = np.arctan2(V[:, 1] - c[1], V[:, 0] - c[0])
        V = V[np.argsort(ang)]
        i0 = int(np.argmin(np.abs(V).sum(1)))
        V = np.roll(V, -i0, axis=0)
    return V
