"""Sweep throughput: points per second of a 1,000-point capacity sweep in this process, on local worker
processes and on a loopback Dask cluster (2 workers), and the results store's cost per point.

The sweep: the capacity LP (cheap, ~tens of ms a point) on the paper's Fig. 1 engine over 100 token
budgets x 10 loads. Each run starts from an empty results folder; ratios are against the in-process
run (``--workers 1``) in the same process. The store overhead is measured on the in-process run's
points: the time of :func:`fluidllm.sweep.store.write_point` (Parquet write, fsync, rename, folder
fsync) per point against the point's compute time (its ``seconds`` column).

    python benchmarks/sweep_speed.py [--quick] [--workers 2] [--no-dask]

``--quick``: 100 points (10 budgets x 10 loads).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from fluidllm._stdio import json_stdout
from fluidllm.sweep import load_results, load_sweep, run_sweep
from fluidllm.sweep.analyses import OUT_COLUMNS
from fluidllm.sweep.store import write_point

MODEL = Path(__file__).resolve().parent.parent / "examples" / "paper_codellama_b512.toml"


def _sweep_file(folder: Path, budgets: int) -> Path:
    step = 896 // budgets
    tb = [128 + step * i for i in range(budgets)]
    p = folder / "bench.toml"
    p.write_text(f'model = "{MODEL}"\nanalyses = ["capacity"]\nseed = 1\n[grid]\n'
                 f'"engines.a100.token_budget" = {tb}\nload = {[round(0.2 * (i + 1), 1) for i in range(10)]}\n')
    return p


def _store_cost(results: str, point_ids: tuple[str, ...], scratch: Path) -> tuple[float, float]:
    """(mean write+fsync seconds per point, mean compute seconds per point) over the stored points."""
    df = load_results(results, point_ids)
    outs = [c for spec in OUT_COLUMNS.values() for c in spec]
    writes, computes = [], []
    for pid, g in df.groupby("point_id", sort=False):
        params = {c[len("param."):]: g[c].iloc[0].item() if hasattr(g[c].iloc[0], "item") else g[c].iloc[0]
                  for c in g.columns if c.startswith("param.")}
        rows = [{**{c: (None if r[c] != r[c] else r[c]) for c in outs}, "analysis": r["analysis"],
                 "seconds": r["seconds"], "error": None, "fluidllm_version": r["fluidllm_version"]}
                for _, r in g.iterrows()]
        t0 = time.perf_counter()
        write_point(scratch, pid, params, rows)
        writes.append(time.perf_counter() - t0)
        computes.append(float(g["seconds"].sum()))
    return statistics.fmean(writes), statistics.fmean(computes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 points instead of 1,000")
    ap.add_argument("--workers", type=int, default=2, help="local worker processes and Dask workers (default 2)")
    ap.add_argument("--no-dask", action="store_true", help="skip the loopback Dask cluster")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fluidllm-sweep-bench-") as tmp:
        tmp = Path(tmp)
        spec = load_sweep(_sweep_file(tmp, 10 if a.quick else 100))
        n = len(spec.points)
        runs: list[tuple[str, int, float]] = []
        with json_stdout():  # keep the LP solver's banner off the table
            r1 = run_sweep(spec, results=tmp / "inproc", workers=1, progress=False)
            runs.append(("in-process", 1, r1.wall_s))
            r2 = run_sweep(spec, results=tmp / "local", workers=a.workers, progress=False)
            runs.append(("local processes", r2.workers, r2.wall_s))
            if not a.no_dask:
                from distributed import LocalCluster

                t0 = time.perf_counter()
                with LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
                    start = time.perf_counter() - t0
                    r3 = run_sweep(spec, results=tmp / "dask", scheduler=cluster.scheduler_address, progress=False)
                runs.append((f"dask loopback (+{start:.1f} s start)", a.workers, r3.wall_s))
            w, c = _store_cost(r1.results, r1.point_ids, tmp / "store")
        base = n / r1.wall_s
        print(f"{n}-point capacity sweep (paper Fig. 1 engine, token budget x load); wall s include pool start")
        print(f"{'run':<34}{'workers':>8}{'wall s':>10}{'points/s':>11}{'vs in-process':>15}")
        for name, k, wall in runs:
            print(f"{name:<34}{k:>8}{wall:>10.2f}{n / wall:>11.1f}{n / wall / base:>15.2f}")
        print(f"\nresults store, per point (in-process run's {n} points): write + fsync {w * 1e3:.2f} ms, "
              f"compute {c * 1e3:.2f} ms, store / compute = {w / c:.3f}")


if __name__ == "__main__":
    main()
