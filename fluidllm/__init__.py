"""fluidllm: what load an LLM inference setup can sustain, and whether a scheduler reaches it.

Public API (see README): ``load_model``, ``capacity``, the model classes, ``ModelError``.
"""
from .errors import ModelError
from .model import *  # noqa: F401,F403
from .model import __all__ as _model_all

__version__ = "0.1.0"
__all__ = ["ModelError", "__version__", *_model_all]
from .capacity import Capacity, capacity, token_region  # noqa: E402

__all__ += ["Capacity", "capacity", "token_region"]
from .sim.result import SimResult  # noqa: E402
from .sim.simulate import simulate  # noqa: E402
from .sim.stability import BoundaryResult, StabilityResult, stability, stability_boundary  # noqa: E402

__all__ += ["SimResult", "simulate", "StabilityResult", "BoundaryResult", "stability", "stability_boundary"]
from .capacity.policy import (PolicyCapacity, PolicyCapacityRow, PolicyCapacityTable, policy_capacity,  # noqa: E402
                              policy_capacity_table)

__all__ += ["PolicyCapacity", "PolicyCapacityRow", "PolicyCapacityTable", "policy_capacity", "policy_capacity_table"]
from .fluid import fluid_trajectory  # noqa: E402

__all__ += ["fluid_trajectory"]
from .sim.network_simulate import NetworkSimResult, simulate_network  # noqa: E402
from .sim.network_stability import NetworkStabilityResult, network_stability  # noqa: E402

__all__ += ["NetworkSimResult", "simulate_network", "NetworkStabilityResult", "network_stability"]
from .capacity.planning import PlanResult, confirm_plan, plan_engines  # noqa: E402

__all__ += ["PlanResult", "plan_engines", "confirm_plan"]
from .sweep import SweepResult, SweepSpec, load_results, load_sweep, run_sweep  # noqa: E402

__all__ += ["SweepSpec", "SweepResult", "load_sweep", "run_sweep", "load_results"]
