"""Proposition 3 / Remark 4: K identical work-conserving engines behind join-the-shortest-queue
are throughput-optimal, λ* = K·(b_max/t(b_max))/(m_p + m_d); random routing has the same
capacity but a larger latency.

Engine (cheap, the paper's staircase scaled down): Sarathi, b_max = 64, t(n) = 1 + 3·⌈n/32⌉ ms, so
t(64) = 7 ms and μ* = 64/7 tokens/ms (b = 64 maximises b/t(b): 32/4 = 8 < 64/7). Requests: prefill
deterministic 64 (one full batch, so that requests really queue), decode geometric mean 8, m = 72
tokens: λ* = K·(64/7)/72 per ms = K·127 req/s. For K = 2, 4, 8 (one-call workflow, Poisson arrivals):

1. LP: ``fluidllm.capacity(model).max_scale × λ`` equals K·μ*/m (relative error < 1e-9).
2. Reference network simulator (one seed per case, seed 1), horizon H = 8 windows of w = 6.4/K s
   (so λ*·w ≈ 813 requests per window for every K); requests in system sampled every 10 ms.
   JSQ by tokens at 0.85·λ* is *stable*: over the second half, max ≤ 4 × mean, not rising in every
   window, least-squares slope of n(t) below 1/4 of the overload rate 0.15·λ*. JSQ at 1.15·λ*
   *grows*: it rises in each of the 4 windows of the second half, and the slope of n(t) over the
   last 3/4 of the run is within 35 % of the fluid rate λ − λ* = 0.15·λ* (requests/s: under overload
   every batch is full, completions run at λ*, so the requests in system grow at λ − λ*) and within
   20 % of λ̂ − λ* with λ̂ the realised arrival rate over the same span (the nominal comparison
   carries the Poisson noise of the arrivals, about 9 % sd, amplified by 1/0.15).
3. Random routing at 0.85·λ* (same arrival and length draws) is stable by the same test and its
   mean end-to-end latency is at least 5 % above JSQ's.

The arrival instants scale with 1/λ, so with one seed the three K see the same arrival path in
units of windows (the K = 2, 4, 8 overload counts nearly coincide). Margins measured on seeds 1–10
(all 30 (K, seed) pairs): stable runs max/mean 1.28–2.87 (bound 4), |slope|/(0.15·λ*) ≤ 0.07
(bound 0.25; overload ≈ 1), never rising in every window; overload always rising in every window
(smallest window rise 63 requests, expected 0.15·λ*·w ≈ 122), slope/fluid 0.84–1.22 (bound ±35 %),
slope/realised 0.94–1.13 (bound ±20 %); latency ratio random/JSQ 1.11–1.19 for K = 2, 1.17–1.27
for K = 4, 1.23–1.31 for K = 8 (bound 1.05: the gap grows with K, pooling gains more). Seed 1 is
used. Wall time about 15 s (2 cores, idle).
"""
CLAIM = ("K identical engines behind JSQ (K = 2, 4, 8): LP capacity = K·(b_max/t(b_max))/(m_p+m_d); simulated "
         "JSQ is stable at 0.85 of it and grows at about the fluid rate λ-λ* at 1.15; random routing is also "
         "stable at 0.85 but has a larger mean end-to-end latency")
SOURCE = "Li, Dai, Peng arXiv 2504.07347 v3, Prop. 3 / Remark 4"
METHOD = "LP + simulation"

B_MAX, C_MS, A_MS, B0 = 64, 1.0, 3.0, 32
V_P, V_D = 64, 8
KS = (2, 4, 8)
SEED = 1
N_WINDOWS = 8
STABLE_MAX_OVER_MEAN = 4.0
STABLE_SLOPE_FRACTION = 0.25
GROWTH_TOL = 0.35
GROWTH_TOL_REALISED = 0.20
LATENCY_GAIN = 1.05


def _t_ms(n: int) -> float:
    return C_MS + A_MS * -(-n // B0)


def lam_star_per_s(k: int) -> float:
    """K·μ*/(m_p + m_d) in requests/s, μ* = b_max/t(b_max) tokens/ms."""
    return k * (B_MAX / _t_ms(B_MAX)) / (V_P + V_D) * 1000.0


def _model(k: int, rate_per_s: float, routing: str):
    from fluidllm.model.io import loads_model

    engines = "".join(f'[engines.e{i}]\ntoken_budget = {B_MAX}\npolicy = "sarathi"\n'
                      f'batch_time = {{ kind = "staircase", c_ms = {C_MS}, a_ms = {A_MS}, b0 = {B0} }}\n\n'
                      for i in range(k))
    names = ", ".join(f'"e{i}"' for i in range(k))
    flow = (f'[workflows.chat]\narrival = {{ kind = "poisson", rate_per_s = {float(rate_per_s)!r} }}\n\n'
            f'[[workflows.chat.calls]]\nid = "answer"\nengine = [{names}]\nrouting = "{routing}"\n'
            f'prefill = {{ kind = "deterministic", value = {V_P} }}\n'
            f'decode = {{ kind = "geometric", mean = {V_D} }}\nafter = []\n')
    return loads_model(engines + flow, ".")


def _case(k: int, rho: float, routing: str, seed: int = SEED) -> dict:
    """One simulated path; the statistics the verdicts use."""
    import numpy as np

    from fluidllm.sim.network_reference import simulate_network_reference

    lam_star = lam_star_per_s(k)
    w_ms = 6400.0 / k
    h_ms = N_WINDOWS * w_ms
    run = simulate_network_reference(_model(k, rho * lam_star, routing), h_ms, seed)
    ts = np.arange(0.0, h_ms + 1e-9, 10.0)
    n = run.requests_in_system(ts).astype(float)
    edges = run.requests_in_system(np.arange(0.0, h_ms + 1e-9, w_ms)).astype(float)
    half = ts >= h_ms / 2
    late = ts >= h_ms / 4
    slope_half = np.polyfit(ts[half] / 1000.0, n[half], 1)[0]  # requests/s
    slope_late = np.polyfit(ts[late] / 1000.0, n[late], 1)[0]
    rises = np.diff(edges[N_WINDOWS // 2:]) > 0
    e2e = run.e2e_ms
    arr = np.asarray(run.instance_arrival_ms)
    lam_hat = np.count_nonzero(arr >= h_ms / 4) / (0.75 * h_ms / 1000.0)  # realised arrival rate, last 3/4
    return dict(realised_rate=float(lam_hat - lam_star), k=k, rho=rho, routing=routing, lam_star=lam_star, fluid_rate=(rho - 1.0) * lam_star,
                max_over_mean=float(n[half].max() / max(n[half].mean(), 1e-9)), mean_n=float(n[half].mean()),
                slope_half=float(slope_half), slope_late=float(slope_late), rises_all=bool(rises.all()),
                edges=edges.astype(int).tolist(), e2e_mean=float(e2e.mean()), n_req=len(run.created_ms))


def _stable(c: dict) -> bool:
    return (c["max_over_mean"] <= STABLE_MAX_OVER_MEAN and not c["rises_all"]
            and abs(c["slope_half"]) < STABLE_SLOPE_FRACTION * 0.15 * c["lam_star"])


def _grows(c: dict) -> bool:
    return (c["rises_all"] and abs(c["slope_late"] / c["fluid_rate"] - 1.0) <= GROWTH_TOL
            and abs(c["slope_late"] / c["realised_rate"] - 1.0) <= GROWTH_TOL_REALISED)


def check():
    import fluidllm as fl

    ok, parts = True, []
    for k in KS:
        lam_star = lam_star_per_s(k)
        lp = fl.capacity(_model(k, 0.85 * lam_star, "jsq-tokens")).max_scale * 0.85 * lam_star
        lp_ok = abs(lp / lam_star - 1.0) < 1e-9
        jsq, over, rnd = (_case(k, 0.85, "jsq-tokens"), _case(k, 1.15, "jsq-tokens"), _case(k, 0.85, "random"))
        gain = rnd["e2e_mean"] / jsq["e2e_mean"]
        verdicts = (lp_ok, _stable(jsq), _grows(over), _stable(rnd), gain >= LATENCY_GAIN)
        ok &= all(verdicts)
        parts.append(
            f"K={k}: λ* {lam_star:.2f}/s, LP {lp:.6f}/s{'' if lp_ok else ' MISMATCH'}; "
            f"JSQ@0.85 max/mean {jsq['max_over_mean']:.2f} slope {jsq['slope_half']:+.1f}/s "
            f"{'stable' if verdicts[1] else 'NOT STABLE'}; "
            f"JSQ@1.15 windows {over['edges']} slope {over['slope_late']:.1f}/s vs fluid {over['fluid_rate']:.1f}/s "
            f"({over['slope_late'] / over['fluid_rate'] - 1:+.0%}; {over['slope_late'] / over['realised_rate'] - 1:+.0%} vs realised λ̂ - λ* {over['realised_rate']:.1f}/s) {'grows' if verdicts[2] else 'NOT GROWING AS FLUID'}; "
            f"random@0.85 max/mean {rnd['max_over_mean']:.2f} slope {rnd['slope_half']:+.1f}/s "
            f"{'stable' if verdicts[3] else 'NOT STABLE'}; mean e2e random {rnd['e2e_mean']:.1f} ms vs JSQ "
            f"{jsq['e2e_mean']:.1f} ms ({gain - 1:+.0%})")
    return ok, "; ".join(parts)
