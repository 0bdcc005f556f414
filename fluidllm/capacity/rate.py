"""The maximum token rate of one engine: μ* = max over 1 ≤ n ≤ b_max of n / t(n).

Li, Dai, Peng (arXiv 2504.07347), Theorem 2: no scheduler serves more than μ* tokens per unit
time, and every work-conserving one is stable when λ(m_p + m_d) < μ* (there with μ* = b_max/t_bmax,
which equals this maximum for the staircase when b0 divides b_max). No monotonicity of n/t(n) is
assumed: the maximum is taken over every n and its maximiser reported.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ModelError, integer
from ..model.batchtime import BatchTime

__all__ = ["TokenRate", "max_token_rate", "token_rate_curve"]


@dataclass(frozen=True)
class TokenRate:
    """μ* in tokens/ms and tokens/s, the batch size that attains it, and its batch time."""

    tokens_per_ms: float
    argmax_tokens: int
    batch_ms: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_ms * 1000.0


def token_rate_curve(batch_time: BatchTime, token_budget: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, n / t(n)) for n = 1..token_budget, in tokens and tokens/ms.

    Raises:
        ModelError: token_budget < 1, or a composition-dependent (two-feature) batch time.
    """
    b = integer(token_budget, "token_budget", minimum=1)
    if not batch_time.tokens_only:
        raise ModelError("batch_time.kind", batch_time.kind,
                         "depends on the batch composition: its capacity comes from the configuration LP")
    n = np.arange(1, b + 1)
    return n, n / batch_time.tokens_ms(n)


def max_token_rate(batch_time: BatchTime, token_budget: int) -> TokenRate:
    """μ* = max_{1 ≤ n ≤ b_max} n / t(n) by exhaustive evaluation (ties: the smallest n).

    Raises:
        ModelError: as :func:`token_rate_curve`.
    """
    n, r = token_rate_curve(batch_time, token_budget)
    i = int(np.argmax(r))
    return TokenRate(float(r[i]), int(n[i]), float(batch_time.tokens_ms(n[i])))


def max_token_rate_mixed(engine, decode_context: float) -> TokenRate:
    """μ* for a composition-dependent batch time: max over feasible (p, d), p + d ≤ b_max, of
    (p + d) / t(p, d, d·κ) at mean decode KV context κ = ``decode_context`` tokens."""
    from .configlp import _feasible, decode_cap, touch_cap

    b, K = engine.token_budget, touch_cap(engine)
    dcap = decode_cap(engine, decode_context)
    best = TokenRate(0.0, 0, 0.0)
    for p0 in range(0, b + 1, 256):
        P, D = np.meshgrid(np.arange(p0, min(p0 + 256, b + 1)), np.arange(b + 1), indexing="ij")
        ok = _feasible(P, D, K, dcap) & (P + D <= b)
        if not ok.any():
            continue
        P, D = P[ok].astype(float), D[ok].astype(float)
        t = np.asarray(engine.batch_time.batch_ms(P, D, D * decode_context), dtype=float)
        r = (P + D) / t
        i = int(np.argmax(r))
        if r[i] > best.tokens_per_ms:
            best = TokenRate(float(r[i]), int(P[i] + D[i]), float(t[i]))
    return best
