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
# # Capacity of one LLM engine
#
# Reproduces the capacity facts of Li, Dai, Peng (arXiv 2504.07347): the token rate n/t(n) of the
# paper's CodeLlama-34B/A100 staircase fit, why b0 must divide b_max for b_max/t_bmax to be the
# maximum (Theorem 2), and the two-dimensional region with a cap k_max on requests per batch
# (Theorem 10, vertex C). Figures are written to `notebooks/out/` (set `FLUIDLLM_OUT`).

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import fluidllm as fl
from fluidllm.capacity import max_token_rate, token_rate_curve

OUT = Path(os.environ.get("FLUIDLLM_OUT", "notebooks/out"))
OUT.mkdir(parents=True, exist_ok=True)
paper = fl.Staircase(11.28, 35.47, 128)

# %% [markdown]
# ## n / t(n) for the paper's fit: the maximum sits at multiples of b0

# %%
n, r = token_rate_curve(paper, 1024)
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(n, r * 1000, lw=1)
for b in (128, 512, 1024):
    mu = max_token_rate(paper, b)
    ax.plot(mu.argmax_tokens, mu.tokens_per_s, "o", label=f"b_max={b}: μ*={mu.tokens_per_s:.1f} tok/s")
ax.set_xlabel("tokens in batch n")
ax.set_ylabel("n / t(n)  [tokens/s]")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "staircase_rate.png", dpi=120)
assert abs(max_token_rate(paper, 512).tokens_per_ms - 3.342909) < 5e-7

# %% [markdown]
# With b_max = 130 (b0 does not divide it) the best batch is 128 tokens, not b_max:

# %%
mu130 = max_token_rate(paper, 130)
print(mu130)
assert mu130.argmax_tokens == 128

# %% [markdown]
# ## Theorem 10: the (λ_p, λ_d) region with k_max = 100 at b_max = 128

# %%
fig, ax = plt.subplots(figsize=(5, 4.5))
for k, style in [(None, "--"), (100, "-")]:
    reg = fl.token_region(fl.Engine("e", 128, paper, max_batch_requests=k))
    V = reg.vertices_per_s
    ax.plot(np.r_[V[:, 0], V[0, 0]], np.r_[V[:, 1], V[0, 1]], style, label=f"k_max = {k}")
C = np.array([29, 99]) / 46.75 * 1000
ax.plot(*C, "ko")
ax.annotate("vertex C = (29, 99)/46.75 per ms", C, textcoords="offset points", xytext=(8, -14))
ax.set_xlabel("λ_p  prefill tokens/s")
ax.set_ylabel("λ_d  decode tokens/s")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "region_kmax.png", dpi=120)
reg = fl.token_region(fl.Engine("e", 128, paper, max_batch_requests=100))
assert any(np.allclose(v, C) for v in reg.vertices_per_s)
