"""Which policies are work-conserving (eqs. 8–9), by exhaustive search over small states."""
CLAIM = ("orca, sarathi, kfcfs, vllm-v1 are work-conserving; fastertransformer and vllm are not "
         "(minimal counterexample states found by search)")
SOURCE = "Li, Dai, Peng arXiv 2504.07347, Table 1 and eqs. 8-9"
METHOD = "exhaustive search (reference policy rules)"


def _states(max_requests: int, max_p: int, max_d: int):
    from itertools import product

    one = [(p, d) for p in range(max_p + 1) for d in range(max_d + 1) if p + d > 0]
    for n in range(1, max_requests + 1):
        yield from product(one, repeat=n)


def check():
    from fluidllm import PolicySpec
    from fluidllm.sim.reference import RequestView, View, plan_batch

    b_max = 4
    counter = {}
    checked = 0
    for state in _states(3, 4, 2):        # ordered by number of requests, then FCFS content
        # A request past its prefill has been served, so it is running (vLLM v1's notion).
        view = View(b_max, tuple(RequestView(i, p, d, running=(p == 0)) for i, (p, d) in enumerate(state)))
        demand = view.demand_tokens
        for name in ("orca", "sarathi", "kfcfs", "vllm-v1", "fastertransformer", "vllm"):
            spec = PolicySpec(name, {"split_long_prompts": True} if name in ("fastertransformer", "vllm") else {})
            tokens = sum(p + d for p, d in plan_batch(spec, view).values())
            checked += 1
            if tokens != min(b_max, demand) and name not in counter:
                counter[name] = (state, tokens, demand)
    wc_ok = not any(n in counter for n in ("orca", "sarathi", "kfcfs", "vllm-v1"))
    non_ok = "fastertransformer" in counter and "vllm" in counter
    detail = (f"{checked} (state, policy) pairs with b_max = {b_max}; counterexamples (prefill_left, decode_left) "
              "per request, FCFS: " + "; ".join(f"{n}: {s} -> batch {t} tokens, demand {d}"
                                                   for n, (s, t, d) in counter.items()))
    return wc_ok and non_ok, detail
