"""Stability conditions of a network of batched engines as sympy relations in the exogenous rates.

Symbols: α_k (requests/s) for every class k (``alpha_<class>``); the model's values are kept for
evaluation. Visit rates solve λ = α + Pᵀλ, i.e. λ = (I − Pᵀ)⁻¹ α (exact rational arithmetic for
the routing matrix), and engine e serves μ_e = 1000 · b_max / t(b_max) tokens/s (Li, Dai, Peng,
arXiv 2504.07347, Thm 2; a full batch every t(b_max) ms while the engine has fluid backlog).

* Per-engine load (necessary for every policy; sufficient for work-conserving policies on DAG and
  fork-join routing, Li, Dai, Peng v3 §5):

      ρ_e = Σ_{k on e} λ_k f_k,e (m_p,k + m_d,k) / μ_e < 1,

  f_k,e the fixed fraction of a replica set's traffic sent to e (round-robin / random: equal;
  weighted: the weights). A class behind join-the-shortest-queue has no fixed split: its engines
  form a pool S, and the condition written is the pooled one,
  Σ_{e∈S} (fixed-split load on e) + Σ_{JSQ classes on S} λ_k m_k < Σ_{e∈S} μ_e — necessary, and
  sufficient when the pool's engines serve only the pool's classes.
* Virtual station (Rybko–Stolyar pattern under static priority). Let h1 be the top-priority class of
  engine e1 and h2 that of engine e2 ≠ e1, neither with exogenous arrivals, such that every class
  feeding h1 is served on e2 below h2 and every class feeding h2 is served on e1 below h1. While
  h2 has fluid, e2 gives nothing to h1's feeders (a token-budget engine gives all μ_e to its top
  class while that class has fluid: a Θ(n) backlog fills every batch), so h1 receives nothing, and
  symmetrically; h1 and h2 form a "virtual station" that cannot serve at both engines at once.
  Fluid stability then also requires

      λ_h1 m_h1 / μ_e1 + λ_h2 m_h2 / μ_e2 < 1

  (Botvich–Zamyatin 1992; Dai–Vande Vate 1996: for the two-engine Rybko–Stolyar network this with
  ρ_e < 1 is necessary and sufficient). Batched model: m_h = m_p,h + m_d,h tokens, μ_e tokens/s.
  Rybko–Stolyar of the paper notes (μ_e = 768 000 tokens/s, m_A2 = m_B2 = 544, λ = ρ·768 000/608):
  the value is 2 · 544 ρ / 608 = 1.6105 at ρ = 0.9 (violated: unstable under priority to the
  exiting classes), and the boundary is ρ = 608/1088 = 0.5588. The fluid trajectories of
  :mod:`fluidllm.fluid.network` flip from draining to diverging at this boundary (tested).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import sympy as sp

from ..errors import finite_number, require
from ..model.classes import ClassNetwork

__all__ = ["VirtualStation", "NetworkConditions", "network_conditions"]


def _q(x: float) -> sp.Expr:
    return sp.nsimplify(float(x), rational=True)


@dataclass(frozen=True, eq=False)
class VirtualStation:
    """A virtual-station pair: ``classes`` (h1, h2) on ``engines`` (e1, e2), its load expression
    ``value`` (in the α symbols) and the ``condition`` value < 1."""

    classes: tuple[str, str]
    engines: tuple[str, str]
    value: sp.Expr
    condition: sp.Rel


@dataclass(frozen=True, eq=False)
class NetworkConditions:
    """Stability conditions of a class network (see the module docstring).

    Attributes:
        alpha: class name -> α_k symbol (requests/s).
        values: α symbol -> the network's rate (requests/s).
        visit_rates: class name -> λ_k expression (requests/s).
        service_tokens_per_s: engine -> μ_e (exact rational of the float).
        engine_loads: engine (or ``"pool:e1+e2"`` for a JSQ pool) -> ρ expression.
        engine_conditions: the same keys -> ρ < 1.
        virtual_stations: the virtual-station pairs found for ``policies`` (none without priority).
    """

    alpha: dict[str, sp.Symbol]
    values: dict[sp.Symbol, float]
    visit_rates: dict[str, sp.Expr]
    service_tokens_per_s: dict[str, sp.Expr]
    engine_loads: dict[str, sp.Expr]
    engine_conditions: dict[str, sp.Rel]
    virtual_stations: tuple[VirtualStation, ...]

    def _subs(self, rates: Mapping[str, float] | None, load: float) -> dict[sp.Symbol, float]:
        vals = dict(self.values)
        for name, r in (rates or {}).items():
            require(name in self.alpha, f"rates.{name}", r, f"must name a class: {list(self.alpha)}")
            vals[self.alpha[name]] = finite_number(r, f"rates.{name}", minimum=0)
        return {s: v * load for s, v in vals.items()}

    def evaluate(self, rates: Mapping[str, float] | None = None, *, load: float = 1.0) -> dict[str, Any]:
        """Numbers: ρ per engine (pool), each virtual-station value, and whether each condition
        and all of them hold, at ``rates`` (class -> req/s; default the network's) × ``load``."""
        sub = self._subs(rates, finite_number(load, "load", minimum=0))
        rho = {e: float(x.subs(sub)) for e, x in self.engine_loads.items()}
        vs = {f"{v.classes[0]}+{v.classes[1]}": float(v.value.subs(sub)) for v in self.virtual_stations}
        return {"engine_loads": rho, "virtual_stations": vs,
                "engines_ok": all(r < 1 for r in rho.values()), "virtual_stations_ok": all(x < 1 for x in vs.values()),
                "holds": all(r < 1 for r in rho.values()) and all(x < 1 for x in vs.values())}

    def holds(self, rates: Mapping[str, float] | None = None, *, load: float = 1.0) -> bool:
        """Whether every condition holds (strictly)."""
        return bool(self.evaluate(rates, load=load)["holds"])

    def max_load(self) -> dict[str, float]:
        """The factor by which the network's rates can be scaled until each condition binds
        (every expression is linear in α): key -> 1 / value."""
        sub = self._subs(None, 1.0)
        out = {f"rho[{e}]": float(1 / x.subs(sub)) if float(x.subs(sub)) > 0 else float("inf")
               for e, x in self.engine_loads.items()}
        for v in self.virtual_stations:
            val = float(v.value.subs(sub))
            out[f"virtual[{v.classes[0]}+{v.classes[1]}]"] = 1 / val if val > 0 else float("inf")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"engine_loads": {e: str(x) for e, x in self.engine_loads.items()},
                "engine_conditions": {e: str(x) for e, x in self.engine_conditions.items()},
                "virtual_stations": [{"classes": list(v.classes), "engines": list(v.engines), "value": str(v.value),
                                      "condition": str(v.condition)} for v in self.virtual_stations],
                "evaluated": self.evaluate(), "max_load": self.max_load()}


def _priority_ranks(cn: ClassNetwork, policies: Mapping[str, Any] | None) -> dict[str, list[int]]:
    """engine -> class indices highest first, for engines under ("priority", order)."""
    out: dict[str, list[int]] = {}
    for e, spec in (policies or {}).items():
        if isinstance(spec, (tuple, list)) and len(spec) == 2 and spec[0] == "priority":
            on = [k for k, c in enumerate(cn.classes) if e in c.engines]
            named = [cn.index(n) for n in spec[1]]
            for k in named:
                require(k in on, f"policies.{e}.order", cn.classes[k].name, "must name a class served on the engine")
            out[e] = named + [k for k in on if k not in named]
    return out


def network_conditions(cn: ClassNetwork, policies: Mapping[str, Any] | None = None) -> NetworkConditions:
    """Per-engine (and JSQ-pool) load conditions and, for engines under static priority
    (``policies[e] = ("priority", [classes, highest first])``), the virtual-station conditions.

    Raises:
        ModelError: a network the fluid model rejects (see :func:`fluidllm.fluid.network.engine_loads`)
            or a priority order naming a class not served on its engine.
    """
    require(isinstance(cn, ClassNetwork), "network", cn, "must be a fluidllm ClassNetwork")
    K = len(cn.classes)
    names = cn.class_names
    alpha = {n: sp.Symbol(f"alpha_{n}", nonnegative=True) for n in names}
    avec = sp.Matrix([alpha[n] for n in names])
    P = sp.Matrix(K, K, lambda i, j: _q(cn.routing[i, j]))
    lam = (sp.eye(K) - P.T).LUsolve(avec)
    lam = [sp.simplify(x) for x in lam]
    m = [_q(c.mean_tokens) for c in cn.classes]
    used = [e for e in cn.engines if any(e in c.engines for c in cn.classes)]
    mu: dict[str, sp.Expr] = {}
    for e in used:
        eng = cn.engines[e]
        require(eng.batch_time.tokens_only, f"engines.{e}.batch_time.kind", eng.batch_time.kind,
                "must be a function of the token count")
        mu[e] = _q(1000.0 * eng.token_budget / float(eng.batch_time.tokens_ms(eng.token_budget)))
    fixed = {e: sp.Integer(0) for e in used}
    pools: dict[tuple[str, ...], sp.Expr] = {}
    for k, c in enumerate(cn.classes):
        if len(c.engines) == 1:
            fixed[c.engines[0]] += lam[k] * m[k]
        elif c.routing in ("round-robin", "random", "weighted"):
            w = [sp.Integer(1)] * len(c.engines) if c.routing != "weighted" else [_q(x) for x in c.weights]
            for e, wi in zip(c.engines, w):
                fixed[e] += lam[k] * m[k] * wi / sum(w)
        else:
            S = tuple(sorted(c.engines, key=used.index))
            pools[S] = pools.get(S, sp.Integer(0)) + lam[k] * m[k]
    loads: dict[str, sp.Expr] = {}
    pooled = {e for S in pools for e in S}
    for e in used:
        if e not in pooled:
            loads[e] = sp.nsimplify(fixed[e] / mu[e])
    for S, jsq in pools.items():
        loads["pool:" + "+".join(S)] = sp.nsimplify((jsq + sum(fixed[e] for e in S)) / sum(mu[e] for e in S))
    conds = {e: sp.StrictLessThan(x, 1) for e, x in loads.items()}
    ranks = _priority_ranks(cn, policies)
    P_num = np.asarray(cn.routing)
    vs: list[VirtualStation] = []
    single = {k: c.engines[0] for k, c in enumerate(cn.classes) if len(c.engines) == 1}
    tops = {e: r[0] for e, r in ranks.items() if r}
    for e1, h1 in tops.items():
        for e2, h2 in tops.items():
            if used.index(e1) >= used.index(e2) or h1 not in single or h2 not in single:
                continue

            def blocked(h: int, e_other: str, top_other: int) -> bool:
                feeders = [l for l in range(K) if P_num[l, h] > 0]
                r = ranks[e_other]
                return (cn.arrival_rates[h] == 0 and bool(feeders)
                        and all(single.get(l) == e_other and r.index(l) > r.index(top_other) for l in feeders))

            if blocked(h1, e2, h2) and blocked(h2, e1, h1):
                val = sp.nsimplify(lam[h1] * m[h1] / mu[e1] + lam[h2] * m[h2] / mu[e2])
                vs.append(VirtualStation((names[h1], names[h2]), (e1, e2), val, sp.StrictLessThan(val, 1)))
    values = {alpha[n]: float(cn.arrival_rates[k]) for k, n in enumerate(names)}
    return NetworkConditions(alpha=alpha, values=values, visit_rates=dict(zip(names, lam)),
                             service_tokens_per_s=mu, engine_loads=loads, engine_conditions=conds,
                             virtual_stations=tuple(vs))
