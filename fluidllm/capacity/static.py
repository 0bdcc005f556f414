"""Capacity of request-level batching (FasterTransformer) by a renewal-reward argument.

Both FasterTransformer rules — the real library's static batching and the paper's stylised
decode-first rule without mixing — run, once the queue is long, the same *cycle*: a group of
waiting requests whose whole prompts fit the budget (FCFS while Σ v_p <= b_max and, with a cap,
while the group has fewer than k_max members) runs one prefill batch of S = Σ v_p tokens, then
decode-only batches until every member has finished: batch j holds N_j = #{members with v_d >= j}
tokens. Under saturation the cycles form a Markov renewal process (a group's first member is the
request that did not fit in the previous group), so the long-run throughput is

    λ* = E_π[G] / E_π[T],   T = t(S) + Σ_{j >= 1} t(N_j)   (t(0) := 0),

with π the stationary law of the carried-over first prompt; the queue is stable below λ* and
unstable above (bulk service with a greedy rule: the fluid limit drains iff λ E[T] < E[G]). A prompt
longer than b_max never fits: the policy's capacity is then 0 (unless prompts are split).

:func:`static_batching_rate` computes λ* exactly for independent (v_p, v_d) laws and a token-count
batch time (a dynamic program over (group size, prompt sum) and a power iteration for π);
:func:`static_batching_rate_mc` estimates it by simulating saturated cycles (any joint law, any batch
time), with a confidence interval from independent batches of cycles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..errors import require
from ..model.engine import Engine
from ..model.lengths import Independent, JointLengths

__all__ = ["StaticRate", "static_batching_rate", "static_batching_rate_mc"]


@dataclass(frozen=True)
class StaticRate:
    """Saturated throughput of request-level batching.

    Attributes:
        rate_per_s: λ* in requests/s (0 if some prompt can never fit).
        mean_group: E_π[G] requests per cycle; mean_cycle_ms: E_π[T].
        method: ``exact`` or ``monte-carlo``; interval: 95 % interval of rate_per_s (Monte Carlo).
        unschedulable_fraction: P(v_p > b_max).
    """

    rate_per_s: float
    mean_group: float
    mean_cycle_ms: float
    method: str
    interval: tuple[float, float] | None
    unschedulable_fraction: float

    def to_dict(self) -> dict[str, object]:
        return {"rate_per_s": self.rate_per_s, "mean_group": self.mean_group, "mean_cycle_ms": self.mean_cycle_ms,
                "method": self.method, "interval": None if self.interval is None else list(self.interval),
                "unschedulable_fraction": self.unschedulable_fraction}


def _t(engine: Engine) -> np.ndarray:
    """t[n] for n = 0..b_max, with t[0] = 0 (no batch)."""
    b = engine.token_budget
    return np.concatenate([[0.0], np.asarray(engine.batch_time.tokens_ms(np.arange(1, b + 1)), dtype=float)])


def static_batching_rate(engine: Engine, lengths: JointLengths, *, tol: float = 1e-13) -> StaticRate:
    """Exact λ* of request-level batching for independent (v_p, v_d) and a token-count batch time.

    Raises:
        ModelError: a joint law that is not :class:`Independent`, or a batch time that depends on
            more than the token count (use :func:`static_batching_rate_mc`).
    """
    require(isinstance(lengths, Independent), "lengths", type(lengths).__name__,
            "must be Independent(prefill, decode) for the exact rate; use static_batching_rate_mc")
    require(engine.batch_time.tokens_only, "batch_time", engine.batch_time.kind,
            "must be a function of the token count for the exact rate; use static_batching_rate_mc")
    b = engine.token_budget
    kmax = engine.max_requests_per_batch
    t = _t(engine)
    ks = np.arange(0, b + 1)
    pp = np.asarray(lengths.prefill.pmf(ks), dtype=float)          # P(v_p = k), k = 0..b
    pp[0] = 0.0
    over = max(0.0, 1.0 - float(pp.sum()))
    if over > 1e-12:
        return StaticRate(0.0, 0.0, math.inf, "exact", None, over)
    tail = np.concatenate([np.cumsum(pp[::-1])[::-1][1:], [0.0]])  # tail[s] = P(v_p > s)
    # Decode: E[Σ_j t(N_j) | G = g], N_j ~ Binomial(g, q_j), q_j = P(v_d >= j).
    J = int(lengths.decode.support_upto(tol))
    q = 1.0 - np.cumsum(np.asarray(lengths.decode.pmf(np.arange(0, J + 1)), dtype=float))[:-1]  # q_j, j = 1..J
    q = np.clip(q, 0.0, 1.0)
    pmin = int(np.flatnonzero(pp)[0])
    kmax = min(kmax, b // pmin)              # no group can be larger
    dec_ms = np.zeros(kmax + 1)
    for g in range(1, kmax + 1):
        n = np.arange(0, g + 1)
        pm = stats.binom.pmf(n[None, :], g, q[:, None])           # (J, g+1)
        dec_ms[g] = float((pm * t[np.minimum(n, b)][None, :]).sum())
    # Stationary law of the first prompt of a group (power iteration over the carry law).
    mu = pp.copy()
    for _ in range(500):
        h = mu.copy()                       # h[s]: P(group of the current size has prompt sum s, still open)
        EG = ET = 0.0
        nxt = np.zeros(b + 1)
        for g in range(1, kmax + 1):
            if not h.any():
                break
            if g == kmax:
                close = h
            else:
                close = h * tail[::-1]          # P(next prompt > b - s)
            m = float(close.sum())
            EG += g * m
            ET += float((close * t).sum()) + m * dec_ms[g]
            # The prompt that did not fit starts the next group: x > b - s (or any x at k_max).
            if g == kmax:
                nxt += m * pp
            else:
                # x ~ pp restricted to x > b - s: weight close[s]/tail[b-s] on every x > b - s.
                w = np.where(tail[::-1] > 0, close / np.where(tail[::-1] > 0, tail[::-1], 1.0), 0.0)
                # Σ_s w[s]·1{x > b - s} = Σ_{s > b - x} w[s] = suffix sums of w.
                suffix = np.concatenate([np.cumsum(w[::-1])[::-1], [0.0]])   # suffix[k] = Σ_{s>=k} w[s]
                nxt += pp * suffix[np.clip(b - np.arange(b + 1) + 1, 0, b + 1)]
            if g < kmax:                        # one more prompt that fits: new sum <= b
                h = np.convolve(h, pp)[: b + 1]
        nxt /= nxt.sum()
        if np.abs(nxt - mu).sum() < 1e-12:
            mu = nxt
            break
        mu = nxt
    return StaticRate(EG / ET * 1000.0, EG, ET, "exact", None, 0.0)


def static_batching_rate_mc(engine: Engine, lengths: JointLengths, *, cycles: int = 20000, batches: int = 20,
                            seed: int = 0) -> StaticRate:
    """Monte-Carlo λ* of request-level batching: saturated cycles with any joint law and batch time.

    ``cycles`` cycles in ``batches`` independent groups (ratio estimator per group; 95 % t-interval).
    """
    b = engine.token_budget
    kmax = engine.max_requests_per_batch
    rng = np.random.default_rng(seed)
    n_req = cycles * max(1, min(kmax, b)) + 16
    vp, vd = lengths.sample(rng, n_req)
    vp = np.asarray(vp)
    vd = np.asarray(vd)
    over = float(np.mean(vp > b))
    if over > 0:
        return StaticRate(0.0, 0.0, math.inf, "monte-carlo", None, over)
    G = np.zeros(cycles)
    T = np.zeros(cycles)
    i = 0
    for c in range(cycles):
        s, g = 0, 0
        while i + g < n_req and g < kmax and s + vp[i + g] <= b:
            s += int(vp[i + g])
            g += 1
        d = vd[i:i + g]
        i += g
        P, D, K = float(s), 0.0, 0.0
        ms = float(np.asarray(engine.batch_time.batch_ms(P, D, K)))
        if d.size and d.max() > 0:
            j = np.arange(1, int(d.max()) + 1)
            N = (d[None, :] >= j[:, None]).sum(axis=1)
            ms += float(np.sum(np.asarray(engine.batch_time.batch_ms(np.zeros_like(N), N, 0), dtype=float)))
        G[c], T[c] = g, ms
    rates = np.array([Gb.sum() / Tb.sum() for Gb, Tb in zip(np.array_split(G, batches), np.array_split(T, batches))])
    m, s = float(rates.mean()), float(rates.std(ddof=1) / math.sqrt(batches))
    h = float(stats.t.ppf(0.975, batches - 1)) * s
    return StaticRate(G.sum() / T.sum() * 1000.0, float(G.mean()), float(T.mean()), "monte-carlo",
                      ((m - h) * 1000.0, (m + h) * 1000.0), 0.0)
