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
# # How calibration uncertainty moves capacity
#
# The batch-time model t(n) is fitted to a GPU profile, so every capacity computed from it inherits the
# fit's uncertainty. This notebook fits the shared Llama-2-7B profiles (A100: measured; H100: linear part
# measured, decode attention estimated — see `../shared/calibration/README.md`) with the paper's two
# families, bootstraps the fit (rows resampled with replacement, the knee searched again in each
# resample) and recomputes capacity for every resample; then it shows how a 5 % batch-time error moves
# each policy's capacity, uniformly and coefficient by coefficient. Figures go to `notebooks/out/`
# (set `FLUIDLLM_OUT`); `FLUIDLLM_QUICK=1` uses fewer bootstrap resamples.

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import fluidllm as fl
from fluidllm.calibrate import fit_profile
from fluidllm.calibrate.uncertainty import bootstrap_fits, capacity_interval, capacity_sensitivity
from fluidllm.model.io import loads_model

OUT = Path(os.environ.get("FLUIDLLM_OUT", "notebooks/out"))
OUT.mkdir(parents=True, exist_ok=True)
QUICK = os.environ.get("FLUIDLLM_QUICK") == "1"
N_BOOT = 30 if QUICK else 400
SHARED = Path("../shared/calibration")
if not SHARED.is_dir():      # run from notebooks/ rather than the repository root
    SHARED = Path("../../shared/calibration")
PROFILES = {gpu: SHARED / f"derived_batch_time_Llama-2-7b_{gpu}.csv" for gpu in ("A100", "H100")}
FAMILIES = ("piecewise-linear", "staircase")

# %% [markdown]
# ## The fits (prefill rows: one fresh prompt of n tokens, n = 1…4096)

# %%
fits = {}
for gpu, path in PROFILES.items():
    res = fit_profile(path, scenario="prefill_only", families=list(FAMILIES), n_boot=N_BOOT, seed=0)
    fits[gpu] = res
    print(f"== Llama-2-7B / {gpu}")
    print(res.table())
    print()

# %% [markdown]
# ## Capacity with its bootstrap interval
#
# One Sarathi-Serve engine, token budget b_max = 512; chat requests with v_p = 256 prompt tokens and
# geometric v_d of mean 128, arriving at 1 request/s — so `max_scale` reads directly as the largest
# sustainable request rate (requests/s). Each resample's batch time gives one capacity; the interval is
# the central 95 % of them.

# %%
base = loads_model("""
[engines.gpu]
token_budget = 512
policy = "sarathi"
batch_time = { kind = "constant", c_ms = 1.0 }
[workloads.chat]
arrival = { kind = "poisson", rate_per_s = 1.0 }
prefill = { kind = "deterministic", value = 256 }
decode = { kind = "geometric", mean = 128 }
""")
intervals = {}
rows = []
for gpu, path in PROFILES.items():
    for fam in FAMILIES:
        boot = bootstrap_fits(path, fam, n_boot=N_BOOT, seed=1, scenario="prefill_only")
        ci = capacity_interval(base, boot, 0.95)
        intervals[gpu, fam] = ci
        lo, hi = ci.max_scale_interval
        assert lo <= ci.max_scale <= hi
        # the point is the capacity of the model with the fit to all rows
        m = base.with_engine("gpu", batch_time=boot.point.model)
        assert abs(ci.max_scale - fl.capacity(m).max_scale) <= 1e-9 * ci.max_scale
        mu = ci.engines["gpu"]
        rows.append((gpu, fam, ci.max_scale, lo, hi, mu["max_token_rate_per_s"], *mu["interval"]))
print(f"{'GPU':<5} {'family':<17} {'req/s':>8} {'95 % interval':>20} {'±%':>6} {'mu* tok/s':>10} "
      f"{'95 % interval':>22}")
for gpu, fam, s, lo, hi, mu, mlo, mhi in rows:
    print(f"{gpu:<5} {fam:<17} {s:8.3f} [{lo:8.3f}, {hi:8.3f}] {50 * (hi - lo) / s:6.2f} {mu:10.1f} "
          f"[{mlo:9.1f}, {mhi:9.1f}]")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.5))
labels = [f"{g}\n{f}" for g, f, *_ in rows]
pts = np.array([r[2] for r in rows])
err = np.array([[r[2] - r[3], r[4] - r[2]] for r in rows]).T
ax.errorbar(np.arange(len(rows)), pts, yerr=err, fmt="o", capsize=6)
ax.set_xticks(np.arange(len(rows)), labels)
ax.set_ylabel("max sustainable rate [req/s]")
ax.set_title(f"Sarathi, b_max = 512: 95 % bootstrap interval ({N_BOOT} resamples)", fontsize=10)
fig.tight_layout()
fig.savefig(OUT / "capacity_intervals.png", dpi=120)

# %% [markdown]
# On the A100 the two families disagree by far more than either interval: which family describes the
# profile (model uncertainty) matters more than the sampling noise of the fit, and BIC prefers the
# piecewise-linear one on both GPUs. The staircase's step b0 decides where n/t(n) peaks, so its interval
# is wide wherever resamples move b0 (H100: b0 between ~40 and 128).
#
# ## A 5 % batch-time error, per policy
#
# Scaling every coefficient by 1 ± 5 % scales every batch time by the same factor, so every policy's
# capacity moves by exactly 1/(1 ± 0.05) (elasticity 1) — asserted below. Scaling one coefficient
# moves the policies differently: the elasticity −d ln(capacity)/d ln(coefficient) says how much
# each policy's capacity depends on the fixed per-batch cost c and on the per-token slope a. For the
# work-conserving policies capacity is μ* = max n/t(n): with t = c + a·max(0, n − b0) the peak is at
# n = b_max when c > a·b0 (H100: elasticities c/t(b_max) and a·(b_max − b0)/t(b_max)), but at the knee
# n = b0 when c < a·b0 (A100: μ* = b0/c, so a does not matter at all). FasterTransformer's
# static batches are small here (two 256-token prompts per batch), so it depends almost only on c.
#
# %%
POLICIES = ["sarathi", "orca", "fastertransformer"]
sens = {}
for gpu in PROFILES:
    m = base.with_engine("gpu", batch_time=fits[gpu].fit("piecewise-linear").model)
    for comp in (None, "c_ms", "a_ms"):
        s = capacity_sensitivity(m, 0.05, policies=POLICIES, component=comp)
        sens[gpu, comp] = s
        print(f"== {gpu}, piecewise-linear fit")
        print(s.markdown())
        print()
for gpu in PROFILES:
    for r in sens[gpu, None].rows:
        assert abs(r.max_scale_slower * 1.05 / r.max_scale - 1) < 1e-7, r
        assert abs(r.max_scale_faster * 0.95 / r.max_scale - 1) < 1e-7, r
    # splitting the error over c and a: the two elasticities sum to the uniform one (to first order)
    for p in POLICIES:
        tot = sens[gpu, "c_ms"].row(p).elasticity(0.05) + sens[gpu, "a_ms"].row(p).elasticity(0.05)
        assert abs(tot - 1.0) < 0.02, (gpu, p, tot)

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), sharey=True)
w = 0.38
for ax, gpu in zip(axes, PROFILES):
    x = np.arange(len(POLICIES))
    for k, (comp, lab) in enumerate((("c_ms", "c (per batch)"), ("a_ms", "a (per token)"))):
        e = [sens[gpu, comp].row(p).elasticity(0.05) for p in POLICIES]
        ax.bar(x + (k - 0.5) * w, e, w, label=lab)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(x, POLICIES)
    ax.set_title(f"Llama-2-7B / {gpu}")
axes[0].set_ylabel("elasticity of capacity")
axes[0].legend()
fig.suptitle("elasticity of capacity to one batch-time coefficient (dashed: all of them)", fontsize=10)
fig.tight_layout()
fig.savefig(OUT / "sensitivity_elasticity.png", dpi=120)
