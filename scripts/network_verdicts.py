"""The network verdict table: fluid prediction beside the replicated simulation, for the issue's cases.

Cases: a DAG and a fork-join workflow (K-FCFS) at 0.9 and 1.1 of the LP capacity; the Rybko–Stolyar
network at 0.9 load per engine under priority to the exiting classes, under the reverse priority and
under max-pressure; K = 2, 4, 8 JSQ replicas at 0.85 and 1.15 of K·μ*/(m_p + m_d) (Prop. 3).
Each row: the LP max_scale, the fluid verdict and its slope from empty (tokens/s), and the simulated
backlog verdict (α = 0.01) with its slope and 99 % interval. ``--quick`` shortens the horizons.

    python scripts/network_verdicts.py [--replications 8] [--workers 2] [--quick] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import fluidllm as fl  # noqa: E402
from fluidllm.sim.network_stability import network_stability  # noqa: E402
from proofs_checks.check_network_dag_forkjoin import DAG, FORK_JOIN, network  # noqa: E402
from proofs_checks.check_prop3_jsq_k_engines import _model as jsq_model, lam_star_per_s  # noqa: E402


def cases(quick: bool):
    h = 0.5 if quick else 1.0
    for name, text in (("DAG, K-FCFS", DAG), ("fork-join, K-FCFS", FORK_JOIN)):
        m = network(text)
        cap = fl.capacity(m).max_scale
        for x in (0.9, 1.1):
            yield f"{name}, {x} x LP", m, x * cap, 3.0 * h
    ex = ROOT / "examples" / "networks"
    for name, f, hs in (("Rybko-Stolyar, priority to exiting classes", "rybko_stolyar.toml", 6.0),
                        ("Rybko-Stolyar, priority to entering classes", "rybko_stolyar_stable.toml", 6.0),
                        ("Rybko-Stolyar, max-pressure", "rybko_stolyar_maxpressure.toml", 4.0)):
        yield name + ", 0.9 per engine", fl.load_model(ex / f), 1.0, hs * h
    for K in (2, 4, 8):
        m = jsq_model(K, lam_star_per_s(K), "jsq-tokens")     # rates at Prop. 3's capacity
        cap = fl.capacity(m).max_scale
        for x in (0.85, 1.15):
            yield f"{K} engines JSQ, {x} x K mu*/(m_p+m_d)", m, x * cap, 20.0 * h


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replications", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = []
    for name, m, load, hs in cases(a.quick):
        t = time.perf_counter()
        r = network_stability(m, load=load, replications=a.replications, horizon_s=hs, seed=0, workers=a.workers,
                              extensions=0)
        lo, hi = r.slope_interval
        fluid_says = {"DRAINS": "STABLE", "CONTRACTS": "STABLE", "DIVERGES": "UNSTABLE"}.get(r.fluid_verdict or "")
        rows.append({"case": name, "max_engine_load": max(r.engine_loads.values()), "fluid": r.fluid_verdict,
                     "fluid_slope_tokens_per_s": r.fluid_slope_tokens_per_s, "verdict": r.verdict,
                     "slope_tokens_per_s": r.slope_tokens_per_s, "slope_interval": [lo, hi],
                     "agree": None if fluid_says is None else fluid_says == r.verdict,
                     "horizon_s": hs, "replications": r.replications, "simulator": r.simulator,
                     "wall_s": time.perf_counter() - t})
        if not a.json:
            x = rows[-1]
            fs = "n/a" if x["fluid_slope_tokens_per_s"] is None else f"{x['fluid_slope_tokens_per_s']:.4g}"
            print(f"| {name} | {x['max_engine_load']:.3f} | {x['fluid']} {fs} | {x['verdict']} "
                  f"{x['slope_tokens_per_s']:.4g} [{lo:.4g}, {hi:.4g}] | {x['agree']} | "
                  f"{a.replications} x {hs:g} s, {x['simulator']}, {x['wall_s']:.0f} s wall |", flush=True)
    if a.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
