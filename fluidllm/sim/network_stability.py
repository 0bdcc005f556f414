"""``fluidllm.sim.network_stability``: is a network of LLM engines stable at a load?

The verdict is :func:`fluidllm.sim.verdict.backlog_verdict` (the same test as the single-engine
:func:`fluidllm.sim.stability.stability`) applied to the network's token backlog in R replications
of the reference network simulator (:func:`~fluidllm.sim.network_reference.simulate_network_reference`),
each from an empty network. The backlog at t is

    B(t) = Σ (v_p + v_d) over the requests created by t  −  Σ tokens of the batches ended by t

over all engines: the tokens the requests now in the network still owe (a request is created when
its instance arrives or when the call it follows completes). Without a KV cap this is exactly the
tokens left in the system; with one, recomputed prefill after a preemption is served but not
re-counted as arrived (the backlog is then low by the recomputed tokens; the verdict only needs its
growth). The offered rate for the tolerance is Σ_k λ_k (m_p,k + m_d,k), λ the visit rates of the
class network (every call of every instance counted).

Fluid oracle beside it (Li, Dai, Peng, arXiv 2504.07347 v3 §5; :mod:`fluidllm.fluid.network`),
where every engine's policy has a fluid counterpart (:func:`~fluidllm.fluid.network.fluid_policies_of`)
and the engines are in the paper's model:

* ``fluid_verdict``: :func:`~fluidllm.fluid.network.network_fluid_verdict` at the load (DRAINS /
  CONTRACTS / INCONCLUSIVE / DIVERGES, worst over its initial conditions), with its growth rate of
  the network workload W̃ (tokens still owed including later calls) as ``fluid_growth_rate_tokens_per_s``.
* ``fluid_slope_tokens_per_s``: the slope of the fluid *token content* Σ_k z_k from an empty network
  (:func:`~fluidllm.fluid.network.network_fluid_trajectory`, second half of the simulated horizon):
  the fluid limit of exactly the quantity B(t) the simulation measures (the fluid from 0 is linear
  in t by scale invariance), so this is the number to compare with ``slope_tokens_per_s``. The
  workload growth rate of the verdict is another quantity: it counts the later calls of instances
  held up upstream, which the simulated backlog counts only once they are created.

Default horizon (:func:`network_horizon_ms`): :func:`~fluidllm.sim.verdict.recommended_horizon_ms`
with the slowest engine's full-batch time t_e(b_max) as the batch scale and, as the sojourn scale,
the serial light-load time of one instance, Σ_k v_k (m_d,k + 1 + m_p,k / b_max,e) t_e(b_max) — per
call the single-engine estimate of :mod:`fluidllm.sim.stability` (one batch per decode token plus
the prompt's chunks), summed over the mean calls per instance v_k (visits per arrival; parallel
branches counted as if serial, an upper bound). So the horizon is the largest of 5 000 slowest
full batches, 150 such instance sojourns (the discarded first third holds 50, several relaxation
times up to ρ ≈ 0.9), the time to offer 10⁶ tokens, and 10 s; at most one hour.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelError, finite_number, integer, require
from ..model.network import NetworkModel
from .network_core import NetworkCoreResult, core_unsupported, run_network_core
from .network_reference import simulate_network_reference
from .result import _num
from .verdict import Verdict, backlog_verdict, recommended_horizon_ms

__all__ = ["NetworkStabilityResult", "network_stability", "network_backlog", "network_horizon_ms",
           "network_offered_tokens_per_s", "SIMULATORS", "choose_simulator", "run_core_blocks", "run_reference_backlogs"]

#: ``simulator=`` values: ``auto`` runs the vectorized network core (:mod:`fluidllm.sim.network_core`)
#: where it supports the model and the reference otherwise; ``core`` and ``reference`` force one.
#: Both give the same numbers for the same seed (the core equals the reference batch for batch).
SIMULATORS = ("auto", "core", "reference")

GRID_POINTS = 241


def network_offered_tokens_per_s(model: NetworkModel, load: float = 1.0) -> float:
    """Σ_k λ_k (m_p,k + m_d,k) over the classes (every call of every instance), times ``load`` (tokens/s)."""
    cn = model.class_network()
    m = np.array([c.mean_tokens for c in cn.classes])
    return float(load * cn.visit_rates @ m)


def _full_batch_ms(engine: Any) -> float:
    return float(np.asarray(engine.batch_time.batch_ms(engine.token_budget, 0, 0)))


def network_horizon_ms(model: NetworkModel, load: float = 1.0) -> float:
    """The default horizon (ms): see the module docstring."""
    cn = model.class_network()
    arrivals = float(cn.arrival_rates.sum())
    t_full = {e: _full_batch_ms(eng) for e, eng in model.engines.items()}
    slowest = max(t_full.values())
    if arrivals > 0:
        visits = cn.visit_rates / arrivals                  # calls per exogenous arrival
        soj = 0.0
        for v, c in zip(visits, cn.classes):
            per = max((c.mean_decode + 1.0 + c.mean_prefill / model.engines[e].token_budget) * t_full[e]
                      for e in c.engines)
            soj += v * per
    else:
        soj = slowest
    return recommended_horizon_ms(slowest, max(soj, slowest),
                                  max(network_offered_tokens_per_s(model, load), 1e-9))


def network_backlog(run: Any, times_ms: Any) -> np.ndarray:
    """B(t) at each t of ``times_ms`` for one :class:`~fluidllm.sim.network_reference.NetworkReferenceRun`:
    tokens of the requests created by t minus tokens of the batches (all engines) ended by t."""
    t = np.asarray(times_ms, dtype=float)
    order = np.argsort(run.created_ms, kind="stable")
    created = run.created_ms[order]
    arrived = np.concatenate([[0.0], np.cumsum((run.prefill + run.decode)[order].astype(float))])
    ends, toks = [], []
    for b in run.batches.values():
        for x in b:
            ends.append(x.end_ms)
            toks.append(x.n_tokens)
    ends_a = np.asarray(ends, dtype=float)
    o = np.argsort(ends_a, kind="stable")
    ends_a = ends_a[o]
    served = np.concatenate([[0.0], np.cumsum(np.asarray(toks, dtype=float)[o])])
    return arrived[np.searchsorted(created, t, side="right")] - served[np.searchsorted(ends_a, t, side="right")]


def choose_simulator(model: NetworkModel, simulator: str) -> str:
    """``core`` or ``reference`` for ``simulator`` in :data:`SIMULATORS`.

    Raises:
        ModelError: an unknown name, or ``core`` for a model it does not run (KV capacity,
            max-pressure, plug-in policies), with the reason.
    """
    require(simulator in SIMULATORS, "simulator", simulator, f"must be one of {list(SIMULATORS)}")
    if simulator == "reference":
        return "reference"
    why = core_unsupported(model)
    if why is None:
        return "core"
    if simulator == "core":
        raise ModelError("simulator", "core", f"cannot run this model: {why}")
    return "reference"


def _core_block(job: tuple) -> NetworkCoreResult:
    model, H, seed, r0, n, G, models = job
    return run_network_core(model, H, n, seed, grid_points=G, first_replication=r0, replication_models=models)


def run_core_blocks(model: NetworkModel, horizon_ms: float, seed: int, replications: int, grid_points: int,
                    workers: int = 1, replication_models: Sequence[NetworkModel] | None = None
                    ) -> list[NetworkCoreResult]:
    """Replications 0..R-1 of the vectorized network core in ``workers`` contiguous blocks (one process
    each when ``workers`` > 1); the blocks in order, whose rows together are replications 0..R-1.
    ``replication_models``: one model per replication (see :func:`run_network_core`), split with them."""
    w = max(1, min(workers, replications))
    cuts = np.linspace(0, replications, w + 1).round().astype(int)
    jobs = [(model, horizon_ms, seed, int(a), int(b - a), grid_points,
             None if replication_models is None else list(replication_models[a:b]))
            for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
    if len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=len(jobs)) as pool:
            return list(pool.map(_core_block, jobs))
    return [_core_block(j) for j in jobs]


def _one(args: tuple[NetworkModel, float, int, int, np.ndarray]) -> np.ndarray:
    model, H, seed, r, grid = args
    run = simulate_network_reference(model, H, np.random.default_rng([seed, r]))
    return network_backlog(run, grid)


def run_reference_backlogs(models: Sequence[NetworkModel], horizon_ms: float, seed: int, grid: np.ndarray,
                           workers: int = 1) -> np.ndarray:
    """(R, G) network token backlog of the reference simulator, row r on ``models[r]`` with
    ``default_rng([seed, r])``, over ``workers`` processes (the same numbers for any count)."""
    jobs = [(m, horizon_ms, seed, r, grid) for r, m in enumerate(models)]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            return np.array(list(pool.map(_one, jobs)), dtype=float)
    return np.array([_one(j) for j in jobs], dtype=float)


def _fluid(model: NetworkModel, load: float, horizon_s: float) -> tuple[str | None, float | None, float | None, str]:
    """(fluid verdict, its workload growth rate, token-content slope from empty, note)."""
    from ..fluid.network import network_fluid_trajectory, network_fluid_verdict

    try:
        v = network_fluid_verdict(model, load=load)
        tr = network_fluid_trajectory(model, horizon_s=horizon_s, load=load)
    except ModelError as e:
        return None, None, None, f"no fluid oracle: {e}"
    return v.verdict, float(v.growth_rate_tokens_per_s), max(0.0, tr.slope_tokens_per_s(0.5)), ""


@dataclass(frozen=True, eq=False)
class NetworkStabilityResult:
    """Stability of a network at one load (:func:`network_stability`).

    Attributes:
        verdict: ``STABLE``, ``UNSTABLE`` or ``INCONCLUSIVE``.
        slope_tokens_per_s, slope_interval: the estimated growth rate of the network token backlog
            and its (1 − α) interval (tokens/s).
        fluid_slope_tokens_per_s: slope of the fluid token content from empty (tokens/s; the
            comparable number), or None where no policy or engine has a fluid counterpart.
        fluid_verdict, fluid_growth_rate_tokens_per_s: the network fluid verdict and its workload
            growth rate (None likewise).
        offered_tokens_per_s: Σ_k λ_k (m_p,k + m_d,k) at this load.
        policies: each engine's policy name. ``engine_loads``: ρ_e at this load.
        reason, test: why, and the test with its error rates.
        horizons_s: every horizon simulated (the last one decided).
        details: the full :class:`~fluidllm.sim.verdict.Verdict`; ``grid_ms``, ``backlog``: the
            last run's grid and (R, G) backlog paths.
    """

    engines: tuple[str, ...]
    policies: dict[str, str]
    work_conserving: bool
    load: float
    verdict: str
    slope_tokens_per_s: float
    slope_interval: tuple[float, float]
    fluid_slope_tokens_per_s: float | None
    fluid_verdict: str | None
    fluid_growth_rate_tokens_per_s: float | None
    offered_tokens_per_s: float
    engine_loads: dict[str, float]
    reason: str
    test: str
    replications: int
    seed: int
    horizons_s: tuple[float, ...]
    details: Verdict = field(repr=False)
    grid_ms: np.ndarray = field(repr=False)
    backlog: np.ndarray = field(repr=False)
    fluid_note: str = ""
    simulator: str = "reference"

    def to_dict(self) -> dict[str, Any]:
        return {"network": True, "engines": list(self.engines), "policies": dict(self.policies),
                "work_conserving": self.work_conserving, "load": self.load, "verdict": self.verdict,
                "slope_tokens_per_s": _num(self.slope_tokens_per_s),
                "slope_interval": [_num(self.slope_interval[0]), _num(self.slope_interval[1])],
                "fluid_slope_tokens_per_s": _num(self.fluid_slope_tokens_per_s),
                "fluid_verdict": self.fluid_verdict,
                "fluid_growth_rate_tokens_per_s": _num(self.fluid_growth_rate_tokens_per_s),
                "fluid_note": self.fluid_note,
                "offered_tokens_per_s": _num(self.offered_tokens_per_s),
                "engine_loads": {k: _num(v) for k, v in self.engine_loads.items()},
                "reason": self.reason, "test": self.test, "replications": self.replications, "seed": self.seed,
                "horizon_s": self.horizons_s[-1], "horizons_s": list(self.horizons_s), "diverged": 0,
                "simulator": self.simulator,
                "details": self.details.to_dict()}

    def line(self) -> str:
        """One line: verdict, slope with interval, fluid oracle."""
        lo, hi = self.slope_interval
        fl = "n/a" if self.fluid_slope_tokens_per_s is None else (
            f"{self.fluid_slope_tokens_per_s:.4g} ({self.fluid_verdict})")
        pol = ",".join(f"{e}:{p}" for e, p in self.policies.items())
        return (f"network [{pol}] load {self.load:<5g} {self.verdict:<12} slope {self.slope_tokens_per_s:9.4g} "
                f"tokens/s [{lo:.4g}, {hi:.4g}]  fluid {fl}  ({self.horizons_s[-1]:g} s x {self.replications}, {self.simulator})")


def network_stability(model: NetworkModel, *, load: float = 1.0, replications: int = 8,
                      horizon_s: float | None = None, seed: int = 0, workers: int = 1, alpha: float = 0.01,
                      tolerance: float = 0.02, extensions: int = 1, simulator: str = "auto") -> NetworkStabilityResult:
    """Is the network ``model`` stable at ``load`` × its arrival rates?

    ``replications`` runs from empty (replication r uses ``np.random.default_rng([seed, r])``, so
    results do not depend on ``workers``; ``workers`` > 1 runs them in that many processes), the
    network token backlog on the grid ``H * arange(241) / 241``, and
    :func:`~fluidllm.sim.verdict.backlog_verdict` (α, tolerance as in
    :func:`fluidllm.sim.stability.stability`). ``simulator`` (:data:`SIMULATORS`): the vectorized
    network core where it runs the model, else the reference; the same numbers either way.
    INCONCLUSIVE doubles the horizon up to ``extensions`` times (default once). Default horizon:
    the module docstring.

    Raises:
        ModelError: bad arguments, named; a policy the reference simulator does not run raises
            NotImplementedError.
    """
    require(isinstance(model, NetworkModel), "model", model, "must be a NetworkModel")
    load = finite_number(load, "load", minimum=0, strict=True)
    R = integer(replications, "replications", minimum=2)
    seed = integer(seed, "seed", minimum=0)
    workers = integer(workers, "workers", minimum=1)
    extensions = integer(extensions, "extensions", minimum=0)
    offered = network_offered_tokens_per_s(model, load)
    require(offered > 0, "load", load, "must give a positive offered load (every arrival rate is 0)")
    H = (finite_number(horizon_s, "horizon_s", minimum=0, strict=True) * 1000.0 if horizon_s is not None
         else network_horizon_ms(model, load))
    scaled = model.scaled(load)
    sim = choose_simulator(scaled, simulator)
    horizons: list[float] = []
    for attempt in range(extensions + 1):
        grid = H * np.arange(GRID_POINTS) / GRID_POINTS
        if sim == "core":
            blocks = run_core_blocks(scaled, H, seed, R, GRID_POINTS, workers)
            back = np.concatenate([b.backlog_tokens for b in blocks]).astype(float)
        else:
            back = run_reference_backlogs([scaled] * R, H, seed, grid, workers)
        horizons.append(H / 1000.0)
        v = backlog_verdict(grid, back, offered_tokens_per_s=offered, alpha=alpha, tolerance=tolerance)
        if v.verdict != "INCONCLUSIVE" or attempt == extensions:
            break
        H *= 2
    fv, fg, fs, note = _fluid(model, load, horizons[-1])
    from ..fluid.network import engine_loads

    rho = engine_loads(model.class_network().scaled(load))
    pols = {e: eng.policy.name for e, eng in model.engines.items()}
    return NetworkStabilityResult(
        engines=tuple(model.engines), policies=pols,
        work_conserving=all(eng.policy.work_conserving for eng in model.engines.values()), load=load,
        verdict=v.verdict, slope_tokens_per_s=v.slope_tokens_per_s, slope_interval=tuple(v.slope_interval),
        fluid_slope_tokens_per_s=fs, fluid_verdict=fv, fluid_growth_rate_tokens_per_s=fg,
        offered_tokens_per_s=offered, engine_loads={k: float(x) for k, x in rho.items()}, reason=v.reason,
        test=v.test, replications=R, seed=seed, horizons_s=tuple(horizons), details=v, grid_ms=grid, backlog=back,
        fluid_note=note, simulator=sim)
