"""How long `fluidllm capacity` takes on the shipped examples, against a peer in the same process.

Peer: the same configuration LP over EVERY batch configuration (p, d) with p + d ≤ b_max, solved by
scipy.optimize.linprog (HiGHS) — what one writes without the extreme-column reduction. Both must
give the same max_scale; the table prints both times, their ratio, and the CLI's end-to-end time
(process start, imports, TOML, LP). Run: `make bench` or `python benchmarks/capacity_speed.py`.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linprog

import fluidllm as fl
from fluidllm.capacity import demand_of
from fluidllm.capacity.configlp import _feasible, _q_max, decode_cap

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
PEER_MAX_COLUMNS = 3_000_000


def peer_full_lp(engine, workloads) -> tuple[float, int]:
    dem = demand_of(workloads, kv=engine.kv_capacity_tokens is not None)
    b, K = engine.token_budget, engine.max_batch_requests
    P, D = np.meshgrid(np.arange(b + 1), np.arange(b + 1), indexing="ij")
    ok = _feasible(P, D, K, decode_cap(engine, dem.decode_context)) & (P + D <= b)
    P, D = P[ok].astype(float), D[ok].astype(float)
    Q = _q_max(P, D, K).astype(float)
    t = np.asarray(engine.batch_time.batch_ms(P, D, D * dem.decode_context), dtype=float)
    rows = [(-P / t, dem.prefill_tokens_per_ms), (-D / t, dem.decode_tokens_per_ms), (-Q / t, dem.requests_per_ms)]
    if engine.kv_capacity_tokens is not None:
        rows.append((-engine.kv_capacity_tokens / t, dem.kv_token_batches_per_ms))
    C = P.size
    A = np.vstack([np.r_[a, rhs] for a, rhs in rows] + [np.r_[np.ones(C), 0.0]])
    bnd = [(0, None)] * C + [(None, None)]
    res = linprog(np.r_[np.zeros(C), -1.0], A_ub=A, b_ub=np.r_[np.zeros(len(rows)), 1.0], bounds=bnd, method="highs")
    return -res.fun, C


def median_time(fn, repeat: int) -> tuple[float, object]:
    out, ts = None, []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def main() -> None:
    fl.capacity(fl.load_model(EXAMPLES[0]))  # warm imports and solver
    print(f"{'example':<34} {'max_scale':>10} {'capacity() ms':>13} {'cols':>6} {'peer ms':>9} "
          f"{'peer cols':>10} {'peer/ours':>9} {'CLI ms':>8}")
    for ex in EXAMPLES:
        model = fl.load_model(ex)
        t_ours, cap = median_time(lambda: fl.capacity(model), 5)
        cols = sum(e.lp.configurations.shape[0] for e in cap.engines.values() if e.lp is not None)
        peer_t, peer_cols, agree = float("nan"), 0, ""
        e = next(iter(model.engines.values()))
        b = e.token_budget
        if (b + 1) * (b + 2) // 2 <= PEER_MAX_COLUMNS and len(model.engines) == 1:
            peer_t, (peer_s, peer_cols) = median_time(lambda: peer_full_lp(e, list(model.workloads.values())), 1)
            assert abs(peer_s - cap.max_scale) <= 1e-6 * cap.max_scale, (peer_s, cap.max_scale)
        t_cli, _ = median_time(lambda: subprocess.run([sys.executable, "-m", "fluidllm", "capacity", str(ex), "--json"],
                                                      check=True, capture_output=True), 3)
        ratio = peer_t / t_ours if peer_cols else float("nan")
        print(f"{ex.name:<34} {cap.max_scale:>10.6f} {t_ours * 1e3:>13.1f} {cols:>6} {peer_t * 1e3:>9.1f} "
              f"{peer_cols:>10} {ratio:>9.1f} {t_cli * 1e3:>8.0f}")


if __name__ == "__main__":
    main()
