"""Theorem 2(b) by simulation: every work-conserving policy is stable below capacity, unstable above.

On the paper's Fig. 1 workload (examples/paper_codellama_b512.toml: 129 prompt tokens, geometric
output of mean 112, b_max = 512, CodeLlama staircase) each work-conserving policy the simulator
runs (orca, sarathi, kfcfs, vllm-v1) is run through ``fluidllm.stability`` at 0.9 and 1.1 ×
``capacity(model).max_scale``. Required: STABLE at 0.9 with 0 inside the slope interval, UNSTABLE at
1.1 with the fluid slope max(0, λ(m_p + m_d) − μ*) (μ* = b_max/t(b_max), b0 | b_max) inside it.

vllm-v1 needs nothing outside the paper's model: without a KV capacity or resident cap it never
preempts and is work-conserving (running requests first, then new prefills), so it runs as is.

Statistics (fluidllm/sim/verdict.py): window-mean t-tests over R = 16 replications at α = 0.01.
A wrong definite verdict (false STABLE at 0.9 or false UNSTABLE at 1.1) has probability ≤ α/2 =
0.005 each, ≤ 0.04 for the eight; the slope intervals are 99 % Student-t intervals, so each misses
the true late slope with probability ≈ 0.01. (INCONCLUSIVE is a matter of power, not of α: the
horizon below is chosen against it.) The seed is fixed, so the outcome is deterministic.

Horizon: 1000 s instead of the default ~2600 s (150 estimated sojourns), to stay within the time
budget. The model's time scales: t(512) = 153.16 ms, so 1000 s is ≥ 6500 full batches; a
request's sojourn is about (m_d + 1 + m_p/b_max)·t(512) = 17.3 s, so the discarded first third
(333 s) holds ~19 sojourns — the decode population relaxes on the sojourn scale, and at 0.9 the
level is already flat window by window at 600 s; at 1.1 the horizon offers 3.7 M tokens (≥ 1 M).
"""
CLAIM = ("work-conserving policies (orca, sarathi, kfcfs, vllm-v1) on the Fig. 1 workload: STABLE at 0.9 of "
         "capacity, UNSTABLE at 1.1, with the fluid backlog slope max(0, lambda(m_p + m_d) - mu*) inside the "
         "simulated slope interval")
SOURCE = "Li, Dai, Peng arXiv 2504.07347, Thm 2(b) and its fluid picture"
METHOD = "simulation"

POLICIES = ("orca", "sarathi", "kfcfs", "vllm-v1")
REPLICATIONS = 16
HORIZON_S = 1000.0
SEED = 0


def check():
    import fluidllm as fl

    from proofs_checks import example

    base = fl.load_model(example("paper_codellama_b512.toml"))
    scale = fl.capacity(base).max_scale
    ok, parts = True, []
    for pol in POLICIES:
        m = base.with_engine("a100", policy=fl.PolicySpec(pol))
        row = []
        for load, want in ((0.9, "STABLE"), (1.1, "UNSTABLE")):
            r = fl.stability(m, load=load * scale, replications=REPLICATIONS, horizon_s=HORIZON_S, seed=SEED,
                             extensions=0)
            lo, hi = r.slope_interval
            fluid = r.fluid_slope_tokens_per_s
            # the fluid oracle applies (work-conserving, paper model) and is 0 below capacity
            ok &= (r.verdict == want and fluid is not None and lo <= fluid <= hi
                   and ((fluid == 0.0) == (load < 1)))
            row.append(f"{load:g} {r.verdict} {r.slope_tokens_per_s:.1f} [{lo:.1f}, {hi:.1f}] "
                       f"fluid {'n/a' if fluid is None else f'{fluid:.1f}'}")
        parts.append(f"{pol}: " + ", ".join(row))
    return ok, f"tokens/s, R={REPLICATIONS}, {HORIZON_S:g} s: " + "; ".join(parts)
