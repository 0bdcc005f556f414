"""Theorem 2(a) on simulated paths: no path serves tokens faster than μ* = max_{n ≤ b_max} n/t(n).

For every policy the vectorized simulator runs, at 0.9 and 1.5 × capacity, a few short replications
are simulated with the batch log. On every path, at every batch boundary T_k (exactly, not on a
grid), the tokens served by the batches completed by T_k are compared with μ*·(busy time up to T_k)
and μ*·T_k. The bound holds batch by batch (n/t(n) ≤ μ* for each batch, and each batch lasts t(n)),
so summing gives S(T_k) ≤ μ*·busy(T_k) ≤ μ*·T_k.

Two staircases t(n) = 11.28 + 35.47⌈n/128⌉ ms: the paper's b_max = 512 (b0 | b_max, so μ* =
b_max/t(b_max)), and b_max = 200 (b0 ∤ b_max), where n/t(n) peaks at n = 128 and b_max/t(b_max) is
NOT a bound: with 128-token prompts, vLLM's prefill-first whole-prompt batches (one 128-token prompt
per batch at overload, two never fit) serve at 128/t(128) and overtake (b_max/t(b_max))·T on the path.
"""
CLAIM = ("no scheduler serves more than mu* = max_{n<=b_max} n/t(n) tokens per unit time: on every "
         "simulated path, tokens served by T <= mu*·busy(T) <= mu*·T at every batch boundary; "
         "b_max/t(b_max) is that bound only when b0 | b_max")
SOURCE = "Li, Dai, Peng arXiv 2504.07347, Thm 2(a) (and fluidllm/capacity/rate.py)"
METHOD = "simulation"

LOADS = (0.9, 1.5)     # multiples of capacity(model).max_scale: below it and well above it
REPLICATIONS = 3       # the batch log is kept in Python lists: a few short paths suffice
HORIZON_S = 30.0       # ~200-400 batches per path; the bound is checked at each of them
SEED = 2504


def _cases():
    """(label, model): the paper's Fig. 1 model with b_max = 512, and b_max = 200 with 128-token prompts."""
    from dataclasses import replace

    import fluidllm as fl

    from proofs_checks import example

    paper = fl.load_model(example("paper_codellama_b512.toml"))
    w = paper.workloads["fig1"]
    # 128-token prompts make n = 128, the maximiser of n/t(n) at b_max = 200, a natural batch size.
    w128 = replace(w, lengths=replace(w.lengths, prefill=fl.Deterministic(128)))
    b200 = replace(paper, workloads={"fig1": w128}).with_engine("a100", token_budget=200)
    return [("b_max=512", paper), ("b_max=200", b200)]


def _path_ratios(rows, bt, mu_ms, mub_ms):
    """Per path: (per-batch bound ok, max S/(μ*·busy), max S/(μ*·T), max S/((b_max/t_bmax)·T), tokens served)."""
    import numpy as np

    n = np.array([r["prefill_tokens"] + r["decode_tokens"] for r in rows], dtype=float)
    start = np.array([r["start_ms"] for r in rows])
    end = np.array([r["end_ms"] for r in rows])
    dur = end - start
    # each batch lasts t(n) (the model's batch time) and n/t(n) <= μ*: the bound holds batch by batch
    ok = bool(np.allclose(dur, bt.tokens_ms(n), rtol=1e-12, atol=1e-9)) and bool(np.all(n <= mu_ms * dur * (1 + 1e-12)))
    served, busy = np.cumsum(n), np.cumsum(dur)
    return ok, (served / (mu_ms * busy)).max(), (served / (mu_ms * end)).max(), \
        (served / (mub_ms * end)).max(), int(n.sum())


def check():
    import numpy as np

    import fluidllm as fl
    from fluidllm.capacity import max_token_rate
    from fluidllm.policies.rules import VECTOR_POLICIES

    ok, parts = True, []
    for label, base in _cases():
        eng = base.engines["a100"]
        bt, b = eng.batch_time, eng.token_budget
        mu = max_token_rate(bt, b)
        mub_ms = b / float(bt.tokens_ms(b))
        scale = fl.capacity(base).max_scale
        worst_busy = worst_T = worst_bmax = 0.0
        who_T = who_bmax = ""
        paths = 0
        for pol in VECTOR_POLICIES:          # every policy the simulator runs
            m = base.with_engine("a100", policy=fl.PolicySpec(pol))
            for load in LOADS:
                sim = fl.simulate(m, replications=REPLICATIONS, horizon_s=HORIZON_S, seed=SEED,
                                  load=load * scale, batch_log=True)
                total = sim.prefill_tokens_served + sim.decode_tokens_served
                for r, rows in enumerate(sim.batch_log):
                    if not rows:
                        continue
                    paths += 1
                    good, rb, rT, rbmax, tok = _path_ratios(rows, bt, mu.tokens_per_ms, mub_ms)
                    # the log must be the whole path: its tokens are the run's tokens
                    ok &= good and tok == int(total[r]) and rb <= 1 + 1e-12 and rT <= 1 + 1e-12
                    worst_busy = max(worst_busy, rb)
                    if rT > worst_T:
                        worst_T, who_T = rT, f"{pol}@{load:g}"
                    if rbmax > worst_bmax:
                        worst_bmax, who_bmax = rbmax, f"{pol}@{load:g}"
        divides = b % bt.b0 == 0
        # b0 | b_max: μ* = b_max/t(b_max); otherwise the maximiser is below b_max and some path beats b_max/t(b_max)
        ok &= (mu.argmax_tokens == b and np.isclose(mu.tokens_per_ms, mub_ms)) if divides else \
            (mu.argmax_tokens == bt.b0 and worst_bmax > 1.0)
        extra = "" if divides else (f"; b_max/t(b_max) = {mub_ms * 1000:.1f} tok/s is exceeded: "
                                    f"max S/((b_max/t_bmax)·T) = {worst_bmax:.4f} ({who_bmax})")
        parts.append(f"{label} (b0 {'|' if divides else '∤'} b_max): μ* = {mu.tokens_per_s:.1f} tok/s at n = "
                     f"{mu.argmax_tokens}, {paths} paths, max S/(μ*·T) = {worst_T:.4f} ({who_T}), "
                     f"max S/(μ*·busy) = {worst_busy:.4f}{extra}")
    return ok, "; ".join(parts)
