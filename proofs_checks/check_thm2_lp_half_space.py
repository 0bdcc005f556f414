"""Without k_max or memory the configuration LP region is Σ_k λ_k(m_p,k + m_d,k) < μ*."""
CLAIM = "configuration LP = half-space sum_k lambda_k (m_p,k + m_d,k) < mu* (no k_max, no KV limit), " \
        "for random batch-time families and class mixes"
SOURCE = "Li, Dai, Peng arXiv 2504.07347, Thm 2"
METHOD = "LP"


def check():
    import numpy as np

    import fluidllm as fl
    from fluidllm.capacity import max_token_rate

    rng = np.random.default_rng(2)
    worst = 0.0
    for i in range(40):
        kind = i % 4
        c, a, b0 = rng.uniform(1, 40), rng.uniform(0.01, 40), int(rng.integers(1, 300))
        bt = [fl.Constant(c), fl.Affine(c, a / 100), fl.PiecewiseLinear(c, a / 100, b0), fl.Staircase(c, a, b0)][kind]
        b = int(rng.integers(1, 1500))
        ws = {}
        for k in range(int(rng.integers(1, 4))):
            ws[f"w{k}"] = fl.Workload(f"w{k}", fl.PoissonArrival(float(rng.uniform(0.1, 5))),
                                      fl.Independent(fl.Geometric(float(rng.uniform(1, 500))),
                                                     fl.Geometric(float(rng.uniform(1, 500)), min=0)))
        m = fl.Model({"e": fl.Engine("e", b, bt)}, ws)
        mu = max_token_rate(bt, b).tokens_per_s
        load = sum(w.rate_per_s * w.lengths.mean_tokens for w in ws.values())
        got = fl.capacity(m).max_scale
        worst = max(worst, abs(got - mu / load) / (mu / load))
    return worst < 1e-6, f"40 random cases; worst relative gap LP vs closed form {worst:.2e}"
