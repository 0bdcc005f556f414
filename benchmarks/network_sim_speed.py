"""Speed of the vectorized network core (fluidllm.sim.network_core) against the network reference.

Simulated requests per second (requests created, all replications, per wall second) of
``run_network_core`` at R = 1, 64, 512 against ``simulate_network_reference`` (one replication), in
the same process, on an example network; ratios against the reference. Replication 0 of the core is
also checked to equal the reference run (same batches) before timing.

    python benchmarks/network_sim_speed.py [--model rybko_stolyar_stable|dag|...] [--horizon-ms H] [--quick]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from fluidllm.model.io import load_model
from fluidllm.sim.network_core import replication_generator, run_network_core
from fluidllm.sim.network_reference import simulate_network_reference

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "networks"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="rybko_stolyar_stable", help="example name in examples/networks")
    ap.add_argument("--horizon-ms", type=float, default=None)
    ap.add_argument("--quick", action="store_true", help="short horizon, R = 1, 64 only")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    model = load_model(EXAMPLES / f"{a.model}.toml")
    H = a.horizon_ms if a.horizon_ms is not None else (200.0 if a.quick else 1000.0)
    reps = (1, 64) if a.quick else (1, 64, 512)

    t0 = time.perf_counter()
    ref = simulate_network_reference(model, H, replication_generator(a.seed, 0))
    t_ref = time.perf_counter() - t0
    ref_rate = ref.n_requests / t_ref
    chk = run_network_core(model, H, 1, a.seed, record=True)
    same = all(chk.batch_log[0][i] == [(b.start_ms, b.end_ms, b.tokens) for b in ref.batches[e]]
               for i, e in enumerate(ref.engine_names))
    print(f"model {a.model}, horizon {H:g} ms, seed {a.seed}; core replication 0 == reference: {same}")
    print(f"{'simulator':<22}{'R':>6}{'requests':>12}{'wall s':>10}{'req/s':>14}{'vs reference':>14}")
    print(f"{'reference':<22}{1:>6}{ref.n_requests:>12}{t_ref:>10.3f}{ref_rate:>14.0f}{1.0:>14.2f}")
    for R in reps:
        t0 = time.perf_counter()
        out = run_network_core(model, H, R, a.seed)
        w = time.perf_counter() - t0
        n = int(out.requests_created.sum())
        print(f"{'network core':<22}{R:>6}{n:>12}{w:>10.3f}{n / w:>14.0f}{n / w / ref_rate:>14.2f}")


if __name__ == "__main__":
    main()
