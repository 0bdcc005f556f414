"""A request class: arrival process, joint length law, and the engine it is sent to."""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import ModelError, require
from .arrivals import Arrival
from .lengths import JointLengths

__all__ = ["Workload"]


@dataclass(frozen=True)
class Workload:
    """One class of requests (Poisson, renewal, deterministic or trace arrivals; any (v_p, v_d) law).

    Raises:
        ModelError: prefill law with mass at 0 tokens (a request has v_p >= 1), or a bad type.
    """

    name: str
    arrival: Arrival
    lengths: JointLengths
    engine: str | None = None

    def __post_init__(self) -> None:
        f = f"workloads.{self.name}"
        require(isinstance(self.arrival, Arrival), f"{f}.arrival", self.arrival, "must be an arrival process")
        require(isinstance(self.lengths, JointLengths), f"{f}.lengths", self.lengths, "must be a joint length law")
        prefill_min = self._prefill_min()
        if prefill_min < 1:
            raise ModelError(f"{f}.prefill", prefill_min, "every request has at least 1 prefill token (v_p >= 1)")

    def _prefill_min(self) -> int:
        lengths = self.lengths
        if hasattr(lengths, "prefill") and hasattr(lengths.prefill, "min_value"):
            return int(lengths.prefill.min_value)  # type: ignore[union-attr]
        return int(lengths.prefill.min())  # type: ignore[union-attr]

    @property
    def rate_per_s(self) -> float:
        return self.arrival.rate_per_s

    @property
    def token_rate_per_s(self) -> float:
        """λ(m_p + m_d): offered tokens per second."""
        return self.rate_per_s * self.lengths.mean_tokens

    def scaled(self, factor: float) -> "Workload":
        return replace(self, arrival=self.arrival.scaled(factor))
