"""``simulate_network``: replicated simulation of a network of LLM agents, summarised like ``simulate``.

Each replication is one run from empty over the horizon, of the vectorized network core
(:mod:`fluidllm.sim.network_core`, all replications together) where it runs the model, else of the
reference network simulator (:func:`~fluidllm.sim.network_reference.simulate_network_reference`,
semantics in its module text); the two are equal batch for batch. Replication r uses
``np.random.default_rng([seed, r])`` (as :func:`~fluidllm.sim.network_stability.network_stability`),
so the numbers depend on the seed and the number of replications only, not on ``workers`` or on
the simulator.

Definitions (per replication, then averaged across replications with 95 % Student-t intervals):

* a *job* is a workflow instance; its end-to-end latency runs from its arrival to the completion of
  its last call; ``throughput_requests_per_s`` counts completed jobs per second of the horizon
  (total and per workflow);
* a *request* is one call of one job on one engine; TTFT = first decode token − creation (the instant
  the call was routed), TBT = (completion − first token) / (v_d − 1) for v_d ≥ 2; latency
  percentiles are each replication's empirical quantiles (``numpy.quantile``, linear);
* ``mean_requests_in_system``: the exact time average over [0, horizon) of the requests created and
  not completed; ``max_requests_in_system`` its maximum; the token backlog
  (:func:`~fluidllm.sim.network_stability.network_backlog`) at the horizon is
  ``final_backlog_tokens``;
* per engine: batches, fractions full (P + D = b_max), mixed (prefill and decode tokens) and
  decode-only, and the busy fraction of the horizon.
"""
from __future__ import annotations

import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import finite_number, integer, require
from ..model.network import NetworkModel
from .network_reference import NetworkReferenceRun, simulate_network_reference
from .network_core import NetworkCoreResult
from .network_stability import choose_simulator, network_backlog, network_horizon_ms, run_core_blocks
from .result import mean_interval

__all__ = ["NetworkSimResult", "simulate_network"]

QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
_LAT = ("e2e_ms", "ttft_ms", "tbt_ms")


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _stats(x: np.ndarray) -> dict[str, float]:
    """mean, p50, p90, p99 of one replication's latencies (NaN when none)."""
    if x.size == 0:
        return {"mean": math.nan, **{k: math.nan for k in QUANTILES}}
    return {"mean": float(x.mean()), **{k: float(np.quantile(x, q)) for k, q in QUANTILES.items()}}


def _in_system(run: NetworkReferenceRun, H: float) -> tuple[float, int]:
    """Exact time average over [0, H) and maximum of requests created and not completed."""
    up = run.created_ms[run.created_ms < H]
    comp = run.completion_ms[np.isfinite(run.completion_ms) & (run.completion_ms < H)]
    t = np.concatenate([up, comp])
    step = np.concatenate([np.ones(up.size), -np.ones(comp.size)])
    # completions before creations at one instant (the reference applies batch ends first)
    o = np.lexsort((step, t))
    t, n = t[o], np.cumsum(step[o])
    if t.size == 0:
        return 0.0, 0
    area = float(np.sum(n[:-1] * np.diff(t)) + n[-1] * (H - t[-1]))
    return area / H if H > 0 else 0.0, int(n.max(initial=0))


def _summarise(run: NetworkReferenceRun, H: float, grid: np.ndarray, budgets: dict[str, int]) -> dict[str, Any]:
    """One replication's outputs (plain numbers and arrays; the module text defines them)."""
    out: dict[str, Any] = {}
    done = np.isfinite(run.instance_completion_ms)
    e2e = run.instance_completion_ms[done] - run.instance_arrival_ms[done]
    out["jobs_arrived"] = int(run.n_instances)
    out["jobs_completed"] = int(done.sum())
    out["throughput"] = out["jobs_completed"] / (H / 1000.0)
    flows = {}
    for k, w in enumerate(run.workflow_names):
        mine = run.instance_workflow == k
        flows[w] = {"throughput": int((done & mine).sum()) / (H / 1000.0),
                    "e2e_ms": _stats(run.instance_completion_ms[done & mine] - run.instance_arrival_ms[done & mine])}
    out["workflows"] = flows
    out["e2e_ms"] = _stats(e2e)
    first = np.isfinite(run.first_token_ms) & (run.decode > 0)
    out["ttft_ms"] = _stats(run.first_token_ms[first] - run.created_ms[first])
    multi = np.isfinite(run.completion_ms) & (run.decode >= 2)
    out["tbt_ms"] = _stats((run.completion_ms[multi] - run.first_token_ms[multi]) / (run.decode[multi] - 1))
    out["mean_in_system"], out["max_in_system"] = _in_system(run, H)
    back = network_backlog(run, np.concatenate([grid, [H]]))
    out["series_backlog"], out["final_backlog"] = back[:-1], float(back[-1])
    out["series_in_system"] = run.requests_in_system(grid)
    engines = {}
    for e in run.engine_names:
        bs = run.batches[e]
        n = len(bs)
        full = sum(1 for b in bs if b.n_tokens == budgets[e])
        mixed = sum(1 for b in bs if b.prefill_tokens > 0 and b.decode_tokens > 0)
        dec = sum(1 for b in bs if b.prefill_tokens == 0 and b.decode_tokens > 0)
        busy = sum(min(b.end_ms, H) - b.start_ms for b in bs if b.start_ms < H)
        engines[e] = {"batches": n, "full_fraction": full / n if n else math.nan,
                      "mixed_fraction": mixed / n if n else math.nan,
                      "decode_only_fraction": dec / n if n else math.nan, "busy_fraction": busy / H if H else 0.0}
    out["engines"] = engines
    return out


def _summarise_core(res: NetworkCoreResult, i: int, H: float, budgets: dict[str, int]) -> dict[str, Any]:
    """Row ``i`` of a core run, as :func:`_summarise` gives it for the same replication's reference run."""
    out: dict[str, Any] = {}
    out["jobs_arrived"] = int(res.instances_arrived[i].sum())
    out["jobs_completed"] = int(res.instances_completed[i].sum())
    out["throughput"] = out["jobs_completed"] / (H / 1000.0)
    flows, e2e = {}, []
    for k, w in enumerate(res.workflow_names):
        x = res.e2e_ms[w][res.e2e_row[w] == i]
        e2e.append(x)
        flows[w] = {"throughput": int(res.instances_completed[i, k]) / (H / 1000.0), "e2e_ms": _stats(x)}
    out["workflows"] = flows
    out["e2e_ms"] = _stats(np.concatenate(e2e) if e2e else np.empty(0))
    out["ttft_ms"] = _stats(res.ttft_ms[res.ttft_row == i])
    out["tbt_ms"] = _stats(res.tbt_ms[res.tbt_row == i])
    out["mean_in_system"] = float(res.mean_requests_in_system[i])
    out["max_in_system"] = int(res.max_requests_in_system[i])
    out["series_backlog"] = res.backlog_tokens[i].astype(float)
    out["final_backlog"] = float(res.final_backlog_tokens[i])
    out["series_in_system"] = res.requests_in_system[i]
    engines = {}
    for j, e in enumerate(res.engine_names):
        n = int(res.batches[i, j])
        engines[e] = {"batches": n, "full_fraction": res.full_batches[i, j] / n if n else math.nan,
                      "mixed_fraction": res.mixed_batches[i, j] / n if n else math.nan,
                      "decode_only_fraction": res.decode_only_batches[i, j] / n if n else math.nan,
                      "busy_fraction": float(res.busy_ms[i, j]) / H if H else 0.0}
    out["engines"] = engines
    return out


def _one(job: tuple[NetworkModel, float, int, int, np.ndarray]) -> dict[str, Any]:
    model, H, seed, r, grid = job
    run = simulate_network_reference(model, H, np.random.default_rng([seed, r]))
    return _summarise(run, H, grid, {e: eng.token_budget for e, eng in model.engines.items()})


@dataclass(frozen=True, eq=False)
class NetworkSimResult:
    """Replicated network simulation (:func:`simulate_network`); per-replication values in ``runs``.

    Attributes:
        engines, workflows: names in model order. replications, horizon_s, seed, load: the run.
        runs: one dict per replication (keys of the module text). grid_ms: the time-series grid.
    """

    engines: tuple[str, ...]
    workflows: tuple[str, ...]
    policies: dict[str, str]
    replications: int
    horizon_s: float
    seed: int
    load: float
    runs: tuple[dict[str, Any], ...]
    grid_ms: np.ndarray
    simulator: str = "reference"

    def per_replication(self, key: str) -> np.ndarray:
        """Values of a scalar output (``throughput``, ``mean_in_system``, ``final_backlog``...) per replication."""
        return np.array([r[key] for r in self.runs], dtype=float)

    def _latency(self, get) -> dict[str, Any]:
        out: dict[str, Any] = {}
        ivs: dict[str, Any] = {}
        for stat in ("mean", *QUANTILES):
            m, iv = mean_interval(np.array([get(r)[stat] for r in self.runs], dtype=float))
            out[stat] = _num(m)
            ivs[stat] = None if iv is None else [_num(iv[0]), _num(iv[1])]
        out["intervals"] = ivs
        return out

    def _mean(self, values: np.ndarray) -> dict[str, Any]:
        m, iv = mean_interval(values)
        return {"mean": _num(m), "interval": None if iv is None else [_num(iv[0]), _num(iv[1])]}

    def to_dict(self, series: bool = False) -> dict[str, Any]:
        """JSON-ready: the keys of ``fluidllm simulate --json`` (per-replication lists) plus networks'."""
        d: dict[str, Any] = {
            "network": True, "engines": list(self.engines), "workflows": list(self.workflows),
            "policies": dict(self.policies), "replications": self.replications, "horizon_s": self.horizon_s,
            "seed": self.seed, "load": self.load, "simulator": self.simulator,
            "throughput_requests_per_s": self.per_replication("throughput").tolist(),
            "mean_requests_in_system": self.per_replication("mean_in_system").tolist(),
            "max_requests_in_system": [int(r["max_in_system"]) for r in self.runs],
            "final_backlog_tokens": self.per_replication("final_backlog").tolist(),
            "jobs_arrived": [r["jobs_arrived"] for r in self.runs],
            "jobs_completed": [r["jobs_completed"] for r in self.runs],
            "e2e_ms": self._latency(lambda r: r["e2e_ms"]), "ttft_ms": self._latency(lambda r: r["ttft_ms"]),
            "tbt_ms": self._latency(lambda r: r["tbt_ms"]),
            "batches": {e: {k: [_num(r["engines"][e][k]) for r in self.runs]
                            for k in ("batches", "full_fraction", "mixed_fraction", "decode_only_fraction",
                                      "busy_fraction")} for e in self.engines},
            "per_workflow": {w: {"throughput_requests_per_s": self._mean(
                                     np.array([r["workflows"][w]["throughput"] for r in self.runs])),
                                 "e2e_ms": self._latency(lambda r, w=w: r["workflows"][w]["e2e_ms"])}
                             for w in self.workflows},
            "summary": {k: self._mean(self.per_replication(v)) for k, v in (
                ("throughput_requests_per_s", "throughput"), ("mean_requests_in_system", "mean_in_system"),
                ("final_backlog_tokens", "final_backlog"))},
        }
        if series:
            d["series"] = {"grid_ms": self.grid_ms.tolist(),
                           "in_system": [np.asarray(r["series_in_system"]).tolist() for r in self.runs],
                           "backlog_tokens": [np.asarray(r["series_backlog"]).tolist() for r in self.runs]}
        return d

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(**kw), allow_nan=False)

    def table(self) -> str:
        """A human-readable summary."""
        d = self.to_dict()
        s = d["summary"]

        def f(x: dict[str, Any], unit: str = "") -> str:
            if x["mean"] is None:
                return "n/a"
            iv = x["interval"]
            return f"{x['mean']:.4g}{unit}" + ("" if iv is None else f"  [{iv[0]:.4g}, {iv[1]:.4g}]")

        def lat(x: dict[str, Any]) -> str:
            return "  ".join(f"{k} {'n/a' if x[k] is None else format(x[k], '.4g')}" for k in ("mean", *QUANTILES))

        pol = ", ".join(f"{e}:{p}" for e, p in self.policies.items())
        lines = [f"network [{pol}], {self.replications} replications x {self.horizon_s:g} s, load {self.load:g} "
                 f"({self.simulator} network simulator)",
                 f"  jobs completed      {f(s['throughput_requests_per_s'], ' jobs/s')}",
                 f"  requests in system  {f(s['mean_requests_in_system'])} (time average), max "
                 f"{max(d['max_requests_in_system'])}",
                 f"  backlog at end      {f(s['final_backlog_tokens'], ' tokens')}",
                 f"  e2e ms (jobs)       {lat(d['e2e_ms'])}",
                 f"  TTFT ms (calls)     {lat(d['ttft_ms'])}",
                 f"  TBT ms (calls)      {lat(d['tbt_ms'])}"]
        for w, x in d["per_workflow"].items():
            lines.append(f"  workflow {w:<10} {f(x['throughput_requests_per_s'], ' jobs/s')}; e2e ms {lat(x['e2e_ms'])}")
        for e, x in d["batches"].items():
            def avg(k: str) -> str:
                v = [y for y in x[k] if y is not None]
                return "n/a" if not v else f"{np.mean(v):.3g}"
            lines.append(f"  engine {e:<12} batches {int(np.sum(x['batches']))}: full {avg('full_fraction')}, "
                         f"mixed {avg('mixed_fraction')}, decode-only {avg('decode_only_fraction')}, "
                         f"busy {avg('busy_fraction')}")
        return "\n".join(lines)


def simulate_network(model: NetworkModel, *, replications: int = 8, horizon_s: float | None = None,
                     seed: int = 0, load: float = 1.0, workers: int = 1, grid_points: int = 200,
                     simulator: str = "auto") -> NetworkSimResult:
    """Simulate ``replications`` independent runs of the network ``model`` at ``load`` × its rates.

    Args:
        horizon_s: simulated seconds per run (default: chosen from the network's time scales, as
            :func:`~fluidllm.sim.network_stability.network_stability` does).
        workers: processes sharing the replications (the numbers do not depend on it).
        grid_points: points of the time series in [0, horizon).
        simulator: ``auto`` (the vectorized core where it runs the model, else the reference),
            ``core`` or ``reference`` (:data:`~fluidllm.sim.network_stability.SIMULATORS`).

    Raises:
        ModelError: bad arguments (named). NotImplementedError: a policy the reference does not run.
    """
    require(isinstance(model, NetworkModel), "model", model, "must be a NetworkModel")
    R = integer(replications, "replications", minimum=1)
    seed = integer(seed, "seed", minimum=0)
    load = finite_number(load, "load", minimum=0, strict=True)
    workers = integer(workers, "workers", minimum=1)
    G = integer(grid_points, "grid_points", minimum=2)
    H = (finite_number(horizon_s, "horizon_s", minimum=0, strict=True) * 1000.0 if horizon_s is not None
         else network_horizon_ms(model, load))
    scaled = model.scaled(load)
    sim = choose_simulator(scaled, simulator)
    grid = H * np.arange(G) / G
    budgets = {e: eng.token_budget for e, eng in model.engines.items()}
    if sim == "core":
        runs = [_summarise_core(b, i, H, budgets) for b in run_core_blocks(scaled, H, seed, R, G, workers)
                for i in range(b.replications)]
    else:
        jobs = [(scaled, H, seed, r, grid) for r in range(R)]
        if workers > 1 and R > 1:
            with ProcessPoolExecutor(max_workers=min(workers, R)) as pool:
                runs = list(pool.map(_one, jobs))
        else:
            runs = [_one(j) for j in jobs]
    names = tuple(model.workflows) + tuple(model.workloads)
    return NetworkSimResult(engines=tuple(model.engines), workflows=names,
                            policies={e: eng.policy.name for e, eng in model.engines.items()}, replications=R,
                            horizon_s=H / 1000.0, seed=seed, load=load, runs=tuple(runs), grid_ms=grid,
                            simulator=sim)
