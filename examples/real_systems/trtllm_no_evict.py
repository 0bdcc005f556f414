"""TensorRT-LLM in-flight batching with GUARANTEED_NO_EVICT as a fluidllm plug-in (public API only).

Source rule (TensorRT-LLM docs: "Paged Attention, IFB, and Request Scheduling", "Scheduler" (PyTorch
backend), "Useful Runtime Options — Capacity Scheduler Policy"): the *capacity scheduler* decides
which requests may hold resources; its default policy GUARANTEED_NO_EVICT starts a request only if
the KV cache for its whole sequence (prompt + maximum output) can be reserved on top of what the
running requests still need, so a started request is never paused. The *micro-batch scheduler*
then walks the fitting requests in order, giving each generation request one token and each
context request its prompt (in chunks with context chunking, FIRST_COME_FIRST_SERVED), until
``max_num_tokens`` or ``max_batch_size`` is reached; context and generation requests share a batch.

Modelled: a request that is not running starts only if, FCFS and without skipping, its prompt +
output fits the free KV after the remaining growth (prompt left + output left) of every running
request and of the ones started before it; then a K-FCFS batch over the started requests (decode
token or prompt chunk, in arrival order) within the token budget and ``max_batch_requests``. The
output length is known exactly (TensorRT-LLM reserves ``max_tokens``, an upper bound). Without a
KV capacity every request starts and the rule is K-FCFS, which is work-conserving.
"""
from __future__ import annotations


class TRTLLMGuaranteedNoEvict:
    name = "trtllm-guaranteed-no-evict"
    work_conserving = False   # the reservation may hold prompts back while the token budget is free

    def plan(self, view):
        started = [r for r in view.requests if r.running or r.kv_tokens > 0]
        if view.kv_free_tokens is not None:
            free = view.kv_free_tokens - sum(r.prefill_left + r.decode_left for r in started)
        for r in view.requests:
            if r.running or r.kv_tokens > 0:
                continue
            if view.kv_free_tokens is not None:
                need = r.prefill_left + r.decode_left
                if need > free:
                    break                            # FCFS capacity scheduling: no skipping
                free -= need
            started.append(r)
        started.sort(key=lambda r: r.arrival_index)
        budget = view.token_budget if view.kv_free_tokens is None else min(view.token_budget, view.kv_free_tokens)
        slots = view.max_batch_requests if view.max_batch_requests is not None else view.token_budget
        plan = {}
        for r in started:
            if budget <= 0 or slots <= 0:
                break
            if r.prefill_left == 0 and r.decode_left > 0:
                plan[r.id] = (0, 1)
                budget -= 1
                slots -= 1
            elif r.prefill_left > 0:
                n = min(r.prefill_left, budget)
                plan[r.id] = (n, 0)
                budget -= n
                slots -= 1
        return plan
