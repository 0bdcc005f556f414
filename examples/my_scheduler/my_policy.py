"""A user's scheduling policy for fluidllm: decode first, then prompt chunks, with a prefill cap.

Every batch first gives one decode token to each request that is decoding (oldest first), then
fills what is left of the token budget with prompt chunks, oldest prompt first. ``prefill_cap``
(optional) limits the prompt tokens in one batch, as a latency knob: with it the policy is no longer
work-conserving (a batch of prompts alone stops at the cap), and fluidllm's checks show the state
where that happens.
"""
from __future__ import annotations


class MyPolicy:
    """Decode-first with an optional cap on the prompt tokens per batch."""

    def __init__(self, prefill_cap: int | None = None) -> None:
        self.prefill_cap = prefill_cap
        self.name = "decode-first" if prefill_cap is None else f"decode-first(prefill_cap={prefill_cap})"
        # The claim fluidllm.testing.check_work_conserving tests: true only without the cap.
        self.work_conserving = prefill_cap is None

    def plan(self, view):
        """{request id: (prefill tokens, decode tokens)} for this batch."""
        budget = view.token_budget
        if view.kv_free_tokens is not None:          # every token also takes one KV slot
            budget = min(budget, view.kv_free_tokens)
        slots = view.max_batch_requests              # requests per batch (None: no cap)
        plan = {}

        def room() -> bool:
            return budget > 0 and (slots is None or len(plan) < slots)

        for r in view.requests:                      # 1. one decode token per decoding request
            if r.prefill_left == 0 and r.decode_left > 0 and room():
                plan[r.id] = (0, 1)
                budget -= 1
        prefill_left = budget if self.prefill_cap is None else min(budget, self.prefill_cap)
        for r in view.requests:                      # 2. prompt chunks, oldest first
            if r.prefill_left > 0 and prefill_left > 0 and room():
                n = min(r.prefill_left, prefill_left)
                plan[r.id] = (n, 0)
                budget -= n
                prefill_left -= n
        return plan

    def plan_vectorized(self, B, state):
        """The same rule over the simulator's (replications, slots) arrays: it then runs vectorized.

        ``fluidllm.testing.check_matches`` checks that it agrees with ``plan``.
        """
        from fluidllm.policies.fill import fcfs_fill

        decoding = B.astype((state.pre == 0) & (state.dec > 0), "int32")
        gd, budget, slots = fcfs_fill(B, decoding, state.budget, state.slots, whole=False, fresh=True)
        cap = budget if self.prefill_cap is None else B.minimum(budget, self.prefill_cap)
        gp, left, _ = fcfs_fill(B, state.pre, cap, slots, whole=False)
        return gp, gd
