"""The built-in scheduling policies as vectorized rules over (R, W) slot arrays.

Each rule is written once from :func:`fluidllm.policies.fill.fcfs_fill` and declares whether it is
work-conserving (Li, Dai, Peng, arXiv 2504.07347, eqs. 8–9: if the resident demand
Σ_i (p_i + 1{p_i = 0}) reaches the budget, the batch holds exactly the budget). The same rules,
one request at a time, are in :mod:`fluidllm.sim.reference`; the tests check that the two agree
batch for batch.

A rule receives a :class:`SlotState` — the resident requests of every replication in FCFS order
— and returns ``(prefill_tokens, decode_tokens)``, two (R, W) int32 arrays, optionally followed by
their per-replication totals (P, D) when the rule has them for free.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..model.policy import PolicySpec
from ..sim.backend import Backend
from .fill import fcfs_fill

__all__ = ["SlotState", "VectorPolicy", "vector_policy", "plugin_vector_policy", "VECTOR_POLICIES"]


@dataclass
class SlotState:
    """What a vectorized rule sees at a batch boundary (arrays are (R, W), slots in FCFS order).

    Attributes:
        pre: prefill tokens left (int32; 0 for empty slots).
        dec: decode tokens left (int32; 0 for empty slots).
        budget: (R,) int32 tokens the batch may hold: min(b_max, free KV), 0 for a stopped replication.
        slots: (R,) int32 k_max, or None without a per-batch request cap.
        token_budget: b_max (the nominal budget: a "whole" prompt piece when prompts are split).
        running: bool, the request holds KV and has been served (vLLM v1); None when not tracked.
        group: bool, member of the current static batch (FasterTransformer static); None otherwise.
    """

    pre: Any
    dec: Any
    budget: Any
    slots: Any | None
    token_budget: int
    running: Any | None = None
    group: Any | None = None


Rule = Callable[[Backend, SlotState, PolicySpec], tuple[Any, Any]]


@dataclass(frozen=True)
class VectorPolicy:
    """A built-in rule: ``name``, ``work_conserving`` and ``plan(B, state, spec)``."""

    name: str
    work_conserving: bool
    rule: Rule
    needs_running: bool = False
    needs_group: bool = False
    #: whole prompts only (a prompt above the budget can never run unless split_long_prompts).
    whole_prompts: bool = False

    def plan(self, B: Backend, s: SlotState, spec: PolicySpec) -> tuple[Any, ...]:
        return self.rule(B, s, spec)


def _decoding(s: SlotState) -> Any:
    return (s.pre == 0) & (s.dec > 0)


def _i32(B: Backend, mask: Any) -> Any:
    return B.astype(mask, "int32")


def _chunk(B: Backend, s: SlotState, chunk: int | None) -> Any:
    return s.pre if chunk is None else B.minimum(s.pre, chunk)


def _whole_need(B: Backend, s: SlotState, spec: PolicySpec) -> Any:
    """Tokens a whole-prompt fill asks for: the prompt left, in pieces of at most b_max.

    Without ``split_long_prompts`` a prompt above b_max never gets here (it is unschedulable), so
    the cap only matters for the split flag and for a recompute after a KV preemption, which the
    reference also serves in b_max pieces.
    """
    return B.minimum(s.pre, s.token_budget)


def _split(B: Backend, s: SlotState, give: Any) -> tuple[Any, Any]:
    """Split one fill's tokens into prefill and decode by the slot's phase."""
    pre_phase = s.pre > 0
    return B.where(pre_phase, give, 0), B.where(pre_phase, 0, give)


def _fastertransformer(B: Backend, s: SlotState, spec: PolicySpec) -> tuple[Any, Any]:
    # Any decoder: decode-only batch; else whole prefills. x = 1 for decoders makes the whole
    # fill a decode fill, so one fill serves both branches row by row.
    dec = _decoding(s)
    x = B.where(B.rany(dec)[:, None], _i32(B, dec), _whole_need(B, s, spec))
    give, _, _ = fcfs_fill(B, x, s.budget, s.slots, whole=True)
    return _split(B, s, give)


def _vllm(B: Backend, s: SlotState, spec: PolicySpec) -> tuple[Any, Any]:
    # Any prompt waiting: whole prefills; none, or the first prompt does not fit the free KV
    # memory: decodes (as vLLM v0 does).
    any_pre = B.rany(s.pre > 0)
    dec = _i32(B, _decoding(s))
    give, _, _ = fcfs_fill(B, B.where(any_pre[:, None], _whole_need(B, s, spec), dec), s.budget, s.slots, whole=True)
    stuck = any_pre & (B.rsum(give, "int32") == 0)
    if bool(B.to_numpy(stuck).any()):
        g2, _, _ = fcfs_fill(B, B.where(stuck[:, None], dec, 0), s.budget, s.slots, whole=True)
        give = give + g2
    return _split(B, s, give)


def _orca(B: Backend, s: SlotState, spec: PolicySpec) -> tuple[Any, ...]:
    gp, budget, slots = fcfs_fill(B, _chunk(B, s, spec.flag("chunk_size")), s.budget, s.slots, whole=False)
    gd, left, _ = fcfs_fill(B, _i32(B, _decoding(s)), budget, slots, whole=False, fresh=True)
    return gp, gd, s.budget - budget, budget - left     # (P and D from the budget accounting)


def _sarathi(B: Backend, s: SlotState, spec: PolicySpec) -> tuple[Any, ...]:
    gd, budget, slots = fcfs_fill(B, _i32(B, _decoding(s)), s.budget, s.slots, whole=False, fresh=True)
    gp, left, _ = fcfs_fill(B, _chunk(B, s, spec.flag("chunk_size")), budget, slots, whole=False)
    return gp, gd, budget - left, s.budget - budget


def _kfcfs(B: Backend, s: SlotState, spec: PolicySpec) -> tuple[Any, Any]:
    x = s.pre + _i32(B, _decoding(s))   # a decoder asks for 1, a prefilling request for its prompt
    give, _, _ = fcfs_fill(B, x, s.budget, s.slots, whole=False)
    return _split(B, s, give)


def _vllm_v1(B: Backend, s: SlotState, spec: PolicySpec) -> tuple[Any, Any]:
    # Running requests first (decode token or prefill chunk, FCFS), then new prefills FCFS.
    # (A request that is not running is never decoding: it is new or preempted, with prefill left.)
    chunk = _chunk(B, s, spec.flag("chunk_size"))
    g1, budget, slots = fcfs_fill(B, B.where(s.running, chunk + _i32(B, _decoding(s)), 0), s.budget, s.slots,
                                  whole=False)
    g2, _, _ = fcfs_fill(B, B.where(s.running, 0, chunk), budget, slots, whole=False)
    return _split(B, s, g1 + g2)


def _fastertransformer_static(B: Backend, s: SlotState, spec: PolicySpec) -> tuple[Any, Any]:
    # Request-level static batching: a group runs its prefill, then decodes until all finish.
    dec = _decoding(s)
    need = _whole_need(B, s, spec)
    in_group = B.rany(s.group)[:, None]
    group_prefill = B.rany(s.group & (s.pre > 0))[:, None]
    x_new = B.where(B.rany(dec)[:, None], _i32(B, dec), need)      # no group: (initial decoders) or a new group
    x_grp = B.where(group_prefill, B.where(s.group, need, 0), _i32(B, dec & s.group))
    give, _, _ = fcfs_fill(B, B.where(in_group, x_grp, x_new), s.budget, s.slots, whole=True)
    return _split(B, s, give)


#: name -> VectorPolicy, for every built-in rule the vectorized core runs.
VECTOR_POLICIES: dict[str, VectorPolicy] = {p.name: p for p in (
    VectorPolicy("fastertransformer", False, _fastertransformer, whole_prompts=True),
    VectorPolicy("fastertransformer-static", False, _fastertransformer_static, needs_group=True, whole_prompts=True),
    VectorPolicy("vllm", False, _vllm, whole_prompts=True),
    VectorPolicy("orca", True, _orca),
    VectorPolicy("sarathi", True, _sarathi),
    VectorPolicy("kfcfs", True, _kfcfs),
    VectorPolicy("vllm-v1", True, _vllm_v1, needs_running=True),
)}


def plugin_vector_policy(policy: Any) -> VectorPolicy:
    """A python plug-in's ``plan_vectorized(B, state)`` as a :class:`VectorPolicy` the core runs.

    The plug-in's rule receives the backend ``B`` and a :class:`SlotState` and returns
    ``(prefill, decode)``, two (R, W) int arrays (optionally followed by their per-replication totals
    (P, D)), like the built-in rules: it must honour ``state.budget`` (min(b_max, free KV), 0 for a
    stopped replication) and ``state.slots``, give a decode token only to a decoding slot
    (prefill left 0, decode left > 0), and at most one. ``work_conserving`` is the plug-in's declared
    attribute; it may declare ``needs_running`` (``state.running`` is then tracked, as for vLLM v1)
    and ``needs_group`` (``state.group``, as for FasterTransformer static); prompts longer than the
    budget are never set aside (no ``whole_prompts`` semantics).

    Caveat: the core moves a waiting request into its slots only when an FCFS fill could reach it
    (the prompts ahead of it ask for fewer than b_max tokens, fewer than k_max prompts and
    ``max_resident_requests`` requests are there). So a vectorized plug-in must be FCFS-prefix
    monotone: it never serves a request while skipping an older one that the budget could reach.
    A policy that may (shortest prompt first, priorities across arrival order) must stay scalar:
    without ``plan_vectorized`` it runs on the per-replication path (:mod:`fluidllm.sim.scalar`),
    which shows it every waiting request. ``fluidllm.testing.check_matches`` compares the two forms.
    """
    fn = policy.plan_vectorized
    return VectorPolicy(
        name=str(policy.name), work_conserving=bool(getattr(policy, "work_conserving", False) or False),
        rule=lambda B, s, spec: fn(B, s),
        needs_running=bool(getattr(policy, "needs_running", False)),
        needs_group=bool(getattr(policy, "needs_group", False)), whole_prompts=False)


def vector_policy(spec: PolicySpec) -> VectorPolicy:
    """The vectorized rule for a policy spec (a python plug-in's ``plan_vectorized``, see
    :func:`plugin_vector_policy`).

    Raises:
        NotImplementedError: a policy without a vectorized rule yet (priority, wait, nested-wait, a
            python plug-in without ``plan_vectorized``, which :func:`fluidllm.simulate` runs on its
            per-replication path instead).
    """
    if spec.name == "python":
        from .plugin import policy_object

        obj = policy_object(spec)
        if callable(getattr(obj, "plan_vectorized", None)):
            return plugin_vector_policy(obj)
        raise NotImplementedError(f"the python policy {obj.name!r} has no plan_vectorized(B, state); "
                                  "fluidllm.simulate runs it on the per-replication path (fluidllm.sim.scalar)")
    try:
        return VECTOR_POLICIES[spec.name]
    except KeyError:
        raise NotImplementedError(f"policy {spec.name!r} has no vectorized rule yet; the simulator runs "
                                  f"{sorted(VECTOR_POLICIES)}") from None
