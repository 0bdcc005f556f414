"""How fast and how tight the simulated policy capacity is (fluidllm.capacity.policy_search).

For each policy: the bracket [lo, hi] on max_scale, its width as a % of the midpoint, the wall time,
the replications and batches simulated (summed over replications), the error bound, and — where
theory has a value (FasterTransformer: the renewal-reward rate of fluidllm.capacity.static; a
work-conserving policy: the LP bound, Theorem 2) — that value and whether the bracket holds it.

Default: the paper's Fig. 1 file (examples/paper_codellama_b512.toml), policies vllm and
fastertransformer, 2 % target. ``--quick``: a small model (100-token prompts, geometric output of
mean 8, b_max = 512, 1 req/s), policies fastertransformer, vllm, sarathi at a 5 % target (~30 s).
``--peer``: also time the previous method, the grid search of fluidllm.stability_boundary over
[0.05, 1.1] × the LP bound (8 loads × 2 rounds × 8 replications, horizon from the model's time
scales), in the same process — on the Fig. 1 file it takes more than 15 minutes on 2 cores.
The load average of the machine is printed before and after (others may share the cores).

Run: ``python benchmarks/policy_capacity_speed.py [--quick] [--peer] [--policies a,b] [--model F]``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import fluidllm as fl
from fluidllm.capacity.policy import policy_capacity
from fluidllm.capacity.policy_search import policy_capacity_search

ROOT = Path(__file__).resolve().parents[1]
FIG1 = ROOT / "examples" / "paper_codellama_b512.toml"


def small_model() -> fl.Model:
    from fluidllm.model.arrivals import PoissonArrival
    from fluidllm.model.batchtime import Staircase
    from fluidllm.model.lengths import Deterministic, Geometric, Independent

    e = fl.Engine("e", 512, Staircase(11.28, 35.47, 128), policy=fl.PolicySpec("sarathi"))
    w = fl.Workload("w", PoissonArrival(1.0), Independent(Deterministic(100), Geometric(8.0)), "e")
    return fl.Model({"e": e}, {"w": w})


def theory(model: fl.Model, policy: str) -> tuple[float | None, str]:
    """An independent value where theory has one: (max_scale, how)."""
    pc = policy_capacity(model, policy)
    if pc.method != "simulated":
        return pc.max_scale, pc.method
    return None, "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small model, 5 %% target")
    ap.add_argument("--peer", action="store_true", help="also time fluidllm.stability_boundary (slow)")
    ap.add_argument("--model", help="a model file (default: the Fig. 1 file, or the small model with --quick)")
    ap.add_argument("--policies", help="comma-separated policies")
    ap.add_argument("--precision", type=float, help="width target (default 0.02; 0.05 with --quick)")
    ap.add_argument("--replications", type=int, default=8, help="fewest replications per load (default 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--progress", action="store_true", help="one line per simulation call on stderr")
    a = ap.parse_args()
    model = fl.load_model(a.model) if a.model else (small_model() if a.quick else fl.load_model(FIG1))
    label = a.model or ("small model (100 + geometric(8) tokens, 1 req/s)" if a.quick else str(FIG1.relative_to(ROOT)))
    policies = a.policies.split(",") if a.policies else (["fastertransformer", "vllm", "sarathi"] if a.quick
                                                         else ["vllm", "fastertransformer"])
    precision = a.precision if a.precision is not None else (0.05 if a.quick else 0.02)
    fl.capacity(model)                                      # warm imports and solver
    la0 = os.getloadavg()
    print(f"# {label}: LP bound max_scale {fl.capacity(model).max_scale:.5g}; target width {100 * precision:g} %; "
          f"seed {a.seed}; {os.cpu_count()} CPUs, load average {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f}")
    head = (f"{'policy':<18} {'bracket [lo, hi]':>24} {'width %':>8} {'wall s':>8} {'reps':>6} {'batches':>10} "
            f"{'P(wrong)<=':>10} {'theory':>10} {'holds':>6}")
    print(head)
    print("-" * len(head))
    for p in policies:
        t0 = time.perf_counter()
        r = policy_capacity_search(model, p, precision=precision, replications=a.replications, seed=a.seed,
                                   workers=a.workers, progress=a.progress)
        wall = time.perf_counter() - t0
        th, how = theory(model, p)
        holds = "-" if th is None else ("yes" if r.lo <= th <= r.hi else "NO")
        ths = "-" if th is None else f"{th:.5g}"
        print(f"{p:<18} {f'[{r.lo:.5g}, {r.hi:.5g}]':>24} {100 * r.width_fraction:8.2f} {wall:8.1f} "
              f"{r.replication_runs:6d} {r.batches:10d} {r.error_bound:10.3g} {ths:>10} {holds:>6}", flush=True)
        for n in r.notes:
            print(f"    note: {n}")
        if a.peer:
            from fluidllm.sim.stability import stability_boundary

            U = fl.capacity(model).max_scale
            m = model.with_engine(r.engine, policy=fl.PolicySpec(p))
            t0 = time.perf_counter()
            b = stability_boundary(m, lo=0.05 * U, hi=1.1 * U, points=8, rounds=2, replications=8, seed=a.seed,
                                   engine=r.engine)
            pw = time.perf_counter() - t0
            lo = b.stable_load if b.stable_load is not None else 0.0
            hi = b.unstable_load if b.unstable_load is not None else 1.1 * U
            mid = 0.5 * (lo + hi)
            print(f"{'  peer: grid':<18} {f'[{lo:.5g}, {hi:.5g}]':>24} {100 * (hi - lo) / mid:8.2f} {pw:8.1f} "
                  f"{'':>6} {'':>10} {'':>10} {'':>10} {'':>6}   ours {pw / wall:.1f}x faster", flush=True)
    la1 = os.getloadavg()
    print(f"# load average after: {la1[0]:.2f} {la1[1]:.2f} {la1[2]:.2f}", file=sys.stdout)


if __name__ == "__main__":
    main()
