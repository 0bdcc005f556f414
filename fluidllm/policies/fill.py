"""The one fill primitive every built-in policy is made of, vectorized over replications.

All of the paper's rules (Li, Dai, Peng, arXiv 2504.07347, §3 and Table 1) fill a batch by
walking requests in FCFS order and giving each a number of tokens while the token budget and the
request cap allow (``style.md``: *fill decodes*, *fill whole prefills*, *fill prefill chunks*). Over
arrays shaped (R, W) — R replications, W resident slots in FCFS order — each walk is one prefix
sum:

* a candidate slot j asks for ``x[r, j] >= 1`` tokens (0: not a candidate);
* ``before[r, j]`` = tokens asked by the candidates ahead of j (prefix sum minus x);
* chunked (``whole=False``): j gets ``min(x, budget - before)`` while that is positive — the
  walk "gives as much as fits, then stops when the batch is full";
* whole (``whole=True``): j gets all of ``x`` if ``before + x <= budget``, and the walk stops at
  the first candidate that does not fit (so nobody behind it is served either);
* a cap on requests per batch (k_max) admits the first ``slots`` candidates only.

Decode fill is the chunked (equivalently whole) fill with ``x = 1`` for every decoding request.
"""
from __future__ import annotations

from typing import Any

from ..sim.backend import Backend

__all__ = ["fcfs_fill"]


def fcfs_fill(B: Backend, x: Any, budget: Any, slots: Any | None, whole: bool,
              fresh: bool = False) -> tuple[Any, Any, Any]:
    """Give tokens to candidates in FCFS (slot) order.

    Args:
        B: the array backend.
        x: (R, W) int32, tokens each slot asks for (0: not a candidate).
        budget: (R,) int32 tokens left in the batch.
        slots: (R,) int32 requests that may still be added (None: no cap).
        whole: all-or-nothing per candidate, stopping at the first that does not fit.
        fresh: ``x`` is a temporary the caller will not reuse (it may be returned as ``give``).

    Returns:
        ``(give, budget_left, slots_left)``: (R, W) int32 tokens given; the (R,) budget and slots
        left (``slots_left`` is None when ``slots`` is None).
    """
    total = B.rsum(x, "int32")
    off = budget == 0        # stopped replications (and full batches) take nothing
    if bool(((total <= budget) | off).all()) and (slots is None or bool((B.rsum(x > 0, "int32") <= slots).all())):
        # Everyone asking fits in every replication (the common case for decodes): no prefix sum needed.
        # (A copy: x may be a view of the state, e.g. the prefill left, which the core then updates.)
        give = x if fresh else B.copy(x)
        if bool(off.any()):     # a few stopped rows: zero them in place (cheaper than a full where)
            rows = B.nonzero(off)[0]
            give[rows] = 0
            total = B.where(off, 0, total)
        return give, budget - total, (None if slots is None else slots - B.rsum(give > 0, "int32"))
    # Few candidates (prompts in progress are a handful among many decoders): walk a packed
    # (R, K) copy of the candidates instead of every slot; the result is the same.
    ask = x > 0
    r, c = B.nonzero2d(ask)
    nnz = int(r.shape[0])
    if nnz * 4 < x.shape[0] * x.shape[1]:
        n_r = B.bincount(r, x.shape[0])
        k = B.arange(nnz) - (B.cumsum(n_r[None, :], "int64")[0] - n_r)[r]
        X = B.zeros((x.shape[0], max(int(n_r.max()) if nnz else 0, 1)), "int32")
        X[r, k] = x[r, c]
        g, budget, slots = _fill(B, X, budget, slots, whole)
        give = B.zeros(x.shape, "int32")
        give[r, c] = g[r, k]
        return give, budget, slots
    return _fill(B, x, budget, slots, whole)


def _fill(B: Backend, x: Any, budget: Any, slots: Any | None, whole: bool) -> tuple[Any, Any, Any]:
    cx = B.cumsum(x, "int32")
    b = budget[:, None]
    if whole:
        give = B.where(cx <= b, x, 0)
    else:
        give = B.minimum(B.maximum(b - (cx - x), 0), x)
    if slots is not None:
        cnt = B.cumsum(x > 0, "int32")
        give = B.where(cnt <= slots[:, None], give, 0)
        slots = slots - B.rsum(give > 0, "int32")
    return give, budget - B.rsum(give, "int32"), slots
