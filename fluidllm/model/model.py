"""A model: engines and the request classes sent to them."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import ModelError, require
from .engine import Engine
from .workload import Workload

__all__ = ["Model"]


@dataclass(frozen=True)
class Model:
    """Engines by name and workloads by name; every workload names an engine of the model.

    With a single engine a workload may omit ``engine``; it is then set to that engine.
    """

    engines: dict[str, Engine]
    workloads: dict[str, Workload] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(len(self.engines) > 0, "engines", {}, "a model needs at least one [engines.NAME] table")
        for name, e in self.engines.items():
            require(isinstance(e, Engine), f"engines.{name}", e, "must be an Engine")
            require(e.name == name, f"engines.{name}.name", e.name, f"must equal its key {name!r}")
        fixed = {}
        for name, w in self.workloads.items():
            require(isinstance(w, Workload), f"workloads.{name}", w, "must be a Workload")
            require(w.name == name, f"workloads.{name}.name", w.name, f"must equal its key {name!r}")
            if w.engine is None:
                if len(self.engines) != 1:
                    raise ModelError(f"workloads.{name}.engine", None,
                                     f"must name one of the engines {sorted(self.engines)}")
                w = replace(w, engine=next(iter(self.engines)))
            elif w.engine not in self.engines:
                raise ModelError(f"workloads.{name}.engine", w.engine, f"must be one of {sorted(self.engines)}")
            fixed[name] = w
        object.__setattr__(self, "engines", dict(self.engines))
        object.__setattr__(self, "workloads", fixed)

    def workloads_on(self, engine: str) -> list[Workload]:
        """The workloads sent to ``engine``, in model order."""
        return [w for w in self.workloads.values() if w.engine == engine]

    def scaled(self, load: float) -> "Model":
        """The same model with every arrival rate multiplied by ``load``."""
        return replace(self, workloads={k: w.scaled(load) for k, w in self.workloads.items()})

    def with_engine(self, name: str, **changes: object) -> "Model":
        """A copy with fields of engine ``name`` replaced."""
        if name not in self.engines:
            raise ModelError("engine", name, f"must be one of {sorted(self.engines)}")
        engines = dict(self.engines)
        engines[name] = replace(engines[name], **changes)
        return replace(self, engines=engines)
