"""SGLang's default scheduler as a fluidllm plug-in (written against the public plug-in API only).

Source rule (SGLang, ``python/sglang/srt/managers/scheduler.py``, ``get_next_batch_to_run``;
server arguments ``--chunked-prefill-size`` and ``--enable-mixed-chunk``, default off): at every
step the scheduler first tries to form a new *prefill* batch from the waiting queue
(``get_new_batch_prefill``, FCFS under the default policy when there is no prefix cache to match,
the last prompt chunked when chunked prefill is on); only when no prefill batch can be formed does
it run a *decode* batch of every running request. Mixing prefill chunks into decode batches is off
by default, so a batch is prefill-only or decode-only.

Modelled: prefill-only batches of FCFS prompt chunks while any prompt tokens wait (the oldest
partially prefilled prompt first, as SGLang continues its chunked request), else one decode token
for every decoding request, FCFS, within the token budget (``max_prefill_tokens`` /
``chunked_prefill_size``: the engine's ``token_budget``, or ``chunked_prefill_size`` if smaller) and
``max_batch_requests``. ``plan_vectorized`` is the same rule over the simulator's slot arrays, so
fluidllm's vectorized core runs it (``fluidllm.testing.check_matches`` checks the two agree). Not modelled: the radix prefix cache, ``new_token_ratio`` KV reservation
(see ``lightllm_peak_kv.py`` for a memory-reserving admission), retraction.
"""
from __future__ import annotations


class SGLangDefault:
    name = "sglang-default"
    work_conserving = False   # decoders wait while prompts are prefilled (no mixing)

    def __init__(self, chunked_prefill_size: int | None = None) -> None:
        self.chunk = chunked_prefill_size

    def plan(self, view):
        budget = view.token_budget if self.chunk is None else min(view.token_budget, self.chunk)
        if view.kv_free_tokens is not None:
            budget = min(budget, view.kv_free_tokens)
        slots = view.max_batch_requests if view.max_batch_requests is not None else view.token_budget
        plan = {}
        for r in view.requests:                      # a prefill batch, if one can be formed
            if r.prefill_left > 0:
                if budget <= 0 or slots <= 0:
                    break
                n = min(r.prefill_left, budget)
                plan[r.id] = (n, 0)
                budget -= n
                slots -= 1
        if plan:
            return plan
        for r in view.requests:                      # otherwise a decode batch
            if r.prefill_left == 0 and r.decode_left > 0:
                if budget <= 0 or slots <= 0:
                    break
                plan[r.id] = (0, 1)
                budget -= 1
                slots -= 1
        return plan

    def plan_vectorized(self, B, s):
        """The same rule for every replication at once: (R, W) slot arrays in FCFS order."""
        from fluidllm.policies import fcfs_fill

        budget = s.budget if self.chunk is None else B.astype(B.minimum(s.budget, self.chunk), "int32")
        pre_phase = s.pre > 0
        decoding = B.astype((s.pre == 0) & (s.dec > 0), "int32")
        # rows with any prompt tokens left run a prefill batch, the others a decode batch
        x = B.where(B.rany(pre_phase)[:, None], s.pre, decoding)
        give, _, _ = fcfs_fill(B, x, budget, s.slots, whole=False)
        return B.where(pre_phase, give, 0), B.where(pre_phase, 0, give)
