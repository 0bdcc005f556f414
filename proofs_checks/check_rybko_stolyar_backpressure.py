"""Max-pressure (back-pressure) on the Rybko–Stolyar network of LLM agents: stable at 0.9 load on both
engines, where static priority to the exiting classes diverges at the same rates — whatever static
order the engines would use, max-pressure ignores it (Dai, Lin 2005: max-pressure is throughput
optimal for every topology; paper-notes §5.4 parameters as in check_rybko_stolyar).

Prediction first: the network fluid model under max-weight drains from a loaded start. Then the
reference network simulator (8 replications of 4 s, seeds [0, r], about 9,000 requests of each type
per replication) and the backlog verdict of :func:`fluidllm.sim.network_stability.network_stability`
(α = 0.01 for a wrong definite verdict): STABLE at the file's 0.9 load, the late backlog slope's 99 %
interval containing 0. Beside it, on one common path (seed 7, 1500 ms), requests in system every
250 ms: rising in every window under priority to the exiting classes, within 3× their mean level
under max-pressure, and at least 5× fewer at the end. (The replicated token-backlog verdict of the
priority variant needs a longer horizon — its backlog oscillates as it grows; check_rybko_stolyar
covers its divergence.)"""
CLAIM = ("Rybko-Stolyar network at 0.9 load per engine: max-pressure is stable (fluid drains, simulated backlog "
         "verdict STABLE), while priority to the exiting classes grows on the same draws")
SOURCE = "Dai, Lin 2005 (max-pressure); Li, Dai, Peng arXiv 2504.07347 v3 §5.4 (Rybko-Stolyar)"
METHOD = "fluid + simulation (replicated backlog verdict)"


def check():
    import os

    import numpy as np

    import fluidllm as fl
    from fluidllm.fluid import network_fluid_verdict
    from fluidllm.sim.network_reference import simulate_network_reference
    from fluidllm.sim.network_stability import network_stability

    from proofs_checks import example

    workers = min(2, os.cpu_count() or 1)
    mp = fl.load_model(example("networks/rybko_stolyar_maxpressure.toml"))
    pr = fl.load_model(example("networks/rybko_stolyar.toml"))
    fv = network_fluid_verdict(mp).verdict
    res = network_stability(mp, load=1.0, replications=8, horizon_s=4.0, seed=0, workers=workers)
    lo, hi = res.slope_interval
    ts = np.arange(0.0, 1501.0, 250.0)
    n_mp = simulate_network_reference(mp, 1500.0, 7).requests_in_system(ts)
    n_pr = simulate_network_reference(pr, 1500.0, 7).requests_in_system(ts)
    ok = (fv == "DRAINS" and res.verdict == "STABLE" and lo <= 0 <= hi
          and bool(np.all(np.diff(n_pr[1:]) > 0)) and n_mp[1:].max() <= 3 * n_mp[1:].mean()
          and n_pr[-1] >= 5 * n_mp[-1])
    return bool(ok), (f"max-pressure: fluid {fv}; simulated {res.verdict}, backlog slope {res.slope_tokens_per_s:.4g} "
                f"tokens/s, 99% interval [{lo:.4g}, {hi:.4g}] ({res.replications} x {res.horizons_s[-1]:g} s); "
                f"requests in system every 250 ms, seed 7: max-pressure {n_mp.astype(int).tolist()}, "
                f"priority to exiting classes {n_pr.astype(int).tolist()}")
