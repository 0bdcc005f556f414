"""``fluidllm.simulate``: replicated stochastic simulation of one engine of a model.

Replications are drawn and run in blocks of :data:`BLOCK` (512): block k draws from the seed
``seed`` (k = 0) or ``SeedSequence([seed, k])``, so the numbers depend on the seed and the number of
replications only — not on how many worker processes run the blocks (``workers``) nor on the
backend. Blocks of 512 replications keep NumPy's arrays in the CPU caches, where the core is fastest,
and let ``workers`` processes share a run of R = 1024 on two cores.

A python plug-in policy without ``plan_vectorized`` takes the per-replication path
(:mod:`fluidllm.sim.scalar`): the same draws, each replication run by the reference simulator, the
same outputs — two to three orders of magnitude slower.
"""
from __future__ import annotations

import os
import time as _time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from typing import Any, Sequence

import numpy as np

from ..errors import ModelError, finite_number, integer, require
from ..model.model import Model
from ..model.engine import Engine
from ..model.workload import Workload
from .core import CoreOutput, run_core
from .draws import Requests
from .result import SimResult
from .scalar import block_requests, run_scalar
from .source import FixedSource, StreamSource

__all__ = ["simulate", "pick_engine", "BLOCK", "block_seed"]

#: Replications per block (draws and execution).
BLOCK = 512


def block_seed(seed: int, k: int) -> int | np.random.SeedSequence:
    """The seed of replication block k (block 0 uses ``seed`` itself)."""
    return seed if k == 0 else np.random.SeedSequence([seed, k])


def _run_block(args: tuple[Any, ...]) -> CoreOutput:
    eng, workloads, n, horizon_ms, seed, loads, kw = args
    gen = np.random.default_rng(seed)
    return run_core(eng, StreamSource(workloads, n, horizon_ms, gen, scale=loads), **kw)


def _scalar_policy(eng: Engine) -> bool:
    """A python plug-in without ``plan_vectorized``: it runs on the per-replication path."""
    if eng.policy.name != "python":
        return False
    from ..policies.plugin import policy_object

    return not callable(getattr(policy_object(eng.policy), "plan_vectorized", None))


def _merge(outs: list[CoreOutput]) -> CoreOutput:
    """Concatenate the per-replication outputs of consecutive blocks."""
    if len(outs) == 1:
        return outs[0]
    first = outs[0]
    vals: dict[str, Any] = {}
    for f in fields(CoreOutput):
        v = getattr(first, f.name)
        if f.name in ("replications", "wall_s", "peak_state_bytes"):   # (memory: every block resident at once)
            vals[f.name] = sum(getattr(o, f.name) for o in outs)
        elif f.name == "steps":
            vals[f.name] = max(o.steps for o in outs)
        elif f.name == "grid_ms":
            vals[f.name] = v
        elif isinstance(v, np.ndarray):
            vals[f.name] = np.concatenate([getattr(o, f.name) for o in outs])
        elif isinstance(v, dict):
            vals[f.name] = {k: np.concatenate([getattr(o, f.name)[k] for o in outs]) for k in v}
        elif f.name == "batch_log":
            vals[f.name] = None if v is None else [row for o in outs for row in o.batch_log]
        else:
            vals[f.name] = v
    return CoreOutput(**vals)


def pick_engine(model: Model, engine: str | None) -> tuple[Engine, list[Workload]]:
    """The engine to simulate and its workloads (``engine`` may be omitted for one-engine models).

    Raises:
        ModelError: an unknown engine name, several engines and no name, or an engine without load.
    """
    require(isinstance(model, Model), "model", type(model).__name__,
            "must be a single-engine-workload Model (see load_model); network models ([workflows.*]) have "
            "capacity (fluidllm capacity) but are not simulated or given a fluid trajectory here yet")
    names = list(model.engines)
    if engine is None:
        used = [n for n in names if model.workloads_on(n)]
        require(len(used) == 1, "engine", None,
                f"must name the engine to simulate; this model has workloads on {used or names}")
        engine = used[0]
    require(engine in model.engines, "engine", engine, f"must be one of {names}")
    workloads = model.workloads_on(engine)
    require(len(workloads) > 0, "engine", engine, "has no workloads to simulate")
    return model.engines[engine], workloads


def _loads(load: float | Sequence[float] | np.ndarray, R: int) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(load, dtype=float)) if not isinstance(load, (int, float)) else \
        np.full(R, finite_number(load, "load", minimum=0, strict=True))
    require(arr.ndim == 1 and arr.size in (1, R), "load", "<array>" if arr.size > 1 else float(arr[0]),
            f"must be one number or one per replication ({R})")
    require(bool(np.all(np.isfinite(arr) & (arr > 0))), "load", arr.tolist() if arr.size < 8 else "<array>",
            "must be finite and > 0")
    return np.broadcast_to(arr, (R,)).copy()


def simulate(model: Model, *, replications: int = 16, horizon_s: float = 60.0, seed: int = 0,
             load: float | Sequence[float] | np.ndarray = 1.0, engine: str | None = None,
             backend: str = "numpy", grid_points: int = 200, batch_log: bool = False,
             max_memory_mb: float = 4096.0, requests: Sequence[Requests] | None = None,
             initial: Sequence[Sequence[int]] | None = None, workers: int = 1) -> SimResult:
    """Simulate ``replications`` independent runs of one engine, each from empty over ``horizon_s``.

    Args:
        model: the model (single-engine, or name the engine with ``engine``).
        replications: R, run in lock-step on arrays.
        horizon_s: simulated seconds; each run stops at its first batch boundary at or after it.
        seed: the random seed (arrivals and lengths are drawn by NumPy on the host, so the same seed
            gives the same numbers on every backend).
        load: multiplies every arrival rate; one number, or one per replication (load sweeps).
        backend: ``numpy`` (default), ``cupy`` or ``torch``.
        grid_points: points of the time series in [0, horizon).
        batch_log: keep every batch's per-request tokens (small runs only).
        max_memory_mb: a replication whose state would exceed this is stopped and reported as
            diverged (``SimResult.diverged``, ``diverged_ms``).
        requests: replay these pre-drawn requests (one :class:`~fluidllm.sim.draws.Requests` per
            replication) instead of drawing; ``seed`` and ``load`` are then unused.
        initial: requests present at time 0 in every replication (see :func:`run_core`).
        workers: processes running blocks of :data:`BLOCK` replications in parallel (NumPy backend;
            the numbers do not depend on it). ``0``: one per CPU. On the per-replication path
            (below) the processes share the replications themselves.

    Plug-in policies (``policy = { kind = "python", ... }``): one with ``plan_vectorized`` runs in the
    vectorized core like a built-in rule. One with only ``plan(view)`` runs on the documented
    per-replication path (:mod:`fluidllm.sim.scalar`): the same draws as the core for the same
    seed, each replication run by the reference simulator
    (:func:`~fluidllm.sim.reference.simulate_reference`, which calls ``plan`` at every batch and
    checks the plan), converted to the same outputs with the same definitions — a plug-in equal to
    a built-in rule gives the built-in's result (exactly, except ``mean_requests_in_system`` to float
    rounding; see :mod:`fluidllm.sim.scalar`). Its cost is O(batches × requests in system) Python
    work per replication, 100–1000× the core's; ``backend`` and ``max_memory_mb`` do not apply there
    (no replication is reported diverged), and ``backend`` reads ``"reference"``.

    Raises:
        ModelError: bad arguments (named), an engine without workloads, a backend not installed.
        NotImplementedError: a policy the simulator does not run yet (priority, wait).
        PlanViolation: a python plug-in broke the model's rules (per-replication path).
    """
    eng, workloads = pick_engine(model, engine)
    horizon_ms = finite_number(horizon_s, "horizon_s", minimum=0, strict=True) * 1000.0
    if requests is not None:
        src: Any = FixedSource(requests, horizon_ms)
        R = src.R
        loads = np.ones(R)
        seed_out = None
    else:
        R = integer(replications, "replications", minimum=1)
        loads = _loads(load, R)
        seed_out = integer(seed, "seed", minimum=0)
    workers = integer(workers, "workers", minimum=0) or (os.cpu_count() or 1)
    kw = dict(backend=backend, grid_points=grid_points, batch_log=batch_log, max_memory_mb=max_memory_mb,
              initial=initial)
    if _scalar_policy(eng):
        t0 = _time.perf_counter()
        if requests is not None:
            reqs = list(src.requests)
        else:
            reqs = [q for k, a in enumerate(range(0, R, BLOCK))
                    for q in block_requests(workloads, min(BLOCK, R - a), horizon_ms, block_seed(seed_out, k),
                                            loads[a:a + BLOCK])]
        out = run_scalar(eng, reqs, horizon_ms, grid_points=grid_points, batch_log=batch_log, initial=initial,
                         workers=workers)
        out.wall_s = _time.perf_counter() - t0
    elif requests is not None:
        out = run_core(eng, src, **kw)
    else:
        starts = list(range(0, R, BLOCK))
        jobs = [(eng, workloads, min(BLOCK, R - a), horizon_ms, block_seed(seed_out, k), loads[a:a + BLOCK], kw)
                for k, a in enumerate(starts)]
        if workers > 1 and len(jobs) > 1:
            if backend != "numpy":
                raise ModelError("workers", workers, "must be 1 with a GPU backend (one process drives the device)")
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
                outs = list(pool.map(_run_block, jobs))
        else:
            outs = [_run_block(j) for j in jobs]
        out = _merge(outs)
    return SimResult.from_core(out, engine=eng.name, policy=eng.policy.name,
                               work_conserving=eng.policy.work_conserving, seed=seed_out, load=loads)
