"""Calibration of the stability verdict: how often is a definite verdict wrong at known capacities?

For models whose exact capacity is known, the verdict of :func:`fluidllm.stability` is taken many
times (independent seeds) at load fractions f = 0.95, 0.98, 1.02, 1.05 of the capacity boundary, and
the table reports the fraction of STABLE / UNSTABLE / INCONCLUSIVE verdicts and of *wrong definite*
verdicts (UNSTABLE at f < 1, STABLE at f > 1) with its two-sided 95 % Clopper–Pearson interval,
against the stated bound: at one load only one kind of error is possible, and each kind has
probability <= α/2 per look (:mod:`fluidllm.sim.verdict`; the overall bound on a wrong definite
verdict is α).

Models (every policy work-conserving, the paper's engine model: no k_max, no resident or KV cap, a
batch time that is a function of the token count; Li, Dai, Peng, arXiv 2504.07347, Thm 2: such a
policy is stable iff the offered token rate is below b_max / t(b_max), and that is μ* = max_n
n/t(n) here, so the boundary is exactly ``fluidllm.capacity(model).max_scale``; checked at start):

* ``paper-sarathi``, ``paper-orca``: ``examples/paper_codellama_b512.toml`` (CodeLlama-34B/A100
  staircase c = 11.28 ms, a = 35.47 ms, b0 = 128 dividing b_max = 512; prefill 129, decode
  geometric mean 112) under Sarathi-Serve and Orca;
* ``const-sarathi``: constant 50 ms batches, b_max = 256, prefill 200 tokens, decode geometric
  mean 4 (prefill-heavy, few resident requests: cheap to simulate), Sarathi-Serve;
* ``affine-orca``: t(n) = 20 + 0.1·n ms, b_max = 256, prefill 100, decode geometric mean 8, Orca.

Each run is the verdict :func:`fluidllm.stability` takes — R replications from empty over the
recommended horizon (``horizon_s=None``), α, tolerance 0.02 — in two variants on the same
simulations: ``oracle`` (the default of ``stability``: Theorem 2's fluid growth rate is the
verdict's reference slope) and ``backlog`` (``fluid_oracle=False``: the backlog-only test).

Methods (``--method``):

* ``pooled`` (default): one vectorized simulation of (runs × R) replications per cell (in chunks
  of at most 32 runs, each chunk its own seed), split into runs of R replications, each judged by
  exactly the function ``stability`` applies (:func:`fluidllm.sim.stability._verdict_of`). The runs
  are independent, so this is statistically the same as calling ``stability`` with that many seeds,
  several times cheaper. With ``--extensions K`` the runs still INCONCLUSIVE (in either variant) are
  simulated again on a doubled horizon, fresh draws, up to K times, as ``stability`` re-runs them.
* ``stability``: ``fluidllm.stability(model, load=f*boundary, seed=s, replications=R,
  extensions=K, fluid_oracle=...)`` called once per seed and variant (slow; the literal procedure).

``--extensions`` defaults to 0: one look, the case the stated rates are for. ``stability``'s own
default is 2 (three looks: at most three times the rates, by the union bound).

Run: ``python benchmarks/verdict_calibration.py [--quick] [--seed S] [--alpha A]
[--replications R] [--workers W] [--runs N] [--loads 0.95,0.98,1.02,1.05] [--models a,b]
[--method pooled|stability] [--extensions K] [--json PATH]``. ``--quick``: ``const-sarathi`` only,
10 runs per load (about 75 s on two busy shared cores with ``--workers 2``). Full (default): all four
models, 100 runs per load: hours on two cores (per 32 runs at one load, on two busy cores:
const-sarathi ~1 min, affine-orca 3-6 min, the paper models longer: their recommended horizon is
~2600 s, 17 000 batches); pass ``--workers`` to use more. Progress, and each (model, load) cell's
rows as soon as it completes, go to stderr; the table to stdout.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

import fluidllm as fl
from fluidllm.errors import ModelError, require
from fluidllm.model.io import loads_model
from fluidllm.sim.stability import _horizon_ms, _verdict_of, fluid_slope_tokens_per_s, offered_tokens_per_s

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "examples" / "paper_codellama_b512.toml"
LOADS = (0.95, 0.98, 1.02, 1.05)
TOLERANCE = 0.02
CHUNK_RUNS = 32
VARIANTS = ("oracle", "backlog")

_TOY = """
[engines.e]
token_budget = 256
policy = "{policy}"
batch_time = {batch_time}
[workloads.w]
arrival = {{ kind = "poisson", rate_per_s = 10.0 }}
prefill = {{ kind = "deterministic", value = {prefill} }}
decode  = {{ kind = "geometric", mean = {decode} }}
"""


def build_model(name: str) -> fl.Model:
    """The calibration model ``name`` (one of :data:`MODELS`).

    Raises:
        ModelError: an unknown name.
    """
    if name == "paper-sarathi":
        return fl.load_model(PAPER).with_engine("a100", policy=fl.PolicySpec("sarathi"))
    if name == "paper-orca":
        return fl.load_model(PAPER).with_engine("a100", policy=fl.PolicySpec("orca"))
    if name == "const-sarathi":
        return loads_model(_TOY.format(policy="sarathi", batch_time='{ kind = "constant", c_ms = 50.0 }',
                                       prefill=200, decode=4))
    if name == "affine-orca":
        return loads_model(_TOY.format(policy="orca", batch_time='{ kind = "affine", c_ms = 20.0, a_ms = 0.1 }',
                                       prefill=100, decode=8))
    raise ModelError("models", name, f"must be one of {', '.join(MODELS)}")


MODELS = ("paper-sarathi", "paper-orca", "const-sarathi", "affine-orca")


def boundary_of(model: fl.Model) -> float:
    """The exact capacity boundary (a load multiplier) of a calibration model, checked two ways.

    ``fluidllm.capacity(model).max_scale`` must equal the work-conserving fluid rate b_max/t(b_max)
    over the offered token rate at load 1 (Theorem 2 is exact: every model here has a work-conserving
    policy and μ* attained at b_max).

    Raises:
        ModelError: the two disagree, or the fluid oracle does not apply (the model is unfit).
    """
    scale = float(fl.capacity(model).max_scale)
    (name, eng), = model.engines.items()
    wl = model.workloads_on(name)
    require(eng.policy.work_conserving and fluid_slope_tokens_per_s(eng, wl, 1.0) is not None, "model",
            eng.policy.name, "must be a work-conserving policy on the paper's engine model (Thm 2 exact)")
    mu = eng.token_budget / float(np.asarray(eng.batch_time.tokens_ms(eng.token_budget))) * 1000.0
    fluid_scale = mu / offered_tokens_per_s(wl, 1.0)
    require(abs(scale - fluid_scale) <= 1e-6 * fluid_scale, "model", f"{name}: max_scale {scale:.9g}",
            f"must equal b_max/t(b_max)/offered = {fluid_scale:.9g} (capacity exact)")
    return scale


@dataclass(frozen=True)
class Job:
    """One chunk of runs of one (model, load) cell."""

    model: str
    fraction: float
    load: float
    runs: int
    replications: int
    seed: int
    alpha: float
    extensions: int
    method: str


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _pooled(job: Job) -> dict[str, list[str]]:
    """Verdicts (per variant, one per run) of a chunk by the pooled method."""
    model = build_model(job.model)
    (name, eng), = model.engines.items()
    wl = model.workloads_on(name)
    offered = offered_tokens_per_s(wl, job.load)
    refs = {"oracle": fluid_slope_tokens_per_s(eng, wl, job.load), "backlog": None}
    H = _horizon_ms(eng, wl, job.load)
    R = job.replications
    out: dict[str, list[str | None]] = {k: [None] * job.runs for k in VARIANTS}
    todo = list(range(job.runs))
    for look in range(job.extensions + 1):
        sim = fl.simulate(model, replications=R * len(todo), horizon_s=H / 1000.0, seed=_seed(job.seed, look),
                          load=job.load, engine=name)
        still = []
        for i, run in enumerate(todo):
            rows = np.arange(i * R, (i + 1) * R)
            ok = rows[~sim.diverged[rows]]
            use = ok if ok.size >= 2 else rows
            for k in VARIANTS:
                if out[k][run] is not None and out[k][run] != "INCONCLUSIVE":
                    continue
                v = _verdict_of(sim, use, offered, job.alpha, TOLERANCE, refs[k]).verdict
                if v != "UNSTABLE" and sim.diverged[rows].any():
                    v = "INCONCLUSIVE"
                out[k][run] = v
            if any(out[k][run] == "INCONCLUSIVE" for k in VARIANTS):
                still.append(run)
        todo = still
        if not todo:
            break
        H *= 2
    return {k: [str(v) for v in vs] for k, vs in out.items()}


def _literal(job: Job) -> dict[str, list[str]]:
    """Verdicts of a chunk by calling ``fluidllm.stability`` once per seed and variant."""
    model = build_model(job.model)
    out: dict[str, list[str]] = {k: [] for k in VARIANTS}
    for run in range(job.runs):
        s = _seed(job.seed, run)
        for k in VARIANTS:
            r = fl.stability(model, load=job.load, replications=job.replications, seed=s, alpha=job.alpha,
                             tolerance=TOLERANCE, extensions=job.extensions, fluid_oracle=(k == "oracle"))
            out[k].append(r.verdict)
    return out


def run_job(job: Job) -> tuple[Job, dict[str, list[str]], float]:
    """(job, verdicts per variant, wall seconds)."""
    t0 = time.perf_counter()
    res = _pooled(job) if job.method == "pooled" else _literal(job)
    return job, res, time.perf_counter() - t0


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided exact binomial interval for k successes in n trials."""
    a = 1 - level
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


HEADER = (f"{'model':<14} {'policy':<8} {'f':>5} {'test':<8} {'runs':>5} {'STABLE':>7} {'UNSTAB':>7} "
          f"{'INCONC':>7} {'wrong':>7} {'95% CP interval':>17} {'CP lo <= a/2':>12}")


def summarise(model: str, policy: str, fraction: float, boundary: float, test: str, verdicts: list[str],
              alpha: float, wall_s: float) -> dict[str, Any]:
    """One table row: verdict fractions and the wrong-definite fraction with its 95 % CP interval.

    Wrong: UNSTABLE at fraction < 1, STABLE at fraction > 1 (none at exactly 1, where either is
    arguable); the bound it is held to is alpha/2 (one kind of error per load, per look).
    """
    n = len(verdicts)
    c = {v: verdicts.count(v) for v in ("STABLE", "UNSTABLE", "INCONCLUSIVE")}
    wrong = c["UNSTABLE"] if fraction < 1 else (c["STABLE"] if fraction > 1 else 0)
    lo, hi = clopper_pearson(wrong, n)
    return {"model": model, "policy": policy, "fraction": fraction, "load": fraction * boundary, "test": test,
            "runs": n, "stable": c["STABLE"] / n, "unstable": c["UNSTABLE"] / n,
            "inconclusive": c["INCONCLUSIVE"] / n, "wrong": wrong / n, "wrong_count": wrong,
            "wrong_ci95": [lo, hi], "bound": alpha / 2, "alpha": alpha, "wall_s": wall_s}


def format_row(r: dict[str, Any]) -> str:
    """A row of the table (see :data:`HEADER`)."""
    lo, hi = r["wrong_ci95"]
    ok = "yes" if lo <= r["bound"] else "NO"
    return (f"{r['model']:<14} {r['policy']:<8} {r['fraction']:>5g} {r['test']:<8} {r['runs']:>5d} "
            f"{r['stable']:>7.3f} {r['unstable']:>7.3f} {r['inconclusive']:>7.3f} {r['wrong']:>7.3f} "
            f"{f'[{lo:.3f}, {hi:.3f}]':>17} {ok:>12}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="const-sarathi only, 10 runs per load")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--replications", type=int, default=16, help="R per verdict (stability's default 16)")
    p.add_argument("--workers", type=int, default=1, help="processes (0: one per CPU)")
    p.add_argument("--runs", type=int, default=None, help="verdicts per (model, load); default 100, quick 10")
    p.add_argument("--loads", default=",".join(str(x) for x in LOADS), help="fractions of the boundary")
    p.add_argument("--models", default=None, help=f"comma-separated, of {','.join(MODELS)}")
    p.add_argument("--method", choices=("pooled", "stability"), default="pooled")
    p.add_argument("--extensions", type=int, default=0, help="horizon doublings of INCONCLUSIVE runs")
    p.add_argument("--json", default=None, help="also write the table as JSON to this path")
    a = p.parse_args(argv)
    models = (a.models.split(",") if a.models else (["const-sarathi"] if a.quick else list(MODELS)))
    runs = a.runs if a.runs is not None else (10 if a.quick else 100)
    fractions = [float(x) for x in a.loads.split(",")]
    require(runs >= 1, "runs", runs, "must be >= 1")
    require(a.replications >= 2, "replications", a.replications, "must be >= 2")
    require(0 < a.alpha <= 0.5, "alpha", a.alpha, "must be in (0, 0.5]")
    require(a.extensions >= 0, "extensions", a.extensions, "must be >= 0")
    workers = a.workers or (os.cpu_count() or 1)

    t_start = time.perf_counter()
    jobs = []
    boundaries: dict[str, float] = {}
    policies: dict[str, str] = {}
    for mi, name in enumerate(models):
        boundaries[name] = boundary_of(build_model(name))
        policies[name] = next(iter(build_model(name).engines.values())).policy.name
        for li, f in enumerate(fractions):
            for j, start in enumerate(range(0, runs, CHUNK_RUNS)):
                jobs.append(Job(name, f, f * boundaries[name], min(CHUNK_RUNS, runs - start), a.replications,
                                _seed(a.seed, mi, li, j), a.alpha, a.extensions, a.method))
        print(f"[calibration] {name}: boundary load {boundaries[name]:.6g} (capacity max_scale)",
              file=sys.stderr, flush=True)
    print(f"[calibration] {len(jobs)} chunks, {runs} runs per load, R={a.replications}, alpha={a.alpha}, "
          f"extensions={a.extensions}, method={a.method}, workers={workers}", file=sys.stderr, flush=True)

    cells: dict[tuple[str, float], dict[str, list[str]]] = {}
    walls: dict[tuple[str, float], float] = {}

    def collect(res: tuple[Job, dict[str, list[str]], float], done: int) -> None:
        job, verdicts, wall = res
        key = (job.model, job.fraction)
        cell = cells.setdefault(key, {k: [] for k in VARIANTS})
        for k in VARIANTS:
            cell[k].extend(verdicts[k])
        walls[key] = walls.get(key, 0.0) + wall
        print(f"[calibration] {done}/{len(jobs)} {job.model} f={job.fraction:g}: {job.runs} runs in {wall:.1f} s "
              f"({time.perf_counter() - t_start:.0f} s elapsed)", file=sys.stderr, flush=True)
        if len(cell[VARIANTS[0]]) == runs:          # the cell is complete: its rows now, in case of a stop
            for k in VARIANTS:
                row = summarise(job.model, policies[job.model], job.fraction, boundaries[job.model], k, cell[k],
                                a.alpha, walls[key])
                print("[calibration]   " + format_row(row), file=sys.stderr, flush=True)

    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            for i, res in enumerate(pool.map(run_job, jobs), 1):
                collect(res, i)
    else:
        for i, job in enumerate(jobs, 1):
            collect(run_job(job), i)

    print(f"verdict calibration: R={a.replications} replications per verdict, recommended horizon, alpha={a.alpha}, "
          f"tolerance={TOLERANCE}, extensions={a.extensions}, method={a.method}, seed={a.seed}")
    print(HEADER)
    print("-" * len(HEADER))
    rows = []
    for name in models:
        for f in fractions:
            for k in VARIANTS:
                rows.append(summarise(name, policies[name], f, boundaries[name], k, cells[(name, f)][k], a.alpha,
                                      walls[(name, f)]))
                print(format_row(rows[-1]))
    for k in VARIANTS:
        sub = [r for r in rows if r["test"] == k]
        wrong = sum(r["wrong_count"] for r in sub)
        total = sum(r["runs"] for r in sub)
        lo, hi = clopper_pearson(wrong, total)
        print(f"all cells, {k}: {wrong} wrong definite verdicts of {total} ({wrong / total:.4f}; 95% CP "
              f"[{lo:.4f}, {hi:.4f}]) against alpha/2 = {a.alpha / 2:g} per look")
    print(f"'wrong' is UNSTABLE below the boundary, STABLE above; both tests judge the same simulations; "
          f"wall {time.perf_counter() - t_start:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "args": vars(a), "boundaries": boundaries}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
