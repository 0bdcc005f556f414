"""Fig. 14 by simulation: at vertex C only Sarathi-128 is stable, locked into (29 prefill, 99 decode) batches.

examples/vertex_c_kmax100.toml: b_max = b0 = 128, k_max = 100, one (290, 990)-token request every
P = 467.5 ms = 10 batches of t(128) = 46.75 ms — exactly vertex C. Everything is deterministic, so
instead of a statistical verdict each configuration is decided on one long path (300 s = 641
periods): the token backlog (tokens arrived − tokens served) and the requests in system at the end
of each period. STABLE: over the second half the backlog stays within one request's tokens (1280)
of a fixed level. GROWING: over each third of the second half it grows by at least 100 tokens per
period, and not slowing (last third ≥ 0.75 × first third). Anything else fails the check.

Configurations: Sarathi-128, Orca-128, Sarathi-1024 (token_budget 1024, same k_max), and FT-128 and
vLLM-128 under both conventions for prompts longer than b_max: never scheduled (the simulator
reports them unschedulable; the backlog grows by a whole request per period) and split into
128-token pieces. For Sarathi-128 the batch log must show, after a warm-up, only back-to-back
batches of exactly 29 prefill + 99 decode tokens from 100 requests. The vectorized core is also
compared batch for batch with the reference simulator (fluidllm/sim/reference.py) over 100 s.
"""
CLAIM = ("vertex C ((290, 990)-token requests every 467.5 ms, b_max = 128, k_max = 100): among Sarathi-128, "
         "FT-128, vLLM-128, Orca-128 and Sarathi-1024 only Sarathi-128 is stable, locked into batches of "
         "29 prefill + 99 decode tokens (FT/vLLM under both long-prompt conventions)")
SOURCE = "Li, Dai, Peng arXiv 2504.07347 v3 §6, Thm 10 and Fig. 14"
METHOD = "simulation"

PERIOD_MS = 467.5
HORIZON_S = 300.0            # 641 periods; Sarathi-128 locks in by ~91 s (first completions at ~46 s)
REFERENCE_HORIZON_MS = 100_000.0
MIN_GROWTH = 100.0           # tokens per period (of 1280 offered) that counts as growth
# (label, policy, flags, token_budget) and whether Fig. 14 says it is stable
CONFIGS = (
    ("Sarathi-128", "sarathi", {}, 128, True),
    ("Orca-128", "orca", {}, 128, False),
    ("Sarathi-1024", "sarathi", {}, 1024, False),
    ("FT-128", "fastertransformer", {}, 128, False),
    ("FT-128-split", "fastertransformer", {"split_long_prompts": True}, 128, False),
    ("vLLM-128", "vllm", {}, 128, False),
    ("vLLM-128-split", "vllm", {"split_long_prompts": True}, 128, False),
)


def _period_series(rows, n_periods, tokens_per_request):
    """Backlog (tokens) and requests in system at the end of periods 1..n (arrivals at 0, P, 2P, ...)."""
    import numpy as np

    end = np.array([r["end_ms"] for r in rows])
    served = np.array([r["prefill_tokens"] + r["decode_tokens"] for r in rows], dtype=np.int64)
    done = []
    for r in rows:   # a request completes in the batch that takes its last prefill and decode tokens
        left = {i: (p, d) for i, p, d in r["resident_before"]}
        done.append(sum(left[i] == (gp, gd) for i, gp, gd in r["tokens"]))
    edges = PERIOD_MS * np.arange(1, n_periods + 1)
    k = np.searchsorted(end, edges, side="right")          # batches completed by each period end
    arrived = np.arange(1, n_periods + 1)                  # period j ends just before arrival j
    back = arrived * tokens_per_request - np.concatenate([[0], np.cumsum(served)])[k]
    in_sys = arrived - np.concatenate([[0], np.cumsum(done, dtype=np.int64)])[k]
    return back, in_sys


def _decide(back):
    """STABLE / GROWING / UNDECIDED from the backlog at period ends, and the growth per period."""
    import numpy as np

    half = back[back.size // 2:]
    thirds = np.array_split(half, 3)
    growth = [(t[-1] - t[0]) / (t.size - 1) for t in thirds]
    rate = (half[-1] - half[0]) / (half.size - 1)
    if half.max() - half.min() <= 1280:
        return "STABLE", rate
    if min(growth) >= MIN_GROWTH and growth[-1] >= 0.75 * growth[0]:
        return "GROWING", rate
    return "UNDECIDED", rate


def _same_as_reference(engine, model):
    """The core's batch log equals the reference simulator's over REFERENCE_HORIZON_MS."""
    import fluidllm as fl
    from fluidllm.sim.draws import draw_requests
    from fluidllm.sim.reference import simulate_reference

    req = draw_requests(list(model.workloads.values()), REFERENCE_HORIZON_MS, 0)
    ref = simulate_reference(engine, req, REFERENCE_HORIZON_MS)
    core = fl.simulate(model, replications=1, horizon_s=REFERENCE_HORIZON_MS / 1000, seed=0, batch_log=True)
    rows = core.batch_log[0]
    return (len(rows) == len(ref.batches) and len(ref.unschedulable) == int(core.unschedulable[0])
            and all(tuple(b.tokens) == r["tokens"] and abs(b.end_ms - r["end_ms"]) < 1e-6
                    for b, r in zip(ref.batches, rows)))


def check():
    import numpy as np

    import fluidllm as fl

    from proofs_checks import example

    base = fl.load_model(example("vertex_c_kmax100.toml"))
    w = base.workloads["vertex_c"]
    per_request = int(w.lengths.prefill.value + w.lengths.decode.value)
    n_periods = int(HORIZON_S * 1000 // PERIOD_MS)
    ok, parts = True, []
    for label, pol, flags, budget, paper_stable in CONFIGS:
        m = base.with_engine("a100", policy=fl.PolicySpec(pol, flags), token_budget=budget)
        sim = fl.simulate(m, replications=1, horizon_s=HORIZON_S, seed=0, batch_log=True)
        rows = sim.batch_log[0]
        back, in_sys = _period_series(rows, n_periods, per_request)
        verdict, rate = _decide(back)
        ok &= verdict == ("STABLE" if paper_stable else "GROWING")
        ok &= _same_as_reference(m.engines["a100"], m)
        half = in_sys[in_sys.size // 2:]
        req_rate = (half[-1] - half[0]) / (half.size - 1)
        text = f"{label} {verdict} {rate:+.1f} tok ({req_rate:+.3f} requests)/period, {in_sys[-1]} in system at 300 s"
        if not rows:     # whole prompts of 290 > 128 tokens: nothing is ever scheduled
            ok &= int(sim.unschedulable[0]) == int(sim.arrived[0])
            text += f" (all {int(sim.unschedulable[0])} prompts unschedulable)"
        if label == "Sarathi-128":
            comp = np.array([(r["prefill_tokens"], r["decode_tokens"], len(r["tokens"])) for r in rows])
            bad = np.flatnonzero(~np.all(comp == (29, 99, 100), axis=1))
            first = int(bad[-1]) + 1 if bad.size else 0     # from here on every batch is (29, 99), 100 requests
            start = np.array([r["start_ms"] for r in rows])
            end = np.array([r["end_ms"] for r in rows])
            # locked in before the second half, and back to back: 10 batches of 46.75 ms per period
            ok &= first < len(rows) // 2 and bool(np.allclose(start[first + 1:], end[first:-1], atol=1e-6))
            ok &= bool(np.allclose(end[first:] - start[first:], PERIOD_MS / 10, atol=1e-9))
            text += (f", (29 p + 99 d, 100 requests) in all {len(rows) - first} batches after "
                     f"t = {start[first] / 1000:.1f} s")
        parts.append(text)
    return ok, "; ".join(parts) + f"; core = reference batch for batch over {REFERENCE_HORIZON_MS / 1000:g} s"
