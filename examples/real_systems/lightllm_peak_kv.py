"""LightLLM's router as a fluidllm plug-in: admission by peak future KV use (public plug-in API only).

Source rule (LightLLM, ``lightllm/server/router/req_queue``, ``_can_add_new_req``; the
TokenAttention design in the LightLLM README): a waiting request joins the running batch only if
the *peak* KV the batch will ever need still fits the cache. Every request is assumed to run to
its full output: with the admitted requests sorted by remaining output r_(1) >= r_(2) >= ..., the
cache needed when the k-th of them finishes is Σ_{i<=k} c_(i) + k·r_(k) (c: tokens it holds or will
hold after its prompt), and the peak is the largest of these. The router then runs the newly
admitted requests' prefill as its own batch and decodes the running batch otherwise (no mixing).

Modelled: FCFS admission of not-yet-running requests while the peak stays <= kv_capacity_tokens
(the queue stops at the first request that does not fit); a prefill-only batch of the admitted
prompts (FCFS, chunked to the budget) whenever one waits, else one decode token per decoding
request. The output length is known exactly here (``decode_left``: LightLLM uses the request's
``max_new_tokens``, an upper bound; with the true length the admission is the least conservative
it can be). Not modelled: ``max_wait_tokens`` (LightLLM decodes a few steps before trying to admit
again, which needs memory between batches), splitfuse mode, the dynamic-prompt cache. Without a
KV capacity every request is admitted and the rule is prefill-first without mixing.
"""
from __future__ import annotations


def _peak(held, remaining):
    """max_k Σ_{i<=k} held_(i) + k·remaining_(k), requests sorted by remaining output, largest first."""
    order = sorted(range(len(held)), key=lambda i: -remaining[i])
    peak, cum = 0, 0
    for k, i in enumerate(order, start=1):
        cum += held[i]
        peak = max(peak, cum + k * remaining[i])
    return peak


class LightLLMPeakKV:
    name = "lightllm-peak-kv"
    work_conserving = False   # no mixing; admission may hold work back while the budget is free

    def plan(self, view):
        M = view.kv_capacity_tokens
        admitted = []
        held, remaining = [], []
        for r in view.requests:
            if r.running or r.kv_tokens > 0:         # already in the running batch
                admitted.append(r)
                held.append(r.kv_tokens + r.prefill_left)
                remaining.append(r.decode_left)
        for r in view.requests:                      # FCFS admission by peak future KV use
            if r.running or r.kv_tokens > 0:
                continue
            if M is not None and _peak(held + [r.prefill_left], remaining + [r.decode_left]) > M:
                break
            admitted.append(r)
            held.append(r.prefill_left)
            remaining.append(r.decode_left)
        admitted.sort(key=lambda r: r.arrival_index)
        budget = view.token_budget if view.kv_free_tokens is None else min(view.token_budget, view.kv_free_tokens)
        slots = view.max_batch_requests if view.max_batch_requests is not None else view.token_budget
        plan = {}
        for r in admitted:                           # prefill batch of the admitted prompts
            if r.prefill_left > 0:
                if budget <= 0 or slots <= 0:
                    break
                n = min(r.prefill_left, budget)
                plan[r.id] = (n, 0)
                budget -= n
                slots -= 1
        if plan:
            return plan
        for r in admitted:                           # otherwise decode the running batch
            if r.prefill_left == 0 and r.decode_left > 0:
                if budget <= 0 or slots <= 0:
                    break
                plan[r.id] = (0, 1)
                budget -= 1
                slots -= 1
        return plan
