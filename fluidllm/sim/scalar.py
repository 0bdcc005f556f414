"""The per-replication path of :func:`fluidllm.simulate`: python plug-in policies without a vectorized form.

A plug-in policy (:mod:`fluidllm.policies.plugin`) that has only the scalar ``plan(view)`` cannot run
in the vectorized core, which moves into its slots only the waiting requests an FCFS fill could
reach (valid for the built-in rules, not for an arbitrary policy that may serve any waiting
request). :func:`simulate` then takes this path: each replication runs in the reference simulator
(:func:`~fluidllm.sim.reference.simulate_reference`, one request at a time, every waiting request
admitted and visible to the policy), and its :class:`~fluidllm.sim.reference.ReferenceRun` is turned
into the per-replication outputs of :class:`~fluidllm.sim.core.CoreOutput` with the core's
definitions, so that :class:`~fluidllm.sim.result.SimResult` is built the same way on both paths.

Same draws. Replication block k (of :data:`~fluidllm.sim.simulate.BLOCK`) draws from the same
:class:`~fluidllm.sim.source.StreamSource` as the vectorized path (same seed, block size and loads),
epoch by epoch to the horizon, and each row becomes that replication's
:class:`~fluidllm.sim.draws.Requests`: a plug-in equal to a built-in rule gives the built-in's
``SimResult`` for the same seed.

Equality with the core (a plug-in that reimplements a built-in rule). Equal exactly: every count,
``end_ms``, the batch mix, tokens served, ``busy_ms`` (summed batch by batch as the core does),
the time series, the latency counts, histograms and sums (summed request by request in the core's
event order), ``unschedulable``, ``preemptions``, ``recomputed_tokens``, and the batch log except
``resident_before``. To float rounding (about 1e-15 relative): ``in_system_time_ms`` (so
``mean_requests_in_system``), because the core sums the arrival instants of the requests still in
the system over its slot layout; and the latency sums when the core flushed its event queue during
the run (more than 16·R + 262144 latency events in one block), which splits its sums into parts.
Different by design: ``resident_before`` in the batch log (the core lists only the FCFS prefix of
the resident requests it moved into its slots, this path lists them all), ``backend``
(``"reference"``), ``peak_state_bytes`` (0: not measured), ``wall_s``. ``diverged`` is always False:
the reference has no memory cap, so ``max_memory_mb`` does not apply and an overloaded run simply
grows (and slows down).

Cost. Every batch builds the policy's view of every resident request, calls ``plan`` and checks
the plan in Python: O(resident requests) work per batch, so a run costs O(batches × requests in
system). Measured (one process): 3,000–7,000 requests simulated per second on a small engine
(b_max = 64, a few requests in system), about 550 on the paper's CodeLlama engine at 0.75 of
capacity (about 80 in system), against 2–7·10^5 for the vectorized core with 1024 replications:
100–1000× slower, and slower still for overloaded queues. ``workers`` processes share the
replications. A plug-in with ``plan_vectorized(B, state)`` runs in the vectorized core instead (see
:func:`fluidllm.policies.rules.vector_policy`).
"""
from __future__ import annotations

import math
import time as _time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Sequence

import numpy as np

from ..errors import integer
from ..model.engine import Engine
from ..model.workload import Workload
from .core import HIST_BINS_PER_DECADE, HIST_DECADES, HIST_MIN_MS, CoreOutput
from .draws import Requests
from .reference import ReferenceRun, simulate_reference
from .source import StreamSource

__all__ = ["block_requests", "run_scalar", "core_output_of_runs"]

_INT = ("arrived", "completed", "in_system_end", "backlog_tokens_end", "max_in_system", "batches", "batches_full",
        "batches_mixed", "batches_decode_only", "batches_prefill_only", "prefill_tokens", "decode_tokens",
        "unschedulable", "preemptions", "recomputed_tokens")
_LAT = ("ttft", "tbt", "e2e")
_NB = HIST_BINS_PER_DECADE * HIST_DECADES          # the core's histogram bins


def block_requests(workloads: Sequence[Workload], n: int, horizon_ms: float, seed: Any,
                   loads: np.ndarray) -> list[Requests]:
    """The requests of the ``n`` replications of one block, exactly as the vectorized core draws them.

    ``seed`` is the block's seed (:func:`~fluidllm.sim.simulate.block_seed`); the
    :class:`StreamSource` is drained epoch by epoch to the horizon, as the core does during its run.
    """
    src = StreamSource(workloads, n, horizon_ms, np.random.default_rng(seed), scale=loads)
    blocks = []
    while not src.exhausted:
        blocks.append(src.next_block())
    out = []
    for r in range(n):
        cols = [(b.times_ms[r, :b.counts[r]], b.prefill[r, :b.counts[r]], b.decode[r, :b.counts[r]],
                 b.klass[r, :b.counts[r]]) for b in blocks]
        cat = [np.concatenate([c[i] for c in cols]) if cols else np.zeros(0) for i in range(4)]
        out.append(Requests(cat[0].astype(float), cat[1], cat[2], cat[3], src.class_names))
    return out


def _before_horizon(reqs: Requests, horizon_ms: float) -> Requests:
    """The requests arriving before the horizon (later ones are not part of a run, as in the core)."""
    k = reqs.arrival_ms < horizon_ms
    if bool(k.all()):
        return reqs
    return Requests(reqs.arrival_ms[k], reqs.prefill[k], reqs.decode[k], reqs.klass[k], reqs.class_names)


def _seq_sum(x: np.ndarray) -> float:
    """Σ x added one by one in order (as ``np.bincount`` with weights does in the core)."""
    return float(np.bincount(np.zeros(x.size, dtype=np.int64), weights=x, minlength=1)[0]) + 0.0


def _hist(x: np.ndarray) -> np.ndarray:
    """The core's log-binned latency histogram of the values ``x`` (ms)."""
    b = np.floor(np.log10(np.maximum(x, 1e-300) / HIST_MIN_MS) * HIST_BINS_PER_DECADE)
    return np.bincount(np.clip(b, 0, _NB - 1).astype(np.int64), minlength=_NB).astype(np.int32)


def _one(run: ReferenceRun, engine: Engine, grid: np.ndarray, batch_log: bool) -> dict[str, Any]:
    """The core's per-replication outputs of one reference run (definitions of :mod:`.core`)."""
    H = run.horizon_ms
    arr, comp, first = run.arrival_ms, run.completion_ms, run.first_token_ms
    tokens = (run.prefill + run.decode).astype(np.int64)      # initial requests: what was left at time 0
    done = ~np.isnan(comp)
    ids = np.arange(arr.size)
    bs = run.batches
    s = np.array([b.start_ms for b in bs], dtype=float)
    e = np.array([b.end_ms for b in bs], dtype=float)
    P = np.array([b.prefill_tokens for b in bs], dtype=np.int64)
    D = np.array([b.decode_tokens for b in bs], dtype=np.int64)
    n_sys_end = len(run.resident) + len(run.waiting) + len(run.unschedulable)
    arr_sorted = np.sort(arr)
    comp_sorted = np.sort(comp[done])

    def in_system(t_arr: np.ndarray, t_done: np.ndarray) -> np.ndarray:
        """Requests arrived by t_arr (inclusive) and not completed by t_done (inclusive)."""
        return (np.searchsorted(arr_sorted, t_arr, side="right")
                - np.searchsorted(comp_sorted, t_done, side="right")).astype(np.int64)

    o: dict[str, Any] = {}
    o["end_ms"] = float(run.end_ms)
    o["arrived"] = run.n_arrived
    o["completed"] = run.n_completed
    o["in_system_end"] = n_sys_end
    o["backlog_tokens_end"] = run.tokens_left
    # The core takes the peak after each batch: arrivals up to its end, completions up to its start.
    o["max_in_system"] = int(max(int(in_system(e, s).max(initial=0)), n_sys_end))
    n = P + D
    o["batches"] = len(bs)
    o["batches_full"] = int(np.count_nonzero(n == run.token_budget))
    o["batches_mixed"] = int(np.count_nonzero((P > 0) & (D > 0)))
    o["batches_decode_only"] = int(np.count_nonzero((D > 0) & (P == 0)))
    o["batches_prefill_only"] = o["batches"] - o["batches_mixed"] - o["batches_decode_only"]
    o["prefill_tokens"] = int(P.sum())
    o["decode_tokens"] = int(D.sum())
    o["busy_ms"] = float(np.cumsum(e - s)[-1]) if len(bs) else 0.0
    o["unschedulable"] = run.n_unschedulable
    o["preemptions"] = run.preemptions
    o["recomputed_tokens"] = run.recomputed_tokens
    # Steps of the lock-step loop: one per boundary before the horizon (0, batch ends, and the
    # arrival instants at which an idle engine wakes up).
    a = np.unique(arr[(arr > 0) & (arr < H)])
    k = np.searchsorted(s, a, side="left") - 1               # the batch with s_k < a, if any
    inside = (k >= 0) & (a <= e[np.maximum(k, 0)]) if len(bs) else np.zeros(a.size, bool)
    o["steps"] = 1 + int(np.count_nonzero(e < H)) + int(np.count_nonzero(~inside)) if H > 0 else 0
    # Latencies, in the core's event order: by batch end, decode-token events (FCFS) before
    # prefill-only completions (v_d = 0), FCFS within each.
    vd0 = (run.decode == 0).astype(np.int64)
    lat: dict[str, np.ndarray] = {}
    m = ~np.isnan(first)
    order = np.lexsort((ids[m], vd0[m], first[m]))
    lat["ttft"] = (first[m] - arr[m])[order]
    order = np.lexsort((ids[done], vd0[done], comp[done]))
    lat["e2e"] = (comp[done] - arr[done])[order]
    m = done & (run.decode >= 2)
    order = np.lexsort((ids[m], comp[m]))
    lat["tbt"] = ((comp[m] - first[m]) / (run.decode[m] - 1).astype(np.float64))[order]
    o["latency_sum_ms"] = {kd: _seq_sum(lat[kd]) for kd in _LAT}
    o["latency_count"] = {kd: int(lat[kd].size) for kd in _LAT}
    o["latency_hist"] = {kd: _hist(lat[kd]) for kd in _LAT}
    # ∫ N(t) dt as the core: completed sojourns plus (end − arrival) of those still in the system.
    o["in_system_time_ms"] = o["latency_sum_ms"]["e2e"] + n_sys_end * run.end_ms - float(np.sum(arr[~done]))
    # Time series: the state at the boundary that starts the step holding the grid instant.
    G = grid.size
    s_sys = np.zeros(G, np.int64)
    s_back = np.zeros(G, np.int64)
    s_p = np.zeros(G, np.int32)
    s_d = np.zeros(G, np.int32)
    kb = np.searchsorted(s, grid, side="right") - 1
    busy = (kb >= 0) & (grid < e[np.maximum(kb, 0)]) if len(bs) else np.zeros(G, bool)
    # Idle instants: no batch since the last boundary, only never-served requests in the system.
    idle = ~busy
    s_sys[idle] = in_system(grid[idle], grid[idle])
    cum_tok = np.concatenate([[0], np.cumsum(tokens[np.argsort(arr, kind="stable")])])
    tok_arrived = cum_tok[np.searchsorted(arr_sorted, grid[idle], side="right")]
    comp_tok = np.concatenate([[0], np.cumsum(tokens[done][np.argsort(comp[done], kind="stable")])])
    s_back[idle] = tok_arrived - comp_tok[np.searchsorted(comp_sorted, grid[idle], side="right")]
    for kk in np.unique(kb[busy]):
        b = bs[kk]
        g = busy & (kb == kk)
        t = b.start_ms
        # In the system at the boundary: resident (their tokens left, after preemptions) plus
        # arrived, not resident, not completed (waiting or never served: all their tokens).
        res = {i for i, _, _ in b.resident_before}
        out_ids = np.flatnonzero((arr <= t) & ~(done & (comp <= t)))
        back = sum(p + d for _, p, d in b.resident_before) + int(sum(int(tokens[i]) for i in out_ids if i not in res))
        s_sys[g] = out_ids.size
        s_back[g] = back
        s_p[g] = b.prefill_tokens
        s_d[g] = b.decode_tokens
    o["series_in_system"], o["series_backlog_tokens"] = s_sys, s_back
    o["series_prefill_tokens"], o["series_decode_tokens"] = s_p, s_d
    if batch_log:
        two = not engine.batch_time.tokens_only
        kv = engine.kv_capacity_tokens is not None
        o["batch_log"] = [{
            "start_ms": float(b.start_ms), "end_ms": float(b.end_ms), "tokens": tuple(b.tokens),
            "resident_before": tuple(b.resident_before),
            "prefill_tokens": int(b.prefill_tokens), "decode_tokens": int(b.decode_tokens),
            "kv_context_tokens": int(b.kv_context_tokens) if two else None,
            "kv_used_before": int(b.kv_used_before) if kv else None,
        } for b in bs]
    return o


def _run_chunk(args: tuple[Any, ...]) -> list[dict[str, Any]]:
    engine, reqs, horizon_ms, initial, grid, batch_log = args
    return [_one(simulate_reference(engine, r, horizon_ms, initial=initial), engine, grid, batch_log) for r in reqs]


def core_output_of_runs(rows: Sequence[dict[str, Any]], engine: Engine, horizon_ms: float, grid: np.ndarray,
                        batch_log: bool, wall_s: float) -> CoreOutput:
    """Stack per-replication outputs (of :func:`_one`) into a :class:`CoreOutput`."""
    R = len(rows)
    vals: dict[str, Any] = {k: np.array([r[k] for r in rows], dtype=np.int64) for k in _INT}
    vals.update(
        replications=R, horizon_ms=float(horizon_ms), token_budget=engine.token_budget, backend="reference",
        end_ms=np.array([r["end_ms"] for r in rows], dtype=float),
        in_system_time_ms=np.array([r["in_system_time_ms"] for r in rows], dtype=float),
        busy_ms=np.array([r["busy_ms"] for r in rows], dtype=float),
        diverged=np.zeros(R, dtype=bool), diverged_ms=np.full(R, math.nan), grid_ms=grid,
        series_in_system=np.stack([r["series_in_system"] for r in rows]),
        series_backlog_tokens=np.stack([r["series_backlog_tokens"] for r in rows]),
        series_prefill_tokens=np.stack([r["series_prefill_tokens"] for r in rows]),
        series_decode_tokens=np.stack([r["series_decode_tokens"] for r in rows]),
        latency_sum_ms={k: np.array([r["latency_sum_ms"][k] for r in rows], dtype=float) for k in _LAT},
        latency_count={k: np.array([r["latency_count"][k] for r in rows], dtype=np.int64) for k in _LAT},
        latency_hist={k: np.stack([r["latency_hist"][k] for r in rows]) for k in _LAT},
        peak_state_bytes=0, steps=max(r["steps"] for r in rows), wall_s=wall_s,
        batch_log=[r["batch_log"] for r in rows] if batch_log else None)
    return CoreOutput(**vals)


def run_scalar(engine: Engine, requests: Sequence[Requests], horizon_ms: float, *, grid_points: int = 200,
               batch_log: bool = False, initial: Sequence[Sequence[int]] | None = None,
               workers: int = 1) -> CoreOutput:
    """Run every replication of ``requests`` (one :class:`Requests` each) in the reference simulator
    and return the core's outputs (see the module text for what is equal to the core's, and the cost).

    ``workers`` processes share the replications (contiguous chunks; the numbers do not depend on it).

    Raises:
        ModelError: bad arguments or a bad batch time (from the reference).
        PlanViolation: the policy broke the model's rules.
    """
    t0 = _time.perf_counter()
    G = integer(grid_points, "grid_points", minimum=2)
    grid = horizon_ms * np.arange(G) / G
    reqs = [_before_horizon(r, horizon_ms) for r in requests]
    R = len(reqs)
    workers = max(1, min(int(workers), R))
    if workers > 1:
        bounds = np.linspace(0, R, workers + 1).astype(int)
        jobs = [(engine, reqs[a:b], horizon_ms, initial, grid, batch_log) for a, b in zip(bounds[:-1], bounds[1:])]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = [row for part in pool.map(_run_chunk, jobs) for row in part]
    else:
        rows = _run_chunk((engine, reqs, horizon_ms, initial, grid, batch_log))
    return core_output_of_runs(rows, engine, horizon_ms, grid, batch_log, _time.perf_counter() - t0)
