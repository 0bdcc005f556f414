"""DAG and fork-join agent workflows under K-FCFS are stable below the LP capacity and unstable above
it (Li, Dai, Peng v3 §5: work-conserving scheduling is throughput-optimal for DAG and fork-join
routing, so the capacity is the per-engine LP max_scale = 1 / max_e ρ_e).

Two small networks built here (the example files' time scales — 150 ms batches, decodes of 64–200
tokens — need hours of simulated time, too slow for the reference simulator in a check): engines
e1 (light: planning) and e2 (the bottleneck), both ``kfcfs``, b_max = 256, t ≡ 1 ms (μ_e = 256
tokens/ms); the engine graph is feed-forward (e1 -> e2; e2 is re-entered only by itself, which a
work-conserving single engine handles). DAG: plan (e1) branches to act (e2, p 0.7) or reply (e2,
p 0.3). Fork-join: plan (e1) forks web and docs (both e2), synthesize (e2) joins them. Arrivals are
gamma renewal with scv 0.1 (the theory covers renewal arrivals; Poisson noise would need a horizon
several times longer to separate a 7 %-of-offered growth from the tolerance). For each,
:func:`fluidllm.sim.network_stability.network_stability` (8 replications of the reference network simulator, seed 0,
3 s horizon, no extension) must say STABLE at 0.9 × max_scale and UNSTABLE at 1.1 × max_scale, and
the network fluid verdict DRAINS and DIVERGES. At 1.1 the fluid slope of the token content from
empty must lie within 30 % of the simulated backlog slope (reported with its 99 % interval)."""
CLAIM = ("a DAG and a fork-join agent workflow with K-FCFS engines are stable at 0.9 x the LP capacity and "
         "unstable at 1.1 x (simulation verdict and network fluid verdict agree)")
SOURCE = "Li, Dai, Peng arXiv 2504.07347 v3 §5 (networks of LLM agents; DAG and fork-join routing)"
METHOD = "LP + fluid + simulation"

_ENGINES = """
[engines.e1]
token_budget = 256
policy = "kfcfs"
batch_time = { kind = "constant", c_ms = 1.0 }
[engines.e2]
token_budget = 256
policy = "kfcfs"
batch_time = { kind = "constant", c_ms = 1.0 }
"""

DAG = _ENGINES + """
[workflows.agent]
arrival = { kind = "renewal", rate_per_s = 1000.0, scv = 0.1, distribution = "gamma" }
acyclic = true
[[workflows.agent.calls]]
id = "plan"
engine = "e1"
prefill = { kind = "poisson", mean = 48 }
decode = { kind = "geometric", mean = 2 }
[[workflows.agent.calls]]
id = "act"
engine = "e2"
prefill = { kind = "poisson", mean = 320 }
decode = { kind = "geometric", mean = 4 }
after = ["plan"]
p = 0.7
[[workflows.agent.calls]]
id = "reply"
engine = "e2"
prefill = { kind = "poisson", mean = 288 }
decode = { kind = "geometric", mean = 8 }
after = ["plan"]
p = 0.3
"""

FORK_JOIN = _ENGINES + """
[workflows.research]
arrival = { kind = "renewal", rate_per_s = 1000.0, scv = 0.1, distribution = "gamma" }
acyclic = true
[[workflows.research.calls]]
id = "plan"
engine = "e1"
prefill = { kind = "poisson", mean = 48 }
decode = { kind = "geometric", mean = 2 }
[[workflows.research.calls]]
id = "web"
engine = "e2"
prefill = { kind = "poisson", mean = 128 }
decode = { kind = "geometric", mean = 4 }
after = ["plan"]
[[workflows.research.calls]]
id = "docs"
engine = "e2"
prefill = { kind = "poisson", mean = 192 }
decode = { kind = "geometric", mean = 4 }
after = ["plan"]
[[workflows.research.calls]]
id = "synthesize"
engine = "e2"
prefill = { kind = "poisson", mean = 64 }
decode = { kind = "geometric", mean = 4 }
after = ["web", "docs"]
"""

HORIZON_S = 3.0
REPLICATIONS = 8


def network(text: str):
    import tomllib

    from fluidllm.model.network import network_from_toml

    return network_from_toml(tomllib.loads(text))


def check():
    import fluidllm as fl
    from fluidllm.sim.network_stability import network_stability

    ok, parts = True, []
    for name, text in (("DAG", DAG), ("fork-join", FORK_JOIN)):
        m = network(text)
        cap = fl.capacity(m).max_scale
        row = []
        for x, want, fwant in ((0.9, "STABLE", "DRAINS"), (1.1, "UNSTABLE", "DIVERGES")):
            r = network_stability(m, load=x * cap, replications=REPLICATIONS, horizon_s=HORIZON_S, seed=0,
                                  extensions=0)
            ok &= r.verdict == want and r.fluid_verdict == fwant
            lo, hi = r.slope_interval
            txt = (f"{x:g}x: {r.verdict} (slope {r.slope_tokens_per_s:.4g} tokens/s, 99% CI [{lo:.4g}, {hi:.4g}], "
                   f"{r.slope_tokens_per_s / r.offered_tokens_per_s:+.1%} of offered), fluid {r.fluid_verdict}")
            if want == "UNSTABLE":
                fs = r.fluid_slope_tokens_per_s
                rel = abs(fs - r.slope_tokens_per_s) / fs if fs else float("inf")
                ok &= rel <= 0.30
                txt += f", fluid slope from empty {fs:.4g} tokens/s ({rel:.0%} from simulated)"
            row.append(txt)
        rho = ", ".join(f"{e} {v:.3f}" for e, v in r.engine_loads.items())
        parts.append(f"{name}: LP max_scale {cap:.5g} (engine loads at 1.1x: {rho}); " + "; ".join(row))
    return ok, f"{REPLICATIONS} replications x {HORIZON_S:g} s, seed 0; " + " | ".join(parts)
