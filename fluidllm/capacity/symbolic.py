"""Closed forms with sympy: μ* for the parametric batch-time families and the stability condition.

For t(n) = c + a·⌈n/b0⌉ the rate n/t(n) rises inside each step, so the maximum over n ≤ b is at a
step end: μ* = max(J·b0 / (c + a·J), b / (c + a·⌈b/b0⌉)) with J = ⌊b/b0⌋; when b0 | b this is
b / (c + a·b/b0) (Li, Dai, Peng, arXiv 2504.07347 v3). For c + a·max(0, n − b0) the rate increases
past the knee iff c ≥ a·b0, so μ* = b / (c + a·max(0, b − b0)) then, else min(b, b0)/c. Affine: b/(c + a·b);
constant: b/c. The condition for stability of a work-conserving policy (Theorem 2) is
Σ_k λ_k (m_p,k + m_d,k) < μ*.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy as sp

from ..errors import ModelError
from ..model import batchtime as B
from ..model.engine import Engine
from ..model.workload import Workload

__all__ = ["SymbolicCapacity", "symbolic_max_token_rate", "symbolic_capacity"]


def symbolic_max_token_rate(batch_time: B.BatchTime) -> tuple[sp.Expr, dict[sp.Symbol, float]]:
    """μ*(b) in tokens/ms as a sympy expression in the family's parameters and the budget ``b``,
    with the substitution of the model's parameter values (``b`` excluded).

    Raises:
        ModelError: a batch time without a closed form (table, two-feature).
    """
    b = sp.Symbol("b", positive=True, integer=True)
    c, a = sp.Symbol("c", positive=True), sp.Symbol("a", nonnegative=True)
    if isinstance(batch_time, B.Constant):
        return b / c, {c: batch_time.c_ms}
    if isinstance(batch_time, B.Affine):
        return b / (c + a * b), {c: batch_time.c_ms, a: batch_time.a_ms}
    b0 = sp.Symbol("b0", nonnegative=True, integer=True)
    if isinstance(batch_time, B.Staircase):
        J = sp.floor(b / b0)
        expr = sp.Max(J * b0 / (c + a * J), b / (c + a * sp.ceiling(b / b0)))
        return expr, {c: batch_time.c_ms, a: batch_time.a_ms, b0: batch_time.b0}
    if isinstance(batch_time, B.PiecewiseLinear):
        expr = sp.Piecewise((b / (c + a * sp.Max(0, b - b0)), c >= a * b0), (sp.Min(b, b0) / c, True))
        return expr, {c: batch_time.c_ms, a: batch_time.a_ms, b0: batch_time.b0}
    raise ModelError("batch_time.kind", batch_time.kind,
                     "has no closed form for μ*; closed forms exist for constant, affine, piecewise-linear, staircase")


@dataclass(frozen=True, eq=False)
class SymbolicCapacity:
    """The stability condition as sympy objects and its numeric check.

    Attributes:
        mu: μ* expression (tokens/ms) in parameters and ``b``.
        condition: ``Σ λ_k (m_p,k + m_d,k) < μ*`` (λ per ms) as a sympy relational.
        values: numbers for every symbol of the model.
        mu_value: μ* evaluated from the expression (tokens/ms).
        brute_force: μ* from exhaustive max over n (tokens/ms); ``agrees`` compares the two.
    """

    mu: sp.Expr
    condition: sp.Basic
    values: dict[sp.Symbol, float]
    mu_value: float
    brute_force: float

    @property
    def agrees(self) -> bool:
        return abs(self.mu_value - self.brute_force) <= 1e-12 * max(1.0, abs(self.brute_force))

    @property
    def holds(self) -> bool:
        """Whether the condition holds at the model's numbers (rates strictly inside)."""
        return bool(self.condition.subs(self.values))

    def to_dict(self) -> dict[str, Any]:
        return {"mu_tokens_per_ms": str(self.mu), "condition": str(self.condition),
                "mu_value_tokens_per_ms": self.mu_value, "brute_force_tokens_per_ms": self.brute_force,
                "agrees": self.agrees, "holds": self.holds}


def symbolic_capacity(engine: Engine, workloads: list[Workload]) -> SymbolicCapacity:
    """Theorem 2's condition for ``workloads`` on ``engine`` in closed form, checked numerically.

    Raises:
        ModelError: no closed form for the batch time.
    """
    from .rate import max_token_rate

    mu, vals = symbolic_max_token_rate(engine.batch_time)
    b = sp.Symbol("b", positive=True, integer=True)
    vals = {**vals, b: engine.token_budget}
    load = sp.Integer(0)
    for k, w in enumerate(workloads):
        lam, mp, md = sp.symbols(f"lambda_{k} m_p{k} m_d{k}", nonnegative=True)
        load += lam * (mp + md)
        vals.update({lam: w.arrival.rate_per_ms, mp: w.lengths.mean_prefill, md: w.lengths.mean_decode})
    mu_value = float(mu.subs(vals))
    brute = max_token_rate(engine.batch_time, engine.token_budget).tokens_per_ms
    return SymbolicCapacity(mu, sp.StrictLessThan(load, mu), vals, mu_value, brute)
