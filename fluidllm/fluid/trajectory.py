"""Fluid trajectories of one engine: exact piecewise-linear solutions of :mod:`fluidllm.fluid.model`.

The fluid's right-hand side is piecewise constant: the service rates change only when a queue (the
prefill or the decode backlog) empties or when the FCFS head of a queue passes from one segment of
fixed class composition to the next. Between those events every P_k, D_k is linear in t, so the
solution is computed exactly, event to event (no ODE solver, no step-size error; an ODE solver would
also chatter on the sliding modes where a queue stays at 0). The number of events is finite: the
prefill queue holds at most two segments (initial content, then arrivals) and the decode queue at
most one per prefill segment plus its initial content.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import finite_number, integer
from ..model.model import Model
from .model import FluidModel, fluid_model, initial_state

__all__ = ["FluidTrajectory", "fluid_trajectory", "drain_time_ms", "growth_slope_tokens_per_s", "integrate"]

_MAX_EVENTS = 10_000


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True, eq=False)
class FluidTrajectory:
    """A fluid trajectory on a time grid.

    Attributes:
        times_ms: (G,) grid in [0, horizon] (ms).
        P, D: (K, G) prefill tokens owed and decode tokens owed after prefill, per class (tokens).
        total: (G,) W = Σ_k (1 + r_k) P_k + D_k, every token owed (what the simulator's
            ``series_backlog_tokens`` measures).
        drain_time_ms: when W reaches 0 for good; None if it never does (at or above capacity with
            a positive backlog).
        slope_tokens_per_s: the long-run growth slope max(0, λ(m_p + m_d) − capacity).
        events_ms: the breakpoints of the piecewise-linear solution within the horizon.
        model: the :class:`~fluidllm.fluid.model.FluidModel` solved.
    """

    times_ms: np.ndarray
    P: np.ndarray
    D: np.ndarray
    total: np.ndarray
    drain_time_ms: float | None
    slope_tokens_per_s: float
    events_ms: np.ndarray
    model: FluidModel

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.classes

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.model.engine, "policy": self.model.policy, "classes": list(self.classes),
                "times_ms": self.times_ms.tolist(), "P": self.P.tolist(), "D": self.D.tolist(),
                "total": self.total.tolist(), "drain_time_ms": _num(self.drain_time_ms),
                "slope_tokens_per_s": float(self.slope_tokens_per_s), "events_ms": self.events_ms.tolist(),
                "model": self.model.to_dict()}

    def __repr__(self) -> str:
        d = "never" if self.drain_time_ms is None else f"{self.drain_time_ms:.6g} ms"
        return (f"FluidTrajectory({self.model.policy} on {self.model.engine}, {self.times_ms.size} points to "
                f"{self.times_ms[-1]:.6g} ms, W0 = {self.total[0]:.6g}, drains {d}, "
                f"slope {self.slope_tokens_per_s:.6g} tokens/s)")


class _Queue:
    """A FCFS fluid queue: segments [composition (sums to 1), mass] consumed from the head."""

    def __init__(self, vec: np.ndarray) -> None:
        m = float(vec.sum())
        self.seg: list[list[Any]] = [[vec / m, m]] if m > 0 else []

    def empty(self) -> bool:
        return not self.seg

    def head(self) -> np.ndarray:
        return self.seg[0][0]

    def vector(self, K: int) -> np.ndarray:
        out = np.zeros(K)
        for c, m in self.seg:
            out += c * m
        return out

    def time_to_event(self, s: float, i: float, comp: np.ndarray | None) -> float:
        """Time until the head segment empties when served at s with inflow i (composition comp)."""
        if not self.seg or s <= 0:
            return math.inf
        c, m = self.seg[0]
        if len(self.seg) == 1 and comp is not None and i > 0 and np.allclose(c, comp, rtol=0, atol=1e-12):
            return m / (s - i) if s > i else math.inf
        return m / s

    def advance(self, dt: float, s: float, i: float, comp: np.ndarray | None, tol: float) -> None:
        if i > 0 and comp is not None:
            if self.seg and np.allclose(self.seg[-1][0], comp, rtol=0, atol=1e-12):
                self.seg[-1][1] += i * dt
            else:
                self.seg.append([comp, i * dt])
        take = s * dt
        while take > 0 and self.seg:
            m = self.seg[0][1]
            if m <= take + tol:
                take -= m
                self.seg.pop(0)
            else:
                self.seg[0][1] = m - take
                take = 0.0


def _norm(v: np.ndarray) -> np.ndarray | None:
    s = float(v.sum())
    return v / s if s > 0 else None


def _rates(fm: FluidModel, Pq: _Queue, Dq: _Queue) -> tuple[float, np.ndarray | None, bool, float, bool]:
    """(prefill service sP, its composition, prefill passthrough?, decode service sD, decode passthrough?).

    Passthrough: the queue is empty and stays so, its inflow served as it comes.
    """
    mu, cap = fm.service_per_ms, fm.sliding_service_per_ms
    r = fm.decode_ratio
    Lp = float(fm.prefill_inflow_per_ms.sum())
    a = _norm(fm.prefill_inflow_per_ms)
    stable = fm.offered_per_ms <= cap * (1 + 1e-12)
    if fm.mode in ("decode-first", "fastertransformer"):
        if not Dq.empty():
            return 0.0, None, False, mu, False
        if Pq.empty() and (stable or a is None):
            return Lp, a, True, float(fm.decode_inflow_per_ms.sum()), True
        c = Pq.head() if not Pq.empty() else a
        sP = cap / (1.0 + float(r @ c))
        return sP, c, False, float(r @ c) * sP, True
    # prefill-first (orca)
    if not Pq.empty():
        return mu, Pq.head(), False, 0.0, False
    if Lp <= mu:
        if Dq.empty() and stable:
            return Lp, a, True, float(fm.decode_inflow_per_ms.sum()), True
        return Lp, a, True, mu - Lp, False
    return mu, a, False, 0.0, False


def integrate(fm: FluidModel, P0: np.ndarray, D0: np.ndarray, t_end: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact event-to-event solution up to ``t_end`` (ms; may be inf: then up to the last event).

    Returns (times, P, D, dP/dt, dD/dt): breakpoints (B,), states (B, K) at them, and the constant
    slopes (B, K) in force after each breakpoint (the last ones persist beyond it).
    """
    K = len(fm.classes)
    tol = 1e-12 * max(1.0, float(P0.sum() + D0.sum()))
    Pq, Dq = _Queue(P0.astype(float)), _Queue(D0.astype(float))
    r = fm.decode_ratio
    a = _norm(fm.prefill_inflow_per_ms)
    Lp = float(fm.prefill_inflow_per_ms.sum())
    t = 0.0
    ts, Ps, Ds, dPs, dDs = [], [], [], [], []
    for _ in range(_MAX_EVENTS):
        sP, cp, p_pass, sD, d_pass = _rates(fm, Pq, Dq)
        served_p = sP * cp if cp is not None else np.zeros(K)
        d_in_vec = r * served_p
        d_in = float(d_in_vec.sum())
        d_comp = _norm(d_in_vec)
        d_head = Dq.head() if not Dq.empty() else d_comp     # an empty queue fed faster than served
        served_d = np.zeros(K) if d_pass or d_head is None else sD * d_head
        if d_pass:
            dD = np.zeros(K)
        else:
            dD = d_in_vec - served_d
        dP = np.zeros(K) if p_pass else fm.prefill_inflow_per_ms - served_p
        ts.append(t)
        Ps.append(Pq.vector(K))
        Ds.append(Dq.vector(K))
        dPs.append(dP)
        dDs.append(dD)
        dt = min(math.inf if p_pass else Pq.time_to_event(sP, Lp, a),
                 math.inf if d_pass else Dq.time_to_event(sD, d_in, d_comp))
        if not math.isfinite(dt) or t + dt >= t_end:
            break
        if not p_pass:
            Pq.advance(dt, sP, Lp, a, tol)
        if not d_pass:
            Dq.advance(dt, sD, d_in, d_comp, tol)
        t += dt
    else:  # pragma: no cover - the event count is bounded (see the module docstring)
        raise RuntimeError("fluid integration did not settle")
    return np.array(ts), np.array(Ps), np.array(Ds), np.array(dPs), np.array(dDs)


def _at(times: np.ndarray, X: np.ndarray, dX: np.ndarray, grid: np.ndarray) -> np.ndarray:
    i = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, times.size - 1)
    return np.maximum(X[i] + dX[i] * (grid - times[i])[:, None], 0.0)


def _weights(fm: FluidModel) -> np.ndarray:
    return 1.0 + fm.decode_ratio


def _drain(fm: FluidModel, P0: np.ndarray, D0: np.ndarray) -> float | None:
    times, P, D, dP, dD = integrate(fm, P0, D0, math.inf)
    w = _weights(fm)
    W_end = float(P[-1] @ w + D[-1].sum())
    slope_end = float(dP[-1] @ w + dD[-1].sum())
    if W_end <= 1e-9 * max(1.0, float(P0 @ w + D0.sum())) and slope_end <= 1e-12:
        return float(times[-1])
    return None


def fluid_trajectory(model: Model, *, initial_tokens: Any = None, horizon_s: float, points: int = 200,
                     load: float = 1.0, engine: str | None = None) -> FluidTrajectory:
    """The fluid trajectory of ``engine`` at ``load`` × the arrival rates from ``initial_tokens``.

    Args:
        initial_tokens: None (empty), one (P0, D0) pair (one class), a list of pairs in class order
            or a dict class name -> pair: prefill tokens owed and decode tokens owed by requests past
            their prefill (decode owed by requests still in prefill is implied: r_k P0_k).
        horizon_s: the grid runs over [0, horizon_s] (seconds) with ``points`` points.

    Raises:
        ModelError: bad arguments (named), or a model/policy without a fluid model (see
            :func:`~fluidllm.fluid.model.fluid_model`).
    """
    fm = fluid_model(model, load=load, engine=engine)
    H = finite_number(horizon_s, "horizon_s", minimum=0, strict=True) * 1000.0
    G = integer(points, "points", minimum=2)
    P0, D0 = initial_state(fm, initial_tokens)
    times, P, D, dP, dD = integrate(fm, P0, D0, H)
    grid = np.linspace(0.0, H, G)
    Pg, Dg = _at(times, P, dP, grid), _at(times, D, dD, grid)
    total = Pg @ _weights(fm) + Dg.sum(axis=1)
    for x in (grid, Pg, Dg, total):
        x.setflags(write=False)
    ev = times[times <= H].copy()
    ev.setflags(write=False)
    return FluidTrajectory(times_ms=grid, P=Pg.T.copy(), D=Dg.T.copy(), total=total,
                           drain_time_ms=_drain(fm, P0, D0), slope_tokens_per_s=fm.growth_slope_per_ms * 1000.0,
                           events_ms=ev, model=fm)


def drain_time_ms(model: Model, *, initial_tokens: Any = None, load: float = 1.0,
                  engine: str | None = None) -> float | None:
    """When the fluid from ``initial_tokens`` empties for good (ms); None if it never does.

    For a work-conserving policy this is W0 / (μ − λ(m_p + m_d)) below capacity.

    Raises:
        ModelError: as :func:`fluid_trajectory`.
    """
    fm = fluid_model(model, load=load, engine=engine)
    P0, D0 = initial_state(fm, initial_tokens)
    return _drain(fm, P0, D0)


def growth_slope_tokens_per_s(model: Model, *, load: float = 1.0, engine: str | None = None) -> float:
    """The fluid backlog's long-run slope max(0, λ(m_p + m_d) − capacity) in tokens/s (capacity:
    b_max / t(b_max) for work-conserving policies, μ_FT for FasterTransformer).

    Raises:
        ModelError: as :func:`fluid_trajectory`.
    """
    return fluid_model(model, load=load, engine=engine).growth_slope_per_ms * 1000.0
