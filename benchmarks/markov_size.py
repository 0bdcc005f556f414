"""How large an exact chain fluidllm builds and solves, and how its solver compares with a direct one.

For each chain policy on a small instance (b_max = 3, prompts of 1 or 2 tokens, decode 0 or 1
token, at most 2 arrivals per batch, about 0.8 of capacity) the truncation ``max_requests`` grows
until a build + solve passes ``--budget-s``. Per size: states, transitions, build and solve seconds
(``method="auto"``: SuperLU up to 4000 states, then preconditioned GMRES), the residual
‖πP − π‖₁, and — up to ``--direct-max`` states — the same solve by SuperLU (``method="direct"``,
the peer, run in this process) with the ratio of the two times and the largest |π_auto − π_direct|.

    python benchmarks/markov_size.py [--budget-s 8] [--direct-max 10000] [--policies sarathi,fastertransformer]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from fluidllm import Engine, PolicySpec
from fluidllm.markov import build_chain, solve, stationary
from fluidllm.model.batchtime import Constant

LAWS = dict(prefill={1: 0.5, 2: 0.5}, decode={0: 0.5, 1: 0.5}, arrivals={0: 0.45, 1: 0.35, 2: 0.2})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=8.0, help="stop growing once build + solve takes this long")
    ap.add_argument("--direct-max", type=int, default=10_000, help="largest chain also solved by SuperLU (its fill-in makes 29k states take minutes)")
    ap.add_argument("--policies", default="sarathi,orca,kfcfs,vllm,fastertransformer")
    a = ap.parse_args()
    print("| policy | max_requests | states | transitions | build s | solve s | residual | SuperLU s | "
          "auto / SuperLU | max abs diff | truncation mass |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    largest = (0, "", 0.0, 0.0)
    for pol in a.policies.split(","):
        eng = Engine("e", 3, Constant(1.0), policy=PolicySpec(pol))
        for m in range(3, 40):
            chain = build_chain(eng, max_requests=m, max_states=2_000_000, **LAWS)
            r = solve(chain)
            pi = stationary(chain)
            res = float(np.abs(pi @ chain.P - pi).sum())
            direct = ratio = diff = "—"
            if chain.n_states <= a.direct_max:
                t0 = time.perf_counter()
                pd = stationary(chain, "direct")
                td = time.perf_counter() - t0
                direct, ratio, diff = f"{td:.3f}", f"{r.solve_seconds / td:.2f}", f"{np.abs(pd - pi).max():.1e}"
            print(f"| {pol} | {m} | {chain.n_states} | {chain.P.nnz} | {r.build_seconds:.3f} | {r.solve_seconds:.3f} "
                  f"| {res:.1e} | {direct} | {ratio} | {diff} | {r.truncation_mass:.2e} |", flush=True)
            if chain.n_states > largest[0]:
                largest = (chain.n_states, pol, r.build_seconds, r.solve_seconds)
            if r.build_seconds + r.solve_seconds > a.budget_s:
                break
    n, pol, b, s = largest
    print(f"\nlargest chain solved: {n} states ({pol}), built in {b:.2f} s, solved in {s:.2f} s")


if __name__ == "__main__":
    main()
