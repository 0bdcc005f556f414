"""``fluidllm.stability``: is an engine stable at a load, and where is a policy's stability boundary?

The verdict is :func:`fluidllm.sim.verdict.backlog_verdict` on the token backlog of R replications
simulated by the vectorized core from empty, over a horizon picked from the model's own time scales
(:func:`fluidllm.sim.verdict.recommended_horizon_ms`): the full-batch time t(b_max), and a sojourn
estimate of (m_d + 1 + m_p/b_max) full batches. An INCONCLUSIVE verdict doubles the horizon
(twice at most, by default) before it is reported.

Beside it, for work-conserving policies on the paper's model (token-count batch time, no k_max, no
resident or KV cap), the fluid oracle: the backlog grows at max(0, λ(m_p + m_d) − b_max/t(b_max))
tokens/s (Li, Dai, Peng, arXiv 2504.07347, Thm 2; a work-conserving batch holds b_max tokens while
there is backlog, so b_max/t(b_max) — which equals μ* = max_n n/t(n) when b0 | b_max — is the rate).
Where it applies, the oracle's slope is also the verdict's reference slope: a STABLE verdict then
needs the simulated slope's upper bound below a positive fluid slope, so that a load above capacity,
however slightly, is called STABLE with probability <= α/2 per look (``fluid_oracle=False`` gives
the backlog-only test).
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import finite_number, integer, require
from ..model.engine import Engine
from ..model.model import Model
from ..model.workload import Workload
from .result import SimResult, _num
from .simulate import pick_engine, simulate
from .verdict import Verdict, backlog_verdict, recommended_horizon_ms

__all__ = ["StabilityResult", "BoundaryResult", "stability", "stability_boundary", "fluid_slope_tokens_per_s",
           "offered_tokens_per_s"]


def offered_tokens_per_s(workloads: Sequence[Workload], load: float = 1.0) -> float:
    """λ(m_p + m_d) summed over workloads, times ``load`` (tokens/s)."""
    return load * sum(w.arrival.rate_per_s * w.lengths.mean_tokens for w in workloads)


def _paper_model(engine: Engine) -> bool:
    return (engine.batch_time.tokens_only and engine.max_batch_requests is None
            and engine.max_resident_requests is None and engine.kv_capacity_tokens is None)


def fluid_slope_tokens_per_s(engine: Engine, workloads: Sequence[Workload], load: float = 1.0) -> float | None:
    """The fluid oracle's backlog slope max(0, λ(m_p + m_d) − b_max/t(b_max)) in tokens/s, for a work-conserving
    policy on the paper's model; None where the theorem does not give it (a policy that is not
    work-conserving, k_max, a resident or KV cap, or a batch time that is not a function of tokens)."""
    if not engine.policy.work_conserving or not _paper_model(engine):
        return None
    # A work-conserving policy fills every batch to b_max while the backlog is positive, so its
    # fluid service rate is b_max / t(b_max) — equal to μ* when b0 | b_max, below it otherwise.
    b = engine.token_budget
    mu = b / float(np.asarray(engine.batch_time.tokens_ms(b))) * 1000.0
    return max(0.0, offered_tokens_per_s(workloads, load) - mu)


def _horizon_ms(engine: Engine, workloads: Sequence[Workload], load: float) -> float:
    t_full = float(np.asarray(engine.batch_time.batch_ms(engine.token_budget, 0, 0)))
    mp = sum(w.arrival.rate_per_s * w.lengths.mean_prefill for w in workloads)
    md = sum(w.arrival.rate_per_s * w.lengths.mean_decode for w in workloads)
    lam = sum(w.arrival.rate_per_s for w in workloads)
    sojourn = (md / lam + 1.0 + (mp / lam) / engine.token_budget) * t_full if lam > 0 else t_full
    return recommended_horizon_ms(t_full, sojourn, max(offered_tokens_per_s(workloads, load), 1e-9))


@dataclass(frozen=True, eq=False)
class StabilityResult:
    """Stability of one engine at one load (:func:`stability`).

    Attributes:
        verdict: ``STABLE``, ``UNSTABLE`` or ``INCONCLUSIVE``.
        slope_tokens_per_s, slope_interval: the estimated backlog growth rate and its (1 − α)
            interval (tokens/s).
        fluid_slope_tokens_per_s: the fluid oracle's slope, or None where it does not apply.
        offered_tokens_per_s: λ(m_p + m_d) at this load.
        reason, test: why, and the test with its error rates.
        horizons_s: every horizon simulated (the last one decided).
        details: the full :class:`~fluidllm.sim.verdict.Verdict`; ``sim``: the last simulation.
    """

    engine: str
    policy: str
    work_conserving: bool
    load: float
    verdict: str
    slope_tokens_per_s: float
    slope_interval: tuple[float, float]
    fluid_slope_tokens_per_s: float | None
    offered_tokens_per_s: float
    reason: str
    test: str
    replications: int
    seed: int
    horizons_s: tuple[float, ...]
    diverged: int
    details: Verdict = field(repr=False)
    sim: SimResult = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "policy": self.policy, "work_conserving": self.work_conserving,
                "load": self.load, "verdict": self.verdict, "slope_tokens_per_s": _num(self.slope_tokens_per_s),
                "slope_interval": [_num(self.slope_interval[0]), _num(self.slope_interval[1])],
                "fluid_slope_tokens_per_s": _num(self.fluid_slope_tokens_per_s),
                "offered_tokens_per_s": _num(self.offered_tokens_per_s), "reason": self.reason, "test": self.test,
                "replications": self.replications, "seed": self.seed, "horizon_s": self.horizons_s[-1],
                "horizons_s": list(self.horizons_s), "diverged": self.diverged, "details": self.details.to_dict()}

    def line(self) -> str:
        """One line: verdict, slope with interval, fluid oracle."""
        lo, hi = self.slope_interval
        fl = "n/a" if self.fluid_slope_tokens_per_s is None else f"{self.fluid_slope_tokens_per_s:.4g}"
        return (f"{self.policy:<26} load {self.load:<5g} {self.verdict:<12} slope {self.slope_tokens_per_s:9.4g} "
                f"tokens/s [{lo:.4g}, {hi:.4g}]  fluid {fl}  ({self.horizons_s[-1]:g} s x {self.replications})")


def _verdict_of(sim: SimResult, rows: np.ndarray, offered: float, alpha: float, tolerance: float,
                reference: float | None = None) -> Verdict:
    back = sim.series_backlog_tokens[rows].astype(float)
    return backlog_verdict(sim.grid_ms, back, offered_tokens_per_s=offered, alpha=alpha, tolerance=tolerance,
                           reference_slope_tokens_per_s=reference)


def stability(model: Model, *, load: float = 1.0, replications: int = 16, horizon_s: float | None = None,
              seed: int = 0, engine: str | None = None, backend: str = "numpy", alpha: float = 0.01,
              tolerance: float = 0.02, extensions: int = 2, max_memory_mb: float = 4096.0,
              fluid_oracle: bool = True) -> StabilityResult:
    """Is ``engine`` stable at ``load`` × the model's arrival rates?

    Simulates ``replications`` runs from empty (default horizon from the model's time scales) and
    applies :func:`~fluidllm.sim.verdict.backlog_verdict` (α: error rate of a wrong definite
    verdict at each look; tolerance: growth slower than tolerance × offered tokens/s is not called
    UNSTABLE, but significant growth is never called STABLE). Where the fluid oracle applies
    (:func:`fluid_slope_tokens_per_s` is not None) and ``fluid_oracle`` is true, its growth rate is
    the verdict's reference slope: STABLE then also needs the simulated slope's upper bound below a
    positive fluid slope, so above capacity P(false STABLE) <= α/2 per look at every load.
    INCONCLUSIVE doubles the horizon up to ``extensions`` times: with k = 1 + extensions looks the
    error rates are at most k times those of one look (union bound). Replications that reach the
    memory cap (diverged) make the verdict UNSTABLE only if the others' backlog grows too; else
    INCONCLUSIVE.

    Raises:
        ModelError: bad arguments, named.
    """
    eng, workloads = pick_engine(model, engine)
    load = finite_number(load, "load", minimum=0, strict=True)
    R = integer(replications, "replications", minimum=2)
    extensions = integer(extensions, "extensions", minimum=0)
    offered = offered_tokens_per_s(workloads, load)
    require(offered > 0, "load", load, "must give a positive offered load (every arrival rate is 0)")
    H = (finite_number(horizon_s, "horizon_s", minimum=0, strict=True) * 1000.0 if horizon_s is not None
         else _horizon_ms(eng, workloads, load))
    require(isinstance(fluid_oracle, bool), "fluid_oracle", fluid_oracle, "must be True or False")
    fluid = fluid_slope_tokens_per_s(eng, workloads, load)
    reference = fluid if fluid_oracle else None
    horizons = []
    for attempt in range(extensions + 1):
        sim = simulate(model, replications=R, horizon_s=H / 1000.0, seed=seed, load=load, engine=eng.name,
                       backend=backend, max_memory_mb=max_memory_mb)
        horizons.append(H / 1000.0)
        ok = ~sim.diverged
        v = _verdict_of(sim, np.flatnonzero(ok) if ok.sum() >= 2 else np.arange(R), offered, alpha, tolerance,
                        reference)
        verdict, reason = v.verdict, v.reason
        n_div = int(sim.diverged.sum())
        if n_div and verdict != "UNSTABLE":
            verdict = "INCONCLUSIVE"
            reason = f"{n_div} of {R} replications reached the memory cap ({max_memory_mb:g} MiB); " + reason
        if verdict != "INCONCLUSIVE" or attempt == extensions:
            break
        H *= 2
    return StabilityResult(
        engine=eng.name, policy=eng.policy.name, work_conserving=eng.policy.work_conserving, load=load,
        verdict=verdict, slope_tokens_per_s=v.slope_tokens_per_s, slope_interval=tuple(v.slope_interval),
        fluid_slope_tokens_per_s=fluid, offered_tokens_per_s=offered,
        reason=reason, test=v.test, replications=R, seed=seed, horizons_s=tuple(horizons), diverged=n_div,
        details=v, sim=sim)


@dataclass(frozen=True)
class BoundaryResult:
    """A bracket [stable_load, unstable_load] on a policy's maximum stable load (:func:`stability_boundary`).

    ``stable_load``: the largest load found STABLE (None if none); ``unstable_load``: the smallest
    load above it found UNSTABLE (None if none). ``rounds``: per round, the loads tried and their
    verdicts. Loads multiply the model's arrival rates.
    """

    engine: str
    policy: str
    stable_load: float | None
    unstable_load: float | None
    rounds: tuple[tuple[tuple[float, str, float], ...], ...]
    replications: int
    horizon_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "policy": self.policy, "stable_load": self.stable_load,
                "unstable_load": self.unstable_load, "replications": self.replications, "horizon_s": self.horizon_s,
                "rounds": [[{"load": l, "verdict": v, "slope_tokens_per_s": _num(s)} for l, v, s in r]
                           for r in self.rounds]}


def _boundary_point(args: tuple[Any, ...]) -> tuple[float, str, float]:
    model, eng_name, workloads, x, R, H, seed, backend, alpha, tolerance, max_memory_mb = args
    sim = simulate(model, replications=R, horizon_s=H / 1000.0, seed=seed, engine=eng_name, backend=backend,
                   load=x, max_memory_mb=max_memory_mb)
    ok = ~sim.diverged
    eng, _ = pick_engine(model, eng_name)
    v = _verdict_of(sim, np.flatnonzero(ok) if ok.sum() >= 2 else np.arange(R), offered_tokens_per_s(workloads, x),
                    alpha, tolerance, fluid_slope_tokens_per_s(eng, workloads, x))
    verdict = v.verdict if (v.verdict == "UNSTABLE" or not sim.diverged.any()) else "INCONCLUSIVE"
    return float(x), verdict, v.slope_tokens_per_s


def stability_boundary(model: Model, *, lo: float = 0.5, hi: float = 1.5, points: int = 8, rounds: int = 2,
                       replications: int = 8, horizon_s: float | None = None, seed: int = 0,
                       engine: str | None = None, backend: str = "numpy", alpha: float = 0.01,
                       tolerance: float = 0.02, workers: int = 1, max_memory_mb: float = 1024.0) -> BoundaryResult:
    """Bracket the largest stable load between ``lo`` and ``hi`` (multiples of the model's rates).

    Each round tries ``points`` loads evenly spaced in [lo, hi], ``replications`` runs each, takes a
    verdict per load (as :func:`stability`, without horizon extensions), and narrows the bracket to
    the largest STABLE load and the smallest UNSTABLE load above it; INCONCLUSIVE loads stay inside
    (near-critical loads, with significant growth below the tolerance, are INCONCLUSIVE, and where
    the fluid oracle applies its growth rate is each load's reference slope, as in :func:`stability`).
    While no load has been found STABLE, the next round reaches down to lo / points. Every load of a round uses the same seed (common random numbers), and each load is its own
    vectorized run: batching loads together would make every light replication pay for the queue
    arrays of the overloaded ones. ``workers`` processes run the loads of a round in parallel (the
    numbers do not depend on it). A replication reaching ``max_memory_mb`` is diverged: its load is
    UNSTABLE if the others grow, else INCONCLUSIVE.

    Raises:
        ModelError: bad arguments, named.
    """
    eng, workloads = pick_engine(model, engine)
    lo = finite_number(lo, "lo", minimum=0, strict=True)
    hi = finite_number(hi, "hi", minimum=0, strict=True)
    require(hi > lo, "hi", hi, f"must be > lo = {lo}")
    points = integer(points, "points", minimum=2)
    rounds = integer(rounds, "rounds", minimum=1)
    R = integer(replications, "replications", minimum=2)
    workers = integer(workers, "workers", minimum=0) or (os.cpu_count() or 1)
    max_memory_mb = finite_number(max_memory_mb, "max_memory_mb", minimum=0, strict=True)
    H = (finite_number(horizon_s, "horizon_s", minimum=0, strict=True) * 1000.0 if horizon_s is not None
         else _horizon_ms(eng, workloads, 1.0))
    stable, unstable = None, None
    log = []
    for k in range(rounds):
        jobs = [(model, eng.name, workloads, float(x), R, H, seed + k, backend, alpha, tolerance, max_memory_mb)
                for x in np.linspace(lo, hi, points)]
        if workers > 1:
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
                row = list(pool.map(_boundary_point, jobs))
        else:
            row = [_boundary_point(j) for j in jobs]
        log.append(tuple(row))
        st = [x for x, v, _ in row if v == "STABLE"]
        if st:
            stable = max(st) if stable is None else max(stable, max(st))
        un = [x for x, v, _ in row if v == "UNSTABLE" and (stable is None or x > stable)]
        if un:
            unstable = min(un) if unstable is None else min(unstable, min(un))
        if stable is None:
            # nothing stable yet: the boundary may lie below lo, so the next round reaches down
            new_lo, new_hi = lo / points, (unstable if unstable is not None else hi)
        else:
            new_lo = stable if stable is not None else lo
            new_hi = unstable if unstable is not None else hi
        if new_hi <= new_lo or (new_lo, new_hi) == (lo, hi):
            break
        lo, hi = new_lo, new_hi
    return BoundaryResult(eng.name, eng.policy.name, stable, unstable, tuple(log), R, H / 1000.0)
