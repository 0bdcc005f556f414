"""Trace-driven plans confirmed by simulation: the table of ``examples/planning/README.md``.

For each case, ``plan_engines`` gives K (the fewest engines at utilisation 0.8), then
``confirm_plan`` replays the real trace into K and K − 1 engines. It runs R replications from
random rows over six replay cycles (the default horizon) on the vectorized network core. Each row
prints the verdict at K and K − 1 with slopes and 99 % intervals, the fluid growth rate
(load − 1) × capacity at an overloaded K − 1, and the wall time.

    python scripts/confirm_plans.py [--cases code10,conv10,conv1-34b] [--replications 16] [--workers 2] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fluidllm.capacity.planning import confirm_plan, plan_engines  # noqa: E402

ENGINE = str(ROOT / "examples" / "planning" / "llama2_7b_h100.toml")
CASES = {
    "code10": ("Azure code, Llama-2-7B/H100, rate scale 10", "azure-code-2023", {"engine": ENGINE, "rate_scale": 10}),
    "conv10": ("Azure conv, Llama-2-7B/H100, rate scale 10", "azure-conv-2023", {"engine": ENGINE, "rate_scale": 10}),
    "conv1-34b": ("Azure conv, CodeLlama-34B/A100, rate scale 1", "azure-conv-2023",
                  {"preset": "codellama-34b-a100"}),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--replications", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    names = [c.strip() for c in a.cases.split(",") if c.strip()]
    bad = [n for n in names if n not in CASES]
    if bad:
        print(f"error: --cases = {bad[0]}: must be one of {', '.join(CASES)}", file=sys.stderr)
        return 2
    rows = []
    for n in names:
        title, trace, kw = CASES[n]
        plan = plan_engines(trace, **kw)
        t0 = time.perf_counter()
        c = confirm_plan(plan, replications=a.replications, seed=a.seed, extensions=0, workers=a.workers)
        wall = time.perf_counter() - t0
        km1 = c.at_k_minus_1
        fluid = None
        if km1 is not None and km1.load > 1:
            cap_tok = plan.offered_tokens_per_s / km1.load          # capacity of K − 1 engines, tokens/s
            fluid = (km1.load - 1) * cap_tok
        rows.append({"case": n, "title": title, "confirmed": c.confirmed, "wall_s": wall, "fluid_k_minus_1": fluid,
                     **c.to_dict()})
        if not a.json:
            print(f"{title}  ({wall:.0f} s)\n{c.table()}")
            if fluid is not None:
                print(f"fluid growth at K - 1: {fluid:.6g} tokens/s\n", flush=True)
    if a.json:
        print(json.dumps(rows, allow_nan=False))
    return 0 if all(r["confirmed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
