"""Rybko–Stolyar on two LLM engines: the fluid model and the virtual-station condition predict that
static priority to the exiting classes is unstable with every engine at 0.9 load, and that the
reverse priority is stable (paper-notes §5.4 parameters: b_max = 768, t ≡ 1 ms, first call (32, 32),
second (512, 32) tokens, each type at 0.9·768/608 per ms). The prediction (fluid verdict, virtual
station, LP) is made first; then the reference network simulator (one path of 1500 ms per variant,
seed 7: about 3,400 requests of each type) must agree: under priority to the exiting classes the
requests in system rise in every 250 ms window; under the reverse priority they stay within 3× their
mean level, and the first ends at least 5× above the second."""
CLAIM = ("Rybko-Stolyar network, each engine at load 0.9: priority to exiting classes violates the virtual-station "
         "condition and its fluid model diverges, and the simulation grows; the reverse priority drains and stays "
         "bounded; the per-engine LP capacity is 1/0.9 for both")
SOURCE = "Li, Dai, Peng arXiv 2504.07347 v3 §5.4 (Rybko-Stolyar); virtual station: Dai 1995, Dai-Vande Vate 2000"
METHOD = "fluid + symbolic + LP + simulation"


def check():
    import fluidllm as fl
    from fluidllm.capacity.network_symbolic import network_conditions
    import numpy as np

    from fluidllm.fluid import fluid_policies_of, network_fluid_verdict
    from fluidllm.sim.network_reference import simulate_network_reference

    from proofs_checks import example

    ok, parts, sims = True, [], []
    for name, want, vs_ok in (("networks/rybko_stolyar.toml", "DIVERGES", False),
                              ("networks/rybko_stolyar_stable.toml", "DRAINS", True)):
        m = fl.load_model(example(name))
        cn = m.class_network()
        v = network_fluid_verdict(m)
        cond = network_conditions(cn, fluid_policies_of(m)).evaluate()
        lp = fl.capacity(m).max_scale
        vs = cond["virtual_stations"]
        ok &= (v.verdict == want and cond["engines_ok"] and abs(lp - 1 / 0.9) < 1e-6
               and (cond["virtual_stations_ok"] == vs_ok) and (bool(vs) or vs_ok))
        ts = np.arange(0.0, 1501.0, 250.0)
        n = simulate_network_reference(m, 1500.0, 7).requests_in_system(ts)
        grows = bool(np.all(np.diff(n[1:]) > 0))
        bounded = bool(n[1:].max() <= 3 * n[1:].mean())
        ok &= grows if want == "DIVERGES" else (bounded and not grows)
        sims.append(n[-1])
        loads = ", ".join(f"{k} {x:.3f}" for k, x in cond["engine_loads"].items())
        vtxt = ", ".join(f"{k} = {x:.4f}" for k, x in vs.items()) or "none"
        parts.append(f"{name.split('/')[-1]}: engine loads {loads}; virtual stations {vtxt}; fluid {v.verdict} "
                     f"(growth {v.growth_rate_tokens_per_s:.4g} tokens/s); LP max_scale {lp:.6f}; simulated requests "
                     f"in system every 250 ms: {n.astype(int).tolist()}")
    ok &= sims[0] >= 5 * sims[1]
    return ok, "; ".join(parts)
