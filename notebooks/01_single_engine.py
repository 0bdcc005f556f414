# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # One LLM engine: batch time, capacity, the four policies, the fluid limit
#
# The single-engine story of Li, Dai, Peng (arXiv 2504.07347), figure by figure, each computed by
# `fluidllm.report.figures` through the public API and checked here against the theory (never
# against numbers of a previous run):
#
# 1. batch time is a function of the token count (real GPU profiles, R² > 0.97);
# 2. the capacity μ* = max n/t(n) (Theorem 2) and the (λ_p, λ_d) region with k_max (Theorem 10);
# 3. on the Fig. 1 workload the work-conserving policies (Orca, Sarathi-Serve) are stable at 0.75 of
#    capacity and grow at the fluid slope above it, while FasterTransformer and vanilla vLLM lose capacity;
# 4. the fluid limit: simulations from n·x0 scaled by 1/n converge to the fluid trajectory;
# 5. each policy's maximum stable load as the token budget grows.
#
# Figures go to `FLUIDLLM_OUT` (default `notebooks/out/`). `FLUIDLLM_QUICK=1` runs small
# simulations (the test suite does); `fluidllm paper` runs the full versions and writes a report.

# %%
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from fluidllm.capacity import max_token_rate
from fluidllm.report import figures as F

OUT = Path(os.environ.get("FLUIDLLM_OUT", "notebooks/out"))
OUT.mkdir(parents=True, exist_ok=True)
QUICK = os.environ.get("FLUIDLLM_QUICK", "") not in ("", "0")
T = F.PAPER_BATCH_TIME                      # staircase c = 11.28 ms, a = 35.47 ms, b0 = 128


def save(fig, name):
    fig.savefig(OUT / f"{name}.png", dpi=110)
    return fig.numbers


# %% [markdown]
# ## 1. Batch time depends on the token count only
#
# Piecewise-linear and staircase fits (`fluidllm.calibrate.fit_profile`) to the prefill rows of the
# vendored Llama-2-7B/A100 profile and, where the project's calibration folder is present, of the
# other derived profiles.

# %%
fits = save(F.batch_time_fits(quick=QUICK), "batch_time_fits")
print(fits["source"])
for p in fits["profiles"]:
    print(f"{p['label']:<32}", {f: round(v["r2"], 5) for f, v in p["fits"].items()}, "BIC:", p["chosen"])
assert fits["min_r2"] > 0.97, "the paper's claim: R² > 0.97 with the token count alone"

# %% [markdown]
# ## 2. Capacity: μ* = max over n ≤ b_max of n/t(n), and vertex C of Theorem 10

# %%
cap = save(F.capacity_region(quick=QUICK), "capacity_region")
for b, mu in cap["mu_tokens_per_s"].items():
    closed = 1000 * b / (11.28 + 35.47 * math.ceil(b / 128))       # b0 | b_max: μ* = b_max / t(b_max)
    print(f"b_max = {b:5d}: μ* = {mu:9.3f} tokens/s (closed form {closed:9.3f})")
    assert math.isclose(mu, closed, rel_tol=1e-12) and cap["argmax_tokens"][b] == b
assert cap["vertex_c_is_vertex"], "C = (29, 99)/t(128) is a vertex of the k_max = 100 region"
assert abs(cap["vertex_c_scale"] - 1) < 1e-9, "C lies on the boundary"
assert abs(cap["vertex_c_model_max_scale"] - 1) < 1e-9

# %% [markdown]
# ## 3. The four paper policies on the Fig. 1 workload, at 0.75 and 1.1 of capacity
#
# Theorem 2: below b_max/t(b_max) every work-conserving policy is stable; above it the token backlog
# grows at slope λ(m_p + m_d) − b_max/t(b_max) (the dashed fluid line). FasterTransformer and vanilla
# vLLM are not work-conserving.

# %%
tr = save(F.policy_trajectories(quick=QUICK), "policy_trajectories")
runs = {(r["policy"], r["fraction"]): r for r in tr["runs"]}
for (p, f), r in runs.items():
    fs = r["fluid_slope_tokens_per_s"]
    print(f"{p:<18} {f:4} x capacity  {r['verdict']:<12} late slope {r['late_slope_tokens_per_s']:8.0f} tokens/s"
          f"  fluid {'n/a' if fs is None else round(fs)}")
for p in ("orca", "sarathi"):
    assert runs[(p, 0.75)]["verdict"] == "STABLE", p                # Theorem 2(b)
    assert runs[(p, 0.75)]["fluid_slope_tokens_per_s"] == 0
    assert runs[(p, 1.1)]["verdict"] != "STABLE", p                 # Theorem 2(a)
# the fluid slope at 1.1 × capacity is 0.1 × the capacity in tokens/s
mu512 = max_token_rate(T, 512).tokens_per_s
assert math.isclose(runs[("sarathi", 1.1)]["fluid_slope_tokens_per_s"], 0.1 * mu512, rel_tol=1e-9)
# FasterTransformer's own capacity is a few % of the work-conserving one: unstable already at 0.75
assert runs[("fastertransformer", 0.75)]["verdict"] == "UNSTABLE"
assert runs[("fastertransformer", 0.75)]["final_backlog_tokens"] > runs[("sarathi", 0.75)]["final_backlog_tokens"]

# %% [markdown]
# ## 4. The fluid limit
#
# Start with n·x0 requests, scale space and time by 1/n: the paths approach the fluid trajectory. For
# a work-conserving policy without arrivals the deterministic error is at most C/n with
# C = b_max (3 + v_d + v_d/v_p) tokens (see `tests/test_fluid.py`); the stylised FasterTransformer is
# shown without arrivals, where that kind of bound is deterministic too.

# %%
fv = save(F.fluid_vs_scaled(quick=QUICK), "fluid_vs_scaled")
for c in fv["cases"]:
    print(c["policy"], dict(zip(c["ns"], (round(d) for d in c["sup_distance"]))))
    d = c["sup_distance"]
    assert all(a > b for a, b in zip(d, d[1:])), "sup-distance decreases in n"
    assert d[-1] < 0.1 * c["W0"]

# %% [markdown]
# ## 5. Maximum stable load vs token budget
#
# Work-conserving bound (b_max/t(b_max))/(m_p + m_d), FasterTransformer by renewal-reward, vanilla
# vLLM bracketed by the simulator.

# %%
bb = save(F.boundary_vs_budget(quick=QUICK), "boundary_vs_budget")
m_tokens = 129 + 112
for r in bb["rows"]:
    print(r)
    wc = max_token_rate(T, r["b_max"]).tokens_per_s / m_tokens
    assert math.isclose(r["wc_rate_per_s"], wc, rel_tol=1e-6), "Theorem 2 bound"
    assert r["ft_rate_per_s"] is not None and r["ft_rate_per_s"] <= wc
    if r["b_max"] < 129:
        assert r["ft_rate_per_s"] == 0, "a 129-token prompt never fits: whole prompts"
    lo = r["vllm_bracket_per_s"][0]
    assert lo <= wc * 1.001, "Theorem 2(a): no policy is stable above the bound"
