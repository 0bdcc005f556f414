"""The two-dimensional token-rate region of one engine in (λ_p, λ_d) (prefill, decode tokens/s).

Theorem 10 of Li, Dai, Peng (arXiv 2504.07347 v3 §6): with a cap k_max on requests per batch the
region is no longer the triangle λ_p + λ_d < μ*. It is the down-closed convex hull of the rate
vectors (p, d)/t_c of the feasible batch configurations (see :mod:`.configlp`). This module gives
its vertices and an H-representation; the request and memory rows of the LP depend on the whole
length law, so they belong to :func:`fluidllm.capacity` rather than to this plane.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull

from ..errors import ModelError
from ..model.engine import Engine
from .configlp import _feasible, _times, decode_cap, extreme_configurations, touch_cap

__all__ = ["TokenRegion", "token_region"]


@dataclass(frozen=True, eq=False)
class TokenRegion:
    """Vertices (tokens/s, counter-clockwise from (0, 0)) and facets ``A y ≤ b`` (y ≥ 0 implied)."""

    engine: str
    vertices_per_s: np.ndarray
    A: np.ndarray
    b_per_s: np.ndarray
    vertex_configurations: list[tuple[int, int]]

    def contains(self, prefill_per_s: float, decode_per_s: float, strict: bool = True) -> bool:
        """Whether (λ_p, λ_d) lies inside (strictly, by default)."""
        y = np.array([prefill_per_s, decode_per_s])
        if np.any(y < 0):
            return False
        lhs = self.A @ y
        return bool(np.all(lhs < self.b_per_s) if strict else np.all(lhs <= self.b_per_s * (1 + 1e-12)))

    def max_scale(self, prefill_per_s: float, decode_per_s: float) -> float:
        """Largest s with s·(λ_p, λ_d) in the region (the maximum throughput along that direction)."""
        y = np.array([prefill_per_s, decode_per_s], dtype=float)
        if np.any(y < 0) or not np.any(y > 0):
            raise ModelError("direction", y.tolist(), "must be non-negative and not zero")
        lhs = self.A @ y
        pos = lhs > 0
        return float(np.min(self.b_per_s[pos] / lhs[pos]))

    def to_dict(self) -> dict:
        return {"engine": self.engine, "vertices_per_s": self.vertices_per_s.tolist(),
                "A": self.A.tolist(), "b_per_s": self.b_per_s.tolist(),
                "vertex_configurations": [list(c) for c in self.vertex_configurations]}


def token_region(engine: Engine, decode_context: float = 0.0) -> TokenRegion:
    """The (λ_p, λ_d) region of ``engine`` (tokens/s), for a token-count or two-feature batch time
    (then at mean decode KV context ``decode_context`` tokens, which also sets the KV-memory cap on
    decodes per batch). For two-feature models every
    (p, d) with p + d ≤ b_max is a candidate (b_max²/2 points), so keep b_max moderate there.
    """
    if engine.batch_time.tokens_only:
        cfg = extreme_configurations(engine, decode_context)
    else:
        b, K = engine.token_budget, touch_cap(engine)
        P, D = np.meshgrid(np.arange(b + 1), np.arange(b + 1), indexing="ij")
        ok = _feasible(P, D, K, decode_cap(engine, decode_context)) & (P + D <= b)
        cfg = np.column_stack([P[ok], D[ok], 0 * P[ok]])
    t = _times(engine, cfg, decode_context)
    pts = np.column_stack([cfg[:, 0] / t, cfg[:, 1] / t]) * 1000.0
    # Pareto-maximal points only, then the down-closure (axis projections and the origin).
    xmax, ymax = pts[:, 0].max(), pts[:, 1].max()
    cloud = np.vstack([pts, [[0.0, 0.0], [xmax, 0.0], [0.0, ymax]]])
    if xmax == 0 or ymax == 0:
        raise ModelError(f"engines.{engine.name}", "region", "is degenerate (no prefill or no decode capacity)")
    hull = ConvexHull(cloud)
    V = cloud[hull.vertices]
    # facets with outward normal pointing into the positive quadrant bound the region
    A, b = [], []
    for eq in hull.equations:
        nrm, off = eq[:2], eq[2]
        if np.all(nrm >= -1e-12) and np.any(nrm > 1e-12):
            A.append(np.maximum(nrm, 0.0))
            b.append(-off)
    A_arr, b_arr = np.array(A), np.array(b)
    scale = np.linalg.norm(A_arr, axis=1)
    A_arr, b_arr = A_arr / scale[:, None], b_arr / scale
    # counter-clockwise: the origin first, then by angle from the prefill axis
    is_origin = np.all(V == 0, axis=1)
    ang = np.where(is_origin, -1.0, np.arctan2(V[:, 1], V[:, 0]))
    V = V[np.argsort(ang, kind="stable")]
    idx = [int(np.argmin(np.abs(pts - v).sum(1))) for v in V]
    vc = [(int(cfg[i, 0]), int(cfg[i, 1])) if np.allclose(pts[i], v) else (0, 0) for i, v in zip(idx, V)]
    return TokenRegion(engine.name, V, A_arr, b_arr, vc)
