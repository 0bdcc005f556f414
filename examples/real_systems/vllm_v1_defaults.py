"""vLLM V1's scheduler with its default limits as a fluidllm plug-in (public plug-in API only).

Source rule (vLLM, ``vllm/v1/core/sched/scheduler.py``; ``vllm/config/scheduler.py``:
``max_num_batched_tokens`` default 2048, ``max_num_seqs`` default 128, chunked prefill on): each
step first schedules the *running* requests in order — one decode token each, or the next chunk of
a prompt being prefilled — then admits *waiting* requests FCFS with chunked prefill, while the
step's tokens stay within ``max_num_batched_tokens`` and the running requests number at most
``max_num_seqs``. A request that cannot get KV blocks preempts the most recent running request
(recompute) — an engine-level rule that fluidllm's simulators apply to every policy.

Modelled exactly that, with the budget min(engine token_budget, ``max_num_batched_tokens``).
fluidllm's built-in ``vllm-v1`` is the same rule with ``max_num_seqs`` as the engine's
``max_resident_requests``; the tests check the two agree batch for batch.
"""
from __future__ import annotations


class VLLMV1Defaults:
    name = "vllm-v1-defaults"
    # Not work-conserving as a plug-in: its max_num_seqs cap sits inside plan(), so with 128 running
    # decoders and a waiting prompt a batch holds 128 tokens where the budget and the demand allow more
    # (fluidllm check-policy finds that state). The built-in vllm-v1 puts the cap on admission
    # (max_resident_requests), where the engine, not the rule, limits the batch.
    work_conserving = False

    def __init__(self, max_num_batched_tokens: int = 2048, max_num_seqs: int = 128) -> None:
        self.max_tokens = max_num_batched_tokens
        self.max_seqs = max_num_seqs

    def plan(self, view):
        budget = min(view.token_budget, self.max_tokens)
        if view.kv_free_tokens is not None:
            budget = min(budget, view.kv_free_tokens)
        slots = view.max_batch_requests if view.max_batch_requests is not None else view.token_budget
        plan = {}
        running = [r for r in view.requests if r.running]
        for r in running:                            # running requests first
            if budget <= 0 or slots <= 0:
                return plan
            if r.prefill_left == 0 and r.decode_left > 0:
                plan[r.id] = (0, 1)
                budget -= 1
                slots -= 1
            elif r.prefill_left > 0:
                n = min(r.prefill_left, budget)
                plan[r.id] = (n, 0)
                budget -= n
                slots -= 1
        seqs = len(running)
        for r in view.requests:                      # then waiting requests, FCFS, chunked
            if r.running or r.prefill_left == 0:
                continue
            if budget <= 0 or slots <= 0 or seqs >= self.max_seqs:
                break
            n = min(r.prefill_left, budget)
            plan[r.id] = (n, 0)
            budget -= n
            slots -= 1
            seqs += 1
        return plan
