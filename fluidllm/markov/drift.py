"""Foster–Lyapunov drift certificates and instability witnesses on a batch-epoch chain.

For a Lyapunov function V (default: tokens left, ``chain.tokens_left``) the one-step drift is
Δ(x) = E[V(X_1) − V(X_0) | X_0 = x] = (P V)(x) − V(x), computed exactly for every state.

Foster's criterion (positive recurrence): Δ(x) <= −ε outside a finite set F and Δ bounded on F.
On the truncated chain every set is finite, so the check is made meaningful this way: states
whose step can lose an arrival (``chain.loss_prob > 0``: the *truncation boundary*) are set apart,
since the truncation lowers their drift artificially; among the others, the *exceptional set* is
the sublevel set F = {V <= v*} with v* the largest V of a state whose drift exceeds −ε. The
certificate holds (``certified``) when F lies strictly below the boundary (v* < the smallest V of a
boundary state) and some non-boundary state lies above it: then Δ <= −ε on the whole band of the
truncated chain between F and the truncation, where it coincides with the untruncated chain. For
a work-conserving policy with bounded lengths this is the drift argument of Li, Dai, Peng (arXiv
2504.07347, Thm 2(b)): a full batch lowers V by b_max, so Δ = E[A]·E[v_p + v_d] − b_max < 0 once
V is large enough for the demand to fill the batch.

An *instability witness* is the reverse: the smallest level L such that every non-boundary state
with V >= L has drift >= +ε, a band below the truncation, and the largest one-step fall of V from
that set (so the chain needs at least (depth / fall) steps to cross the band downward). This is
evidence on the truncated chain, not a proof for the infinite one; ``truncation_mass`` of the
stationary law tells how much of the mass the truncation holds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import finite_number, require
from .chain import Chain, State, _num, stationary

__all__ = ["DriftCertificate", "InstabilityWitness", "drift", "drift_certificate", "instability_witness"]


def _values(chain: Chain, V: Callable[[State], float] | np.ndarray | None) -> np.ndarray:
    if V is None:
        return np.asarray(chain.tokens_left, dtype=float)
    if callable(V):
        v = np.array([float(V(s)) for s in chain.states])
    else:
        v = np.asarray(V, dtype=float)
        require(v.shape == (chain.n_states,), "V", f"array of shape {v.shape}",
                f"must have one value per state ({chain.n_states})")
    require(bool(np.all(np.isfinite(v))), "V", "non-finite values", "must be finite in every state")
    return v


def drift(chain: Chain, V: Callable[[State], float] | np.ndarray | None = None) -> np.ndarray:
    """Δ(x) = (P V)(x) − V(x) for every state (V default: tokens left)."""
    require(isinstance(chain, Chain), "chain", chain, "must be a Chain (see build_chain)")
    v = _values(chain, V)
    return chain.P @ v - v


@dataclass(frozen=True)
class DriftCertificate:
    """Result of :func:`drift_certificate` (see the module text).

    Attributes:
        eps: the required drift −ε.
        drift: Δ per state; V: V per state; boundary: mask of truncation-boundary states.
        n_positive: non-boundary states with Δ > −ε.
        level: v*, the largest V among them (−inf if none).
        exceptional_set_size: non-boundary states with V <= v*.
        max_drift_outside: max Δ over non-boundary states with V > v* (NaN if none).
        n_outside: how many such states.
        boundary_min_v: smallest V of a boundary state (inf if none).
        boundary_max_drift: max Δ on the boundary (distorted by the truncation; reported only).
        boundary_max_drift_untruncated: for the default V only (else NaN): max over the boundary of
            the untruncated chain's drift from the same state, Δ(x) + E[arrivals lost | x]·E[v_p + v_d]
            (a lost arrival would have added its expected tokens), exact.
        certified: v* < boundary_min_v and n_outside > 0.
    """

    policy: str
    eps: float
    n_states: int
    drift: np.ndarray = field(repr=False)
    V: np.ndarray = field(repr=False)
    boundary: np.ndarray = field(repr=False)
    n_positive: int
    level: float
    exceptional_set_size: int
    max_drift_outside: float
    n_outside: int
    boundary_min_v: float
    boundary_max_drift: float
    boundary_max_drift_untruncated: float
    certified: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: (_num(v) if isinstance(v, float) else v) for k, v in self.__dict__.items()
                if k not in ("drift", "V", "boundary")}


def _prologue(chain: Chain, V: Callable[[State], float] | np.ndarray | None, eps: float
              ) -> tuple[float, np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
    """eps checked, V per state, its drift, and the boundary (an arrival can be lost) / inner masks."""
    eps = finite_number(eps, "eps", minimum=0, strict=True)
    v = _values(chain, V) if isinstance(chain, Chain) else None
    d = drift(chain, v)
    boundary = np.asarray(chain.loss_prob) > 0
    return eps, v, d, boundary, ~boundary


def drift_certificate(chain: Chain, V: Callable[[State], float] | np.ndarray | None = None, *,
                      eps: float = 1e-6) -> DriftCertificate:
    """Check Foster's criterion state by state (module text).

    Raises:
        ModelError: a bad chain, V or eps.
    """
    eps, v, d, boundary, inner = _prologue(chain, V, eps)
    bad = inner & (d > -eps)
    level = float(v[bad].max()) if bad.any() else -math.inf
    outside = inner & (v > level)
    b_min = float(v[boundary].min()) if boundary.any() else math.inf
    n_out = int(outside.sum())
    b_untr = math.nan
    if V is None and boundary.any():
        b_untr = float((d + np.asarray(chain.lost) * chain.mean_request_tokens)[boundary].max())
    return DriftCertificate(
        policy=chain.engine.policy.name, eps=eps, n_states=chain.n_states, drift=d, V=v, boundary=boundary,
        n_positive=int(bad.sum()), level=level, exceptional_set_size=int((inner & (v <= level)).sum()),
        max_drift_outside=float(d[outside].max()) if n_out else math.nan, n_outside=n_out,
        boundary_min_v=b_min, boundary_max_drift=float(d[boundary].max()) if boundary.any() else math.nan,
        boundary_max_drift_untruncated=b_untr, certified=bool(level < b_min and n_out > 0))


@dataclass(frozen=True)
class InstabilityWitness:
    """Result of :func:`instability_witness` (see the module text).

    Attributes:
        level: L, the smallest V with Δ >= ε on every non-boundary state with V >= L (inf if none).
        n_states_in_set: non-boundary states with V >= L.
        min_drift_in_set: min Δ over them (NaN if none).
        max_one_step_fall: max over them and their successors y of V(x) − V(y).
        depth: boundary_min_v − L, the height of the band below the truncation.
        stationary_mass_in_set: π of all states (boundary included) with V >= L.
        truncation_mass: P_π(a step loses an arrival).
        flagged: the set is non-empty and lies strictly below the truncation boundary (depth > 0).
    """

    policy: str
    eps: float
    level: float
    n_states_in_set: int
    min_drift_in_set: float
    max_one_step_fall: float
    boundary_min_v: float
    depth: float
    stationary_mass_in_set: float
    truncation_mass: float
    flagged: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: (_num(v) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def instability_witness(chain: Chain, V: Callable[[State], float] | np.ndarray | None = None, *,
                        eps: float = 1e-6) -> InstabilityWitness:
    """Find the band of states where V can only be expected to grow (module text).

    Raises:
        ModelError: a bad chain, V or eps.
    """
    eps, v, d, boundary, inner = _prologue(chain, V, eps)
    low = inner & (d < eps)
    vb = float(v[low].max()) if low.any() else -math.inf
    above = inner & (v > vb)
    level = float(v[above].min()) if above.any() else math.inf
    in_set = inner & (v >= level)
    b_min = float(v[boundary].min()) if boundary.any() else math.inf
    fall = math.nan
    if in_set.any():
        P = chain.P.tocoo()
        m = in_set[P.row]
        fall = float((v[P.row[m]] - v[P.col[m]]).max())
    pi = stationary(chain)
    depth = b_min - level
    return InstabilityWitness(
        policy=chain.engine.policy.name, eps=eps, level=level, n_states_in_set=int(in_set.sum()),
        min_drift_in_set=float(d[in_set].min()) if in_set.any() else math.nan, max_one_step_fall=fall,
        boundary_min_v=b_min, depth=depth, stationary_mass_in_set=float(pi[v >= level].sum()),
        truncation_mass=float(pi @ chain.loss_prob), flagged=bool(in_set.any() and depth > 0))
