#!/usr/bin/env python3
"""Stability demo (``make demo``): the paper's four policies below and above capacity.

Workload: the paper's Fig. 1 (``examples/paper_codellama_b512.toml``): Poisson arrivals, 129 prompt
tokens, geometric output with mean 112 tokens, on CodeLlama-34B/A100 (staircase batch time
c = 11.28 ms, a = 35.47 ms, b0 = 128) with token budget b_max = 512. The loads are fractions of the
capacity λ* = μ*/(m_p + m_d) that :func:`fluidllm.capacity` computes: the file's rate times
``fraction × max_scale``.

For each policy (Sarathi-Serve, Orca, vanilla vLLM, FasterTransformer) and each load it prints
:meth:`fluidllm.StabilityResult.line`: the verdict (STABLE / UNSTABLE / INCONCLUSIVE, a wrong definite
verdict has probability <= α = 0.01), the backlog's late slope in tokens/s with its 99 % interval, and
the fluid oracle's slope max(0, λ(m_p + m_d) − μ*) for work-conserving policies (Li, Dai, Peng,
arXiv 2504.07347, Thm 2; "n/a" where it does not apply). The horizon is the library's default, picked
from the model's time scales. Runs in parallel processes (``--jobs``, default min(2, CPUs)).

Usage: ``python scripts/demo_stability.py [--replications R] [--fractions 0.75,1.1] [--jobs N]``
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import fluidllm as fl  # noqa: E402

MODEL = ROOT / "examples" / "paper_codellama_b512.toml"
POLICIES = ("sarathi", "orca", "vllm", "fastertransformer")


def _one(job: tuple[str, float, int, int]) -> tuple[str, float]:
    policy, load, replications, seed = job
    model = fl.load_model(MODEL)
    engine = next(iter(model.engines))
    model = model.with_engine(engine, policy=fl.PolicySpec(policy))
    t0 = time.perf_counter()
    res = fl.stability(model, load=load, replications=replications, seed=seed)
    return res.line(), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replications", type=int, default=8)
    p.add_argument("--fractions", default="0.75,1.1", help="loads as fractions of capacity (comma separated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    a = p.parse_args(argv)
    fractions = [float(x) for x in a.fractions.split(",")]

    model = fl.load_model(MODEL)
    cap = fl.capacity(model)
    (ename, eng), = cap.engines.items()
    (wname, w), = model.workloads.items()
    print(f"== stability: {MODEL.relative_to(ROOT)} ({w.arrival.rate_per_s:g} req/s = "
          f"{1 / cap.max_scale:.3f} of capacity {w.arrival.rate_per_s * cap.max_scale:.4g} req/s; "
          f"mu* = {eng.max_token_rate_per_s:.5g} tokens/s)")
    print(f"   load = fraction of capacity x max_scale {cap.max_scale:.5g}; {a.replications} replications; "
          f"horizon chosen by the library from the model's time scales (doubled while INCONCLUSIVE)")
    jobs = [(pol, f * cap.max_scale, a.replications, a.seed) for pol in POLICIES for f in fractions]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, a.jobs)) as ex:
        for (pol, load, _, _), (line, wall) in zip(jobs, ex.map(_one, jobs)):
            frac = load / cap.max_scale
            print(f"{frac:4.2f} x cap  {line}  [{wall:.0f} s]", flush=True)
    print(f"   (slope: backlog growth in tokens/s over the last third, 99% interval; fluid: the fluid-limit "
          f"slope for work-conserving policies; total {time.perf_counter() - t0:.0f} s wall)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
