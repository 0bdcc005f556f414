"""Negative cases of the work-conservation judge: policies that are not work-conserving must be caught."""
CLAIM = ("fluidllm.testing.check_work_conserving catches non-work-conserving policies on real-scale engines "
         "(a decode cap of 4 per batch; FasterTransformer), agreeing with brute force on a small envelope, and "
         "passes Sarathi-Serve")
SOURCE = "Li, Dai, Peng arXiv 2504.07347, eqs. 8-9 (work conservation), Table 1"
METHOD = "search + brute force (reference policy rules)"


class DecodeCap4:
    """Sarathi-Serve with at most 4 decode tokens per batch: not work-conserving (5 decoders, b_max >= 5)."""

    name = "decode-cap-4"
    work_conserving = True          # a wrong claim: the judge must say so

    def plan(self, view):
        budget = view.token_budget if view.kv_free_tokens is None else min(view.token_budget, view.kv_free_tokens)
        k = view.max_batch_requests
        plan, decodes = {}, 0
        for r in view.requests:
            room = budget > 0 and decodes < 4 and (k is None or len(plan) < k)
            if r.prefill_left == 0 and r.decode_left > 0 and room:
                plan[r.id] = (0, 1)
                budget -= 1
                decodes += 1
        for r in view.requests:
            if r.prefill_left > 0 and budget > 0 and (k is None or len(plan) < k):
                n = min(r.prefill_left, budget)
                plan[r.id] = (n, 0)
                budget -= n
        return plan


def check():
    from fluidllm.model import Deterministic, Engine, Geometric, Independent, Model, PoissonArrival, Staircase, Workload
    from fluidllm.model.policy import PolicySpec
    from fluidllm.testing import brute_force, check_work_conserving, small_envelope

    # The paper's Fig. 1 engine: b_max = 512, no KV limit, 129-token prompts, geometric outputs of mean 112.
    eng = Engine("a100", 512, Staircase(11.28, 35.47, 128), policy=PolicySpec("sarathi"))
    m = Model({"a100": eng}, {"fig1": Workload("fig1", PoissonArrival(10.4), Independent(Deterministic(129),
                                                                                         Geometric(112.0, 1)), "a100")})
    small = small_envelope(token_budget=6, max_requests=5, max_prefill=1, max_decode=1)
    out, ok = [], True
    for pol, want in ((DecodeCap4(), False), (PolicySpec("fastertransformer"), False), (PolicySpec("sarathi"), True)):
        r = check_work_conserving(pol, m, max_examples=60)
        bf = brute_force(pol, small)
        ce = r.counterexample
        good = r.ok == want and bf.ok == want
        if not want:
            good = good and ce is not None and ce.batch_tokens < min(ce.budget_tokens, ce.demand_tokens)
        ok = ok and good
        shown = "YES" if r.ok else (f"NO: {len(ce.view.requests)} requests, batch {ce.batch_tokens} of "
                                    f"min(budget, demand) = {min(ce.budget_tokens, ce.demand_tokens)} tokens")
        out.append(f"{r.policy}: {shown}; brute force on {bf.states} states: {'holds' if bf.ok else 'fails'}")
    return ok, "b_max = 512 engine; " + "; ".join(out)
