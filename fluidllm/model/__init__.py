"""The model layer: frozen, validated data (workloads, length laws, engines, batch time, TOML)."""
from .arrivals import Arrival, DeterministicArrival, PoissonArrival, RenewalArrival, TraceArrival
from .classes import ROUTING_RULES, ClassNetwork, JobClass
from .batchtime import Affine, BatchTime, Constant, PiecewiseLinear, Staircase, Table, TwoFeature
from .engine import Engine
from .io import dumps_model, load_model, loads_model, model_to_dict, save_model
from .lengths import (Deterministic, Empirical, EmpiricalPairs, Geometric, Independent, JointLengths,
                      LengthLaw, Lognormal, Mixture, Poisson, Uniform)
from .model import Model
from .network import Call, NetworkModel, Workflow, network_from_toml  # noqa: F401 (Call, Workflow: fluidllm.model.*)
from .policy import POLICIES, PolicySpec
from .traces import DATASETS, Trace, load_azure_trace, load_mooncake_trace, load_trace
from .workload import Workload

__all__ = [
    "Arrival", "DeterministicArrival", "PoissonArrival", "RenewalArrival", "TraceArrival",
    "Affine", "BatchTime", "Constant", "PiecewiseLinear", "Staircase", "Table", "TwoFeature",
    "ROUTING_RULES", "ClassNetwork", "JobClass",
    "Engine", "dumps_model", "load_model", "loads_model", "model_to_dict", "save_model",
    "Deterministic", "Empirical", "EmpiricalPairs", "Geometric", "Independent", "JointLengths",
    "LengthLaw", "Lognormal", "Mixture", "Poisson", "Uniform", "Model", "NetworkModel", "POLICIES", "PolicySpec",
    "DATASETS", "Trace", "load_azure_trace", "load_mooncake_trace", "load_trace", "Workload",
]
