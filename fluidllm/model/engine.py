"""One LLM inference engine: limits, batch-time model and policy."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ModelError, integer, require
from .batchtime import BatchTime, Table
from .policy import PolicySpec

__all__ = ["Engine"]


@dataclass(frozen=True)
class Engine:
    """An engine running batches back to back.

    Attributes:
        name: the engine's name in the model.
        token_budget: b_max, tokens per batch (>= 1).
        batch_time: t(batch) in ms.
        max_batch_requests: k_max, requests given tokens in one batch (None: no cap).
        max_resident_requests: admission cap on resident requests, like vLLM ``max_num_seqs``.
        kv_capacity_tokens: KV-cache capacity M in tokens (None: unlimited).
        policy: the scheduling policy and its flags.
    """

    name: str
    token_budget: int
    batch_time: BatchTime
    max_batch_requests: int | None = None
    max_resident_requests: int | None = None
    kv_capacity_tokens: int | None = None
    policy: PolicySpec = field(default_factory=PolicySpec)

    def __post_init__(self) -> None:
        f = f"engines.{self.name}"
        object.__setattr__(self, "token_budget", integer(self.token_budget, f"{f}.token_budget", minimum=1))
        for key in ("max_batch_requests", "max_resident_requests", "kv_capacity_tokens"):
            v = getattr(self, key)
            if v is not None:
                object.__setattr__(self, key, integer(v, f"{f}.{key}", minimum=1))
        require(isinstance(self.batch_time, BatchTime), f"{f}.batch_time", self.batch_time, "must be a batch-time model")
        require(isinstance(self.policy, PolicySpec), f"{f}.policy", self.policy, "must be a PolicySpec")
        bt = self.batch_time
        if isinstance(bt, Table) and (bt.tokens[0] > 1 or bt.max_tokens < self.token_budget):
            raise ModelError(f"{f}.token_budget", self.token_budget,
                             f"the batch-time table covers only {bt.tokens[0]:g}..{bt.max_tokens} tokens; "
                             "it must cover 1..token_budget (tables are not extrapolated)")

    @property
    def max_requests_per_batch(self) -> int:
        """Requests that can get tokens in one batch: min(k_max, b_max)."""
        k = self.max_batch_requests
        return self.token_budget if k is None else min(k, self.token_budget)
