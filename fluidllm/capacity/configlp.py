"""The configuration LP of one engine (fluid static-planning problem), built with cvxpy.

A batch configuration c = (p, d, q): p prefill tokens taken from q requests and d decode tokens
(d requests, one token each), n = p + d ≤ b_max, batch time t_c = t(p, d, d·κ) with κ the mean
KV context of a decode token. With k_max: d + q ≤ k_max, and q ≥ 1 when p > 0. The engine spends
a fraction x_c of time in configuration c. A demand (per unit of scale s) of λ_p prefill tokens,
λ_d decode tokens, λ_r requests and λ_g KV token-batches per ms is sustainable at scale s when

    Σ_c x_c p_c / t_c ≥ s λ_p                  (prefill_tokens)
    Σ_c x_c d_c / t_c ≥ s λ_d                  (decode_tokens)
    Σ_c x_c q_c / t_c ≥ s λ_r                  (prefill_requests: each request needs ≥ 1 prefill slot)
    M · Σ_c x_c / t_c ≥ s λ_g                  (kv_memory: occupancy summed over batches ≤ M per batch)
    Σ_c x_c ≤ 1,  x ≥ 0                        (time)

With a resident cap R (``max_resident_requests``, vLLM's ``max_num_seqs``) a batch touches at most
R requests (d + q ≤ R, like k_max) and, by Little's law over batches, the residents' slots must
hold every request for its shortest life, ⌈v_p / b_max⌉ + v_d batches (prefill in budget-sized
pieces, then one decode token per batch starting the batch after):

    R · Σ_c x_c / t_c ≥ s λ_res                (resident_requests; λ_res = λ E[⌈v_p/b_max⌉ + v_d] per ms)

and, with memory M, every column must fit at the instant it runs: its d decoding requests hold about
d·(κ + 1) KV tokens, so d ≤ ⌊M / (κ + 1)⌋ (the ``kv_memory`` column cap). The row alone is not
enough: it counts occupancy per batch served, so it could be met by adding short prefill-only
batches while the decoders sit in memory; the cap closes that gap.

and the LP maximises s. s* > 1 means the current rates lie strictly inside the fluid region
(Li, Dai, Peng arXiv 2504.07347 Thm 2 and §6 Thm 10 for k_max; the memory row is the linear form
of Nie, Si, Zhou arXiv 2605.04595 and Ao et al. arXiv 2504.11320). It is an outer bound: the memory
row uses each request's shortest life, and chunking at batch boundaries is assumed free; the
resident row likewise (it is exact for a request's batch count only when no request waits for a
slot while a resident one idles).

Two column sets (``columns``):

* ``"any"`` — every feasible configuration: the best ANY policy could do (Theorem 2(a): the
  region; its token rate is μ* = max_n n/t(n), attained at the n that maximises it).
* ``"work-conserving"`` — only the configurations a work-conserving policy can run while work is
  backlogged: full batches (n = b_max) or, with a cap on requests per batch (k_max or R), batches
  that touch the cap's number of requests (d + q = min(k_max, R)). Under backlog a work-conserving
  policy runs nothing else (eqs. 8–9), so this LP bounds every work-conserving policy; for a
  token-count batch time with no k_max, resident or KV cap it is exact (Theorem 2(b): every
  work-conserving policy is stable below it): the token rate is b_max/t(b_max), which is BELOW μ*
  when n/t(n) peaks before the budget (a piecewise-linear knee b0 < b_max, a staircase with
  b0 ∤ b_max). With a KV cap, memory-limited batches of any size can occur under backlog, so all
  columns are kept and the bound is the "any" one.

Columns: for a token-count batch time the value of a column is linear in p along each n, so only
the extreme splits are enumerated (≤ 3 per n). For the two-feature model the LP is solved by
column generation with exact pricing over every (p, d) with p + d ≤ b_max, so it is exact too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelError
from ..model.engine import Engine

__all__ = ["Demand", "ConfigLP", "solve_config_lp", "extreme_configurations", "touch_cap",
           "work_conserving_mask", "COLUMN_SETS"]

#: the column sets of :func:`solve_config_lp` (module docstring).
COLUMN_SETS = ("any", "work-conserving")

_TOL = 1e-7


@dataclass(frozen=True)
class Demand:
    """Demand per unit of scale: tokens/ms, requests/ms, KV token-batches/ms; κ in tokens."""

    prefill_tokens_per_ms: float
    decode_tokens_per_ms: float
    requests_per_ms: float
    kv_token_batches_per_ms: float = 0.0
    decode_context: float = 0.0
    resident_batches_per_ms: float = 0.0

    @property
    def tokens_per_ms(self) -> float:
        return self.prefill_tokens_per_ms + self.decode_tokens_per_ms

    @property
    def is_zero(self) -> bool:
        return self.tokens_per_ms == 0 and self.requests_per_ms == 0


@dataclass(frozen=True, eq=False)
class ConfigLP:
    """Solution of the configuration LP.

    Attributes:
        max_scale: s*; ``inf`` for zero demand.
        status: cvxpy status string ("optimal", or the failure).
        solver: the solver used.
        configurations: (C, 3) int array of (p, d, q) columns in the final LP.
        batch_ms: (C,) batch times of the columns.
        fractions: (C,) optimal time fractions x.
        duals: dual value of each named constraint (shadow price on s).
        columns_priced: configurations examined by pricing (column generation), else C.
        problem: the cvxpy problem, for inspection or extension.
    """

    max_scale: float
    status: str
    solver: str
    configurations: np.ndarray
    batch_ms: np.ndarray
    fractions: np.ndarray
    duals: dict[str, float]
    columns_priced: int
    problem: Any = field(repr=False, default=None)

    def support(self, tol: float = 1e-7) -> list[dict[str, float]]:
        """Configurations used at the optimum: p, d, q, batch_ms and time fraction."""
        out = []
        for i in np.flatnonzero(self.fractions > tol):
            p, d, q = (int(v) for v in self.configurations[i])
            out.append({"prefill_tokens": p, "decode_tokens": d, "prefill_requests": q,
                        "batch_ms": float(self.batch_ms[i]), "time_fraction": float(self.fractions[i])})
        return sorted(out, key=lambda c: -c["time_fraction"])


def touch_cap(engine: Engine) -> int | None:
    """Most requests one batch may give tokens to: min(k_max, R) of ``max_batch_requests`` and
    ``max_resident_requests`` (None: neither is set). A batch only serves resident requests, so the
    resident cap bounds it like k_max does."""
    caps = [c for c in (engine.max_batch_requests, engine.max_resident_requests) if c is not None]
    return min(caps) if caps else None


def work_conserving_mask(engine: Engine, cfg: np.ndarray) -> np.ndarray:
    """Which (p, d, q) columns a work-conserving policy may run while work is backlogged: full
    batches, or batches touching the per-batch request cap; every column with a KV cap (module
    docstring, ``columns="work-conserving"``)."""
    p, d, q = cfg[:, 0], cfg[:, 1], cfg[:, 2]
    ok = (p + d) == engine.token_budget
    cap = touch_cap(engine)
    if cap is not None:
        ok = ok | (d + q >= cap)
    if engine.kv_capacity_tokens is not None:
        ok = np.ones_like(ok, dtype=bool)
    return ok


def _q_max(p: np.ndarray, d: np.ndarray, k_max: int | None) -> np.ndarray:
    """Most prefill requests a (p, d) batch may hold (more slots cost nothing in the LP)."""
    q = p.copy()
    if k_max is not None:
        q = np.minimum(q, k_max - d)
    return np.where(p > 0, q, 0)


def decode_cap(engine: Engine, decode_context: float) -> int | None:
    """Most decoding requests one batch can hold in KV memory: ⌊M / (κ + 1)⌋ (None: no memory limit)."""
    if engine.kv_capacity_tokens is None:
        return None
    return int(engine.kv_capacity_tokens // (decode_context + 1.0))


def _feasible(p: np.ndarray, d: np.ndarray, k_max: int | None, d_cap: int | None = None) -> np.ndarray:
    ok = (p + d >= 1)
    if k_max is not None:
        ok &= np.where(p > 0, d + 1 <= k_max, d <= k_max)
    if d_cap is not None:
        ok &= d <= d_cap
    return ok


def extreme_configurations(engine: Engine, decode_context: float = 0.0) -> np.ndarray:
    """The (p, d, q) columns that suffice for a token-count batch time: for each n ≤ b_max the
    prefill-only split, the decode-only split (n within k_max and the memory cap) and the mixed
    split with the most decodes allowed beside one prefill request (d = k_max − 1: vertex C of
    Theorem 10; or the memory cap)."""
    b, K = engine.token_budget, touch_cap(engine)
    dcap = decode_cap(engine, decode_context)
    n = np.arange(1, b + 1)
    caps = [c for c in (K, dcap) if c is not None]
    dec_max = min(caps) if caps else b
    mix_max = min([c for c in ((K - 1) if K is not None else None, dcap) if c is not None], default=b)
    cols = [np.stack([n, 0 * n], 1), np.stack([0 * n[n <= dec_max], n[n <= dec_max]], 1)]
    if mix_max >= 1:
        m = n[n >= 2]
        d = np.minimum(m - 1, mix_max)
        cols.append(np.stack([m - d, d], 1))
    pd = np.unique(np.concatenate(cols), axis=0)
    pd = pd[_feasible(pd[:, 0], pd[:, 1], K, dcap)]
    q = _q_max(pd[:, 0], pd[:, 1], K)
    return np.column_stack([pd, q]).astype(np.int64)


def _times(engine: Engine, cfg: np.ndarray, kappa: float) -> np.ndarray:
    p, d = cfg[:, 0].astype(float), cfg[:, 1].astype(float)
    return np.asarray(engine.batch_time.batch_ms(p, d, d * kappa), dtype=float)


def _solve(engine: Engine, dem: Demand, cfg: np.ndarray, t: np.ndarray, solver: str | None,
           base: Demand | None = None):
    import cvxpy as cp

    base = base or Demand(0.0, 0.0, 0.0, 0.0)

    C = cfg.shape[0]
    x = cp.Variable(C, nonneg=True, name="time_fraction")
    s = cp.Variable(name="scale")
    inv_t = 1.0 / t
    rows = {
        "prefill_tokens": (cfg[:, 0] * inv_t, base.prefill_tokens_per_ms, dem.prefill_tokens_per_ms),
        "decode_tokens": (cfg[:, 1] * inv_t, base.decode_tokens_per_ms, dem.decode_tokens_per_ms),
        "prefill_requests": (cfg[:, 2] * inv_t, base.requests_per_ms, dem.requests_per_ms),
    }
    if engine.kv_capacity_tokens is not None:
        rows["kv_memory"] = (engine.kv_capacity_tokens * inv_t, base.kv_token_batches_per_ms,
                             dem.kv_token_batches_per_ms)
    if engine.max_resident_requests is not None:
        rows["resident_requests"] = (engine.max_resident_requests * inv_t, base.resident_batches_per_ms,
                                     dem.resident_batches_per_ms)
    cons = {name: (a @ x >= b0 + s * rhs) for name, (a, b0, rhs) in rows.items()}
    cons["time"] = cp.sum(x) <= 1
    prob = cp.Problem(cp.Maximize(s), list(cons.values()))
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
            duals = {k: float(np.asarray(c.dual_value).item()) for k, c in cons.items()}
            return prob, name, float(s.value), np.maximum(np.asarray(x.value, dtype=float), 0.0), duals
        errors.append(f"{name}: status {prob.status}")
    raise ModelError(f"engines.{engine.name}", "configuration LP", "solver failure: " + "; ".join(errors))


def solve_config_lp(engine: Engine, demand: Demand, *, solver: str | None = None,
                    max_rounds: int = 200, base: Demand | None = None, columns: str = "any") -> ConfigLP:
    """Maximise the scale s of ``demand`` that ``engine`` sustains (see module docstring); with
    ``base``, the demand is ``base + s·demand`` (``base`` fixed, e.g. the other classes' rates).
    ``columns``: ``"any"`` (the best any policy could do) or ``"work-conserving"`` (what a
    work-conserving policy can do under backlog; module docstring).

    Raises:
        ModelError: an unknown ``columns``; a solver failure (status and messages named), or column
            generation that does not converge within ``max_rounds``.
    """
    if columns not in COLUMN_SETS:
        raise ModelError("columns", columns, f"must be one of {list(COLUMN_SETS)}")
    if demand.is_zero:
        empty = np.zeros((0, 3), dtype=np.int64)
        return ConfigLP(float("inf"), "zero demand", "none", empty, np.zeros(0), np.zeros(0), {}, 0)
    # Solve for a direction of unit size so that s* is O(capacity / |direction|) ~ 1 whatever the
    # rates' magnitude (solver tolerances are absolute); rescale s and the duals after.
    f = max(demand.prefill_tokens_per_ms, demand.decode_tokens_per_ms, demand.requests_per_ms,
            demand.kv_token_batches_per_ms / max(1.0, float(engine.kv_capacity_tokens or 1)),
            demand.resident_batches_per_ms / max(1.0, float(engine.max_resident_requests or 1)))
    unit = Demand(demand.prefill_tokens_per_ms / f, demand.decode_tokens_per_ms / f, demand.requests_per_ms / f,
                  demand.kv_token_batches_per_ms / f, demand.decode_context, demand.resident_batches_per_ms / f)
    res = _solve_unit(engine, unit, solver=solver, max_rounds=max_rounds, base=base, columns=columns)
    return ConfigLP(res.max_scale / f, res.status, res.solver, res.configurations, res.batch_ms, res.fractions,
                    res.duals, res.columns_priced, res.problem)


def _columns_of(engine: Engine, cfg: np.ndarray, columns: str) -> np.ndarray:
    return cfg if columns == "any" else cfg[work_conserving_mask(engine, cfg)]


def _solve_unit(engine: Engine, demand: Demand, *, solver: str | None, max_rounds: int,
                base: Demand | None, columns: str = "any") -> ConfigLP:
    K = touch_cap(engine)
    dcap = decode_cap(engine, demand.decode_context)
    if engine.batch_time.tokens_only:
        cfg = _columns_of(engine, extreme_configurations(engine, demand.decode_context), columns)
        t = _times(engine, cfg, demand.decode_context)
        prob, name, s, x, duals = _solve(engine, demand, cfg, t, solver, base)
        return ConfigLP(s, prob.status, name, cfg, t, x, duals, cfg.shape[0], prob)
    # Column generation: start from the token-count extremes, then add the most improving
    # configuration found by pricing every (p, d) exactly, until none has positive reduced cost.
    b = engine.token_budget
    cfg = _columns_of(engine, extreme_configurations(engine, demand.decode_context), columns)
    priced = 0
    for _ in range(max_rounds):
        t = _times(engine, cfg, demand.decode_context)
        prob, name, s, x, duals = _solve(engine, demand, cfg, t, solver, base)
        best_val, best = 0.0, None
        y0 = duals["time"]
        for p0 in range(0, b + 1, 256):
            p = np.arange(p0, min(p0 + 256, b + 1))[:, None]
            d = np.arange(0, b + 1)[None, :]
            P, D = np.broadcast_arrays(p, d)
            ok = _feasible(P, D, K, dcap) & (P + D <= b)
            if not ok.any():
                continue
            P, D = P[ok], D[ok]
            Q = _q_max(P, D, K)
            if columns != "any":
                keep = work_conserving_mask(engine, np.column_stack([P, D, Q]))
                P, D, Q = P[keep], D[keep], Q[keep]
                if not P.size:
                    continue
            tt = np.asarray(engine.batch_time.batch_ms(P, D, D * demand.decode_context), dtype=float)
            gain = (duals["prefill_tokens"] * P + duals["decode_tokens"] * D + duals["prefill_requests"] * Q
                    + duals.get("kv_memory", 0.0) * (engine.kv_capacity_tokens or 0)
                    + duals.get("resident_requests", 0.0) * (engine.max_resident_requests or 0)) / tt - y0
            priced += P.size
            i = int(np.argmax(gain))
            if gain[i] > best_val:
                best_val, best = float(gain[i]), (int(P[i]), int(D[i]), int(Q[i]))
        # Stop when no column prices out beyond the solver's dual accuracy, or the best one is
        # already in the LP (its positive reduced cost is then round-off).
        known = best is not None and bool(np.any(np.all(cfg == np.array(best), axis=1)))
        if best is None or best_val <= _TOL * max(1.0, abs(y0)) or known:
            return ConfigLP(s, prob.status, name, cfg, t, x, duals, priced, prob)
        cfg = np.vstack([cfg, np.array(best, dtype=np.int64)[None, :]])
    raise ModelError(f"engines.{engine.name}", "configuration LP",
                     f"column generation did not converge in {max_rounds} rounds")
