"""Fluid models of one engine and their exact trajectories (see :mod:`fluidllm.fluid.model`)."""
from .model import FLUID_POLICIES, FluidModel, fluid_model
from .network import (NETWORK_POLICIES, NetworkFluidTrajectory, NetworkFluidVerdict, engine_loads, fluid_policies_of,
                      network_fluid_trajectory, network_fluid_verdict, rybko_stolyar_network)
from .trajectory import FluidTrajectory, drain_time_ms, fluid_trajectory, growth_slope_tokens_per_s

__all__ = ["FLUID_POLICIES", "FluidModel", "fluid_model", "FluidTrajectory", "fluid_trajectory", "drain_time_ms",
           "growth_slope_tokens_per_s", "NETWORK_POLICIES", "NetworkFluidTrajectory", "NetworkFluidVerdict",
           "engine_loads", "fluid_policies_of", "network_fluid_trajectory", "network_fluid_verdict", "rybko_stolyar_network"]
