"""Scheduling policies as vectorized rules over replications × resident slots.

Every built-in rule is one composition of the FCFS fill primitive (:mod:`.fill`) and declares
``work_conserving``; see :mod:`.rules`.
"""
from .fill import fcfs_fill
from .rules import VECTOR_POLICIES, SlotState, VectorPolicy, plugin_vector_policy, vector_policy

__all__ = ["fcfs_fill", "SlotState", "VectorPolicy", "VECTOR_POLICIES", "vector_policy", "plugin_vector_policy"]
