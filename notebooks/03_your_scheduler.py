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
# # Your own scheduler: write it, test it, read its verdict and its capacity
#
# A scheduling policy for fluidllm is a small class with a `name` and `plan(view)`: at every batch
# boundary the engine shows it the resident requests in FCFS order and it answers how many prefill
# tokens and decode tokens each one gets. The engine checks every plan. `fluidllm.testing` then
# answers the two questions of Li, Dai, Peng (arXiv 2504.07347) for *your* rule: does it obey the
# engine's rules, and is it work-conserving (eqs. 8–9: whenever the resident demand
# Σ_i (p_i + 1{p_i = 0}) reaches the budget, the batch is full)? Work-conserving policies reach the
# capacity bound of Theorem 2; others may lose part of it, which the simulator measures.
# Figures go to `notebooks/out/` (set `FLUIDLLM_OUT`); `FLUIDLLM_QUICK=1` runs a short version.

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import fluidllm as fl
from fluidllm.testing import check_invariants, check_matches, check_work_conserving

OUT = Path(os.environ.get("FLUIDLLM_OUT", "notebooks/out"))
OUT.mkdir(parents=True, exist_ok=True)
QUICK = os.environ.get("FLUIDLLM_QUICK") == "1"
POLICY_FILE = Path("examples/my_scheduler/my_policy.py")

# %% [markdown]
# ## 1. The policy
#
# `examples/my_scheduler/my_policy.py`: decode first, then prompt chunks FCFS, with an optional cap
# on the prompt tokens per batch (a latency knob). It also has `plan_vectorized`, the same rule over
# the simulator's arrays, so the simulator runs it at full speed.

# %%
print(POLICY_FILE.read_text())

# %%
import sys

sys.path.insert(0, str(POLICY_FILE.parent))
from my_policy import MyPolicy  # noqa: E402

# %% [markdown]
# ## 2. Testing it
#
# Each check judges the policy on the states an engine can *reach* (its envelope). Without a model,
# every engine fluidllm models: budgets up to 4096, per-batch caps k_max and resident caps up to 256,
# KV limits, thousands of requests; with one (`check_work_conserving(pol, "model.toml")`), that
# engine's own limits and length laws, and nothing it does not have. The search: every state of the
# envelope's small corner, structured extreme states (hundreds of decoders, b_max ± 1, a huge prompt,
# a waiting queue of hundreds, demand exactly at the budget, KV at its limit), then states generated
# by hypothesis; a failure is shrunk to a minimal state, and a pass says what it rests on. The same
# calls go in a pytest file (`examples/my_scheduler/test_my_policy.py`).

# %%
n = 100 if QUICK else 1000
for pol in (MyPolicy(), MyPolicy(prefill_cap=16)):
    print(check_invariants(pol, max_examples=n).assert_ok().summary())
    print(check_matches(pol, max_examples=n // 2).assert_ok().summary())

free = check_work_conserving(MyPolicy(), max_examples=n)
capped = check_work_conserving(MyPolicy(prefill_cap=16), max_examples=n)
print(free.text())
print()
print(capped.text())
assert free.work_conserving and not capped.work_conserving
assert free.agrees_with_claim and capped.agrees_with_claim

# %% [markdown]
# On one engine — the default model of `fluidllm check-policy` (b_max = 128, 64-token prompts, no KV
# limit) — the same capped policy fails on a state of that engine:

# %%
from fluidllm.testing.report import default_model  # noqa: E402

on_engine = check_work_conserving(MyPolicy(prefill_cap=16), default_model(), max_examples=n // 4)
print(on_engine.text())
assert not on_engine.work_conserving and on_engine.counterexample.view.token_budget == 128

# %% [markdown]
# The capped policy's minimal counterexample is a prompt alone with more tokens than the cap and a
# budget above it: the batch stops at the cap with budget to spare. The built-ins get the same
# treatment: FasterTransformer and vanilla vLLM fail on one decoder plus a 1-token prompt at
# b_max = 2 (they will not mix prefill and decode), Orca, Sarathi-Serve, K-FCFS and vLLM v1 pass.

# %%
for name in ("fastertransformer", "vllm", "sarathi", "orca"):
    r = check_work_conserving(name, max_examples=n // 2)
    ce = r.counterexample
    print(f"{name:18s} work-conserving: {r.work_conserving!s:5s}",
          "" if ce is None else f"  state {[(q.prefill_left, q.decode_left) for q in ce.view.requests]}, "
                                f"b_max {ce.view.token_budget}, batch {ce.plan}")

# %% [markdown]
# ## 3. What the verdict costs: backlog at half the work-conserving bound
#
# The model: one engine, b_max = 128, the paper's CodeLlama-34B/A100 staircase, 64-token prompts
# with geometric outputs of mean 32 (the default model of `fluidllm check-policy`). Theorem 2 gives
# the bound every work-conserving policy reaches; we run each policy at half of it. The uncapped
# policy keeps a small steady backlog; the capped one serves at most 16 prompt tokens per batch,
# which is below the prompt load, so its backlog grows linearly (it is unstable there). Without the
# cap the rule *is* Sarathi-Serve's (decodes, then chunks FCFS), and its curve lies on Sarathi's.

# %%
model = default_model()
bound = fl.capacity(model).max_scale
load = 0.5 * bound
print(f"work-conserving bound: max_scale = {bound:.3f} (x the model's 2 req/s); simulating at load {load:.3f}")
target = f"{POLICY_FILE}:MyPolicy"
runs = {
    "my policy": fl.PolicySpec("python", {"target": target}),
    "my policy, prefill_cap = 16": fl.PolicySpec("python", {"target": target, "params": {"prefill_cap": 16}}),
    "sarathi (built-in)": fl.PolicySpec("sarathi"),
}
horizon = 60 if QUICK else 600
res = {}
for label, spec in runs.items():
    m = model.with_engine("gpu", policy=spec)
    res[label] = fl.simulate(m, replications=4 if QUICK else 16, horizon_s=horizon, seed=1, load=load)
    print(f"{label:30s} final backlog {np.mean(res[label].final_backlog_tokens):10.0f} tokens")

fig, ax = plt.subplots(figsize=(7, 3.5))
styles = {"my policy": dict(lw=3, alpha=0.6), "sarathi (built-in)": dict(ls="--", color="k", lw=1)}
for label, r in res.items():
    ax.plot(r.grid_ms / 1000, r.series_backlog_tokens.mean(axis=0), label=label, **styles.get(label, {}))
ax.set_xlabel("time [s]")
ax.set_ylabel("token backlog (mean over replications)")
ax.set_title(f"load {load:.2f} x rates = half the work-conserving bound")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "your_scheduler_backlog.png", dpi=120)

capped_back = np.mean(res["my policy, prefill_cap = 16"].final_backlog_tokens)
free_back = np.mean(res["my policy"].final_backlog_tokens)
assert capped_back > 20 * max(free_back, 1.0), (capped_back, free_back)

# %% [markdown]
# ## 4. From the command line
#
# `fluidllm check-policy examples/my_scheduler/my_policy.py:MyPolicy --model examples/my_scheduler/model.toml`
# judges the policy on the model's engine and prints the same verdicts and the policy's capacity on
# the model (the simulator's bracketed stability boundary for a plug-in) next to the work-conserving
# bound; `--json` gives `invariants_ok`, `work_conserving`, `counterexample`, `search`, `envelope`,
# `max_scale` and `work_conserving_max_scale`. Exit status: 0 when the rules hold and the policy's
# claim agrees, 1 for a finding (the capacity is still reported), 2 for bad input.
