"""How fast the vectorized simulator runs, against two peers run in the same process.

Scenario (``benchmarks/sim_speed_model.toml``): one engine, Sarathi-Serve, token budget b_max = 512,
the paper's staircase batch time (c = 11.28 ms, a = 35.47 ms, b0 = 128: CodeLlama-34B/A100),
deterministic requests (v_p, v_d) = (100, 100), Poisson arrivals at exactly 0.9 of capacity
(λ* = μ*/(m_p + m_d), μ* = 512/153.16 tokens/ms; rescaled with ``fluidllm.capacity``), 20
simulated minutes.

Engines:

* reference: :func:`fluidllm.sim.simulate_reference` (the plain oracle), one replication;
* SimPy: ``benchmarks/simpy_engine.py``, what one writes in SimPy (it runs batch for batch like the
  reference: ``tests/test_simpy_engine.py``; the table's ``agree`` line re-checks it on these draws),
  one replication;
* vectorized: ``fluidllm.simulate(model, replications=R, horizon_s=..., seed=1, backend=...)`` for
  each R (default 1, 64, 1024, 8192), timed end to end (draws included) after one untimed warm-up
  call. If ``fluidllm.simulate`` does not exist yet, its rows say so.

The peers replay requests drawn beforehand with :func:`fluidllm.sim.draw_requests` (draw time not
counted, which favours the peers). Each peer runs the full horizon if a short pilot run predicts
that it takes at most ``--peer-budget-s`` (default 60 s), else a shorter horizon (a multiple of
60 s), shown in the ``sim s`` column: rates are simulated requests (arrived by the end of the run)
per wall second, so the rows stay comparable. One timed run per row; wall time is never asserted.

Memory per replication: for the vectorized core ``SimResult.peak_state_bytes / R``; for the peers
the peak of Python allocations during one more (untimed) run under ``tracemalloc``, outputs
included (the reference keeps a batch log).

Run: ``python benchmarks/sim_speed.py [--quick] [--backend numpy|cupy|torch] [--device cpu|cuda]
[--horizon-s S] [--replications 1,64,1024,8192] [--json PATH]``. Needs ``simpy`` (``pip install -e '.[bench]'``).
``--device`` (torch only) pins the torch backend to a device (default: CUDA when visible); e.g. the GPU
run of ``scripts/gpu_calibration.sh``: ``--backend torch --device cuda --replications 65536``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

import fluidllm as fl
from fluidllm.model import Staircase
from fluidllm.sim import draw_requests, simulate_reference
from fluidllm.sim.simulate import BLOCK

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simpy_engine import simulate_simpy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL_TOML = Path(__file__).resolve().parent / "sim_speed_model.toml"
LOAD = 0.9
SEED = 1
FULL_HORIZON_S = 1200.0
QUICK_HORIZON_S = 60.0
PILOT_S = 60.0


def build_model() -> tuple[fl.Model, float]:
    """The scenario's model, rescaled so that the load is exactly ``LOAD``; and λ* in req/s."""
    model = fl.load_model(MODEL_TOML)
    model = model.scaled(LOAD * fl.capacity(model).max_scale)
    scale = fl.capacity(model).max_scale
    assert abs(scale * LOAD - 1.0) < 1e-9, scale
    (eng,) = model.engines.values()
    assert eng.policy.name == "sarathi" and isinstance(eng.batch_time, Staircase)
    (w,) = model.workloads.values()
    return model, w.rate_per_s * scale


def staircase_ms(bt: Staircase):
    """t(n) in plain Python for the SimPy peer (equal to ``bt.tokens_ms(n)`` to the last bit)."""
    c, a, b0 = bt.c_ms, bt.a_ms, bt.b0
    return lambda n: c + a * math.ceil(n / b0)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def peer_horizon_s(run, target_s: float, budget_s: float) -> float:
    """The full ``target_s`` if a pilot run predicts <= budget_s (with a 2x margin for the empty
    start of the pilot), else the longest multiple of 60 s that fits; the pilot warms up too."""
    pilot = min(PILOT_S, target_s)
    wall, _ = timed(lambda: run(pilot))
    per_sim_s = max(wall, 1e-9) / pilot
    if 2.0 * per_sim_s * target_s <= budget_s:
        return target_s
    return max(pilot, math.floor(budget_s / (2.0 * per_sim_s) / 60.0) * 60.0)


def row(engine: str, R: int, sim_s: float, arrived: int, completed: float, wall: float, mem_mb: float,
        note: str = "") -> dict:
    return {"engine": engine, "replications": R, "horizon_s": sim_s, "requests": int(arrived),
            "completed_per_replication": completed, "wall_s": wall,
            "requests_per_wall_s": arrived / wall if wall > 0 else math.nan,
            "memory_mb_per_replication": mem_mb, "note": note}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="60 simulated seconds, R = 1, 64 (smoke test)")
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy", "torch"])
    ap.add_argument("--device", default=None,
                    help="torch backend only: cpu, cuda or cuda:N (default: cuda when visible, else cpu)")
    ap.add_argument("--horizon-s", type=float, default=None, help="simulated seconds (default 1200; --quick 60)")
    ap.add_argument("--replications", default=None, help="comma-separated R list (default 1,64,1024,8192)")
    ap.add_argument("--peer-budget-s", type=float, default=60.0,
                    help="longest wall time for one peer run before its horizon is shortened")
    ap.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="also run R > fluidllm.sim.simulate.BLOCK with this many worker processes (blocks in parallel)")
    args = ap.parse_args(argv)

    horizon_s = args.horizon_s or (QUICK_HORIZON_S if args.quick else FULL_HORIZON_S)
    reps = [int(x) for x in (args.replications or ("1,64" if args.quick else "1,64,1024,8192")).split(",")]
    backend = args.backend
    if args.device is not None:
        if args.backend != "torch":
            ap.error("--device applies to --backend torch only")
        import torch

        if args.device.startswith("cuda") and not torch.cuda.is_available():
            ap.error(f"--device {args.device}: torch sees no CUDA GPU")
        from fluidllm.sim.backend import _TorchBackend

        # a Backend instance passes through get_backend unchanged: this pins the device
        backend = _TorchBackend(args.device)
    model, lam_star = build_model()
    (eng,) = model.engines.values()
    workloads = list(model.workloads.values())
    lam = workloads[0].rate_per_s
    import simpy

    print(f"Sarathi, b_max = {eng.token_budget}, staircase (c, a, b0) = ({eng.batch_time.c_ms}, "
          f"{eng.batch_time.a_ms}, {eng.batch_time.b0}), (v_p, v_d) = (100, 100), Poisson "
          f"{lam:.4f} req/s = {LOAD} x capacity {lam_star:.4f} req/s; horizon {horizon_s:g} s; seed {SEED}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, simpy {simpy.__version__}, "
          f"{os.cpu_count()} CPUs ({platform.machine()})")

    rows: list[dict] = []

    # (a) the reference and (b) SimPy: one replication each, on the same draws.
    def run_ref(h_s: float):
        h = h_s * 1e3
        req = draw_requests(workloads, h, SEED)
        return simulate_reference(eng, req, h)

    t_of = staircase_ms(eng.batch_time)

    def run_simpy(h_s: float):
        h = h_s * 1e3
        req = draw_requests(workloads, h, SEED)
        return simulate_simpy(req, eng.token_budget, t_of, h, eng.max_batch_requests)

    peer_out = {}
    for name, fn in (("reference", run_ref), ("SimPy", run_simpy)):
        h_s = peer_horizon_s(fn, horizon_s, args.peer_budget_s)
        req = draw_requests(workloads, h_s * 1e3, SEED)
        if name == "reference":
            call = lambda: simulate_reference(eng, req, h_s * 1e3)  # noqa: E731
        else:
            call = lambda: simulate_simpy(req, eng.token_budget, t_of, h_s * 1e3, eng.max_batch_requests)  # noqa: E731
        wall, out = timed(call)
        mem = peak_bytes(call) / 1e6
        if name == "reference":
            arrived, completed = out.n_arrived, out.n_completed
        else:
            arrived, completed = out.arrived, out.completed
        note = "" if h_s == horizon_s else f"shorter horizon: full run would exceed {args.peer_budget_s:g} s"
        label = "reference (plain Python)" if name == "reference" else f"SimPy {simpy.__version__}"
        rows.append(row(label, 1, h_s, arrived, float(completed), wall, mem, note))
        peer_out[name] = (h_s, out)

    (h_ref, ref), (h_sp, sp) = peer_out["reference"], peer_out["SimPy"]
    if h_ref == h_sp:
        same = sp.batches == [(b.start_ms, b.end_ms, b.prefill_tokens, b.decode_tokens) for b in ref.batches]
        agree = f"SimPy and reference agree batch for batch ({len(ref.batches)} batches): {'yes' if same else 'NO'}"
    else:
        same = None
        agree = "SimPy and reference ran different horizons: batch-for-batch check skipped"

    # (c) the vectorized core.
    simulate = getattr(fl, "simulate", None)
    vec_note = ""
    if simulate is None:
        vec_note = "vectorized core not available (fluidllm.simulate is missing)"
    else:
        try:
            simulate(model, replications=1, horizon_s=min(10.0, horizon_s), seed=0, backend=backend)  # warm-up
        except Exception as e:  # noqa: BLE001 - a backend that cannot start is reported, not fatal
            vec_note = f"vectorized core failed on backend {args.backend}: {type(e).__name__}: {e}"
        else:
            runs = [(R, 1) for R in reps]
            if args.workers > 1 and args.backend == "numpy":
                runs += [(R, args.workers) for R in reps if R > BLOCK]
            for R, workers in runs:
                name = f"vectorized {args.backend}" + (f" {args.device}" if args.device else "") + (
                    f" x{workers} procs" if workers > 1 else "")
                try:
                    wall, res = timed(lambda: simulate(model, replications=R, horizon_s=horizon_s, seed=SEED,
                                                       backend=backend, workers=workers))
                except Exception as e:  # noqa: BLE001
                    rows.append(row(name, R, horizon_s, 0, math.nan, math.nan, math.nan,
                                    f"failed: {type(e).__name__}: {e}"))
                    continue
                arrived = int(np.sum(res.requests_arrived))
                completed = float(np.mean(res.requests_completed))
                r = row(name, R, horizon_s, arrived, completed, wall, res.peak_state_bytes / R / 1e6)
                r["inner_wall_s"] = float(res.wall_s)
                r["workers"] = workers
                rows.append(r)

    ref_rate, simpy_rate = rows[0]["requests_per_wall_s"], rows[1]["requests_per_wall_s"]
    for r in rows:
        r["ratio_to_reference"] = r["requests_per_wall_s"] / ref_rate
        r["ratio_to_simpy"] = r["requests_per_wall_s"] / simpy_rate

    print()
    print(f"{'engine':<26} {'R':>5} {'sim s':>6} {'requests':>11} {'done/rep':>9} {'wall s':>8} "
          f"{'req/wall s':>11} {'x ref':>8} {'x SimPy':>8} {'MB/rep':>8}  note")
    for r in rows:
        print(f"{r['engine']:<26} {r['replications']:>5} {r['horizon_s']:>6g} {r['requests']:>11} "
              f"{r['completed_per_replication']:>9.0f} {r['wall_s']:>8.3f} {r['requests_per_wall_s']:>11.0f} "
              f"{r['ratio_to_reference']:>8.2f} {r['ratio_to_simpy']:>8.2f} "
              f"{r['memory_mb_per_replication']:>8.3f}  {r['note']}")
    if vec_note:
        print(f"{'vectorized ' + args.backend:<26} {vec_note}")
    print(agree)

    if args.json is not None:
        def clean(v):
            return None if isinstance(v, float) and not math.isfinite(v) else v

        doc = {"scenario": {"model": str(MODEL_TOML.relative_to(ROOT)), "policy": "sarathi",
                            "token_budget": eng.token_budget, "batch_time": eng.batch_time.to_dict(),
                            "prefill": 100, "decode": 100, "load": LOAD, "rate_per_s": lam,
                            "capacity_rate_per_s": lam_star, "horizon_s": horizon_s, "seed": SEED,
                            "backend": args.backend, "replications": reps,
                            **({"device": args.device} if args.device else {})},
               "machine": {"python": platform.python_version(), "numpy": np.__version__,
                           "simpy": simpy.__version__, "cpus": os.cpu_count(), "arch": platform.machine()},
               "peers_agree_batch_for_batch": same,
               "vectorized_note": vec_note or None,
               "rows": [{k: clean(v) for k, v in r.items()} for r in rows]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if same is not False else 1


if __name__ == "__main__":
    sys.exit(main())
