"""Proposition 3: K identical engines behind join-the-shortest-queue reach K times one engine's capacity."""
CLAIM = ("K identical engines with JSQ routing are stable whenever the load is below K times the single "
         "engine's work-conserving capacity")
SOURCE = "Li, Dai, Peng arXiv 2504.07347, Prop. 3"
METHOD = "simulation"
PENDING = "needs the network simulator with replica routing (issue 6)"


def check():  # pragma: no cover - runs once the network simulator exists
    raise NotImplementedError(PENDING)
