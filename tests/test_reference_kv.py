"""Tests of the reference simulator's KV-memory rules (K1–K6) and of the ``vllm-v1`` policy.

Hand-computed batch logs (every batch takes 1 ms, ``Constant(1.0)``), then invariants re-derived
from the batch log alone on random small workloads (hypothesis). Notation in the comments: U = KV
tokens held by the resident requests, kv_free = M − U, "needed" = min(#decoding, b_max, k_max) of
rule K3; a batch is written as its ``tokens``: (id, prefill tokens, decode tokens).
"""
from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluidllm.model import Affine, Constant, Engine, PolicySpec, TwoFeature
from fluidllm.errors import ModelError
from fluidllm.sim import (REFERENCE_POLICIES, Batch, PlanViolation, Requests, RequestView, View, check_plan,
                          plan_batch, simulate_reference)

WHOLE_PROMPT_POLICIES = ("fastertransformer", "fastertransformer-static", "vllm")


def engine(policy: str, b_max: int, M: int | None, **kw) -> Engine:
    options = kw.pop("options", {})
    return Engine("e", b_max, Constant(1.0), kv_capacity_tokens=M, policy=PolicySpec(policy, options), **kw)


def log(run) -> list[tuple]:
    """(tokens, kv_used_before, preempted) per batch."""
    return [(b.tokens, b.kv_used_before, b.preempted) for b in run.batches]


def conserved(run) -> bool:
    return run.tokens_served + run.tokens_left == run.tokens_arrived + run.recomputed_tokens


# --------------------------------------------------------------------------- hand-computed runs

def test_decode_batch_preempts_the_latest_request() -> None:
    """kfcfs, b_max = 8, M = 10; requests 0 and 1 arrive at 0 with v_p = 4, v_d = 3 (7 <= M each)."""
    req = Requests.from_lists([0.0, 0.0], [4, 4], [3, 3])
    run = simulate_reference(engine("kfcfs", 8, 10), req, 100.0)
    assert log(run) == [
        # t=0: U=0, nothing decodes: both prompts, 8 tokens. U -> 8.
        (((0, 4, 0), (1, 4, 0)), 0, ()),
        # t=1: both decode, needed = 2 <= M − U = 2: no preemption; kv_free = 2 fits the two decodes. U -> 10.
        (((0, 0, 1), (1, 0, 1)), 8, ()),
        # t=2: needed = 2 > M − U = 0: preempt the last KV holder, 1 (kv 5: prompt 4 + 1 decoded):
        # prefill_left = 0 + 5. U = 5, needed = 1 <= 5. kfcfs: 0 decodes, 1 recomputes min(5, 5 − 1) = 4.
        (((0, 0, 1), (1, 4, 0)), 5, (1,)),
        # t=3: U = 6 + 4 = 10, needed = 1 (request 0) > 0: preempt 1 again (kv 4 -> prefill_left 1 + 4 = 5).
        # U = 6, kv_free = 4: 0 decodes (and completes), 1 gets min(5, 3) = 3.
        (((0, 0, 1), (1, 3, 0)), 6, (1,)),
        # t=4: only 1 is left (kv 3, prefill 2): it ends its recompute, then decodes its last two tokens.
        (((1, 2, 0),), 3, ()),
        (((1, 0, 1),), 5, ()),
        (((1, 0, 1),), 6, ()),
    ]
    assert run.preemptions == 2 and run.recomputed_tokens == 5 + 4
    assert run.tokens_served == 14 + 9 and conserved(run)
    assert run.first_token_ms[1] == 2.0                  # its first decode token, kept through preemption
    assert list(run.completion_ms) == [4.0, 7.0]
    # K of a decode batch is the kv of the decoders: 4 + 4 at t=1; request 1 at 7 before its last token.
    assert run.batches[1].kv_context_tokens == 8 and run.batches[6].kv_context_tokens == 6
    # Without a KV cap nothing is preempted.
    free = simulate_reference(engine("kfcfs", 8, None), req, 100.0)
    assert free.preemptions == 0 and len(free.batches) == 4 and all(b.kv_used_before == 0 for b in free.batches)


def test_whole_prompt_vllm_waits_for_kv_space() -> None:
    """vllm (v0), b_max = 8, M = 8: request 0 (4 + 4) at 0, request 1 (5 + 1) at 0.5.

    Without a cap vLLM is prefill-first: request 1's prompt would run at t=1. With M = 8 its whole
    prompt (5) does not fit the KV free space until request 0 finishes, so the decodes run meanwhile.
    """
    req = Requests.from_lists([0.0, 0.5], [4, 5], [4, 1])
    run = simulate_reference(engine("vllm", 8, 8), req, 100.0)
    assert log(run) == [
        (((0, 4, 0),), 0, ()),        # U -> 4
        (((0, 0, 1),), 4, ()),        # t=1: kv_free = 4 < 5: no whole prefill fits -> fill decodes. U -> 5
        (((0, 0, 1),), 5, ()),        # kv_free = 3
        (((0, 0, 1),), 6, ()),        # kv_free = 2
        (((0, 0, 1),), 7, ()),        # kv_free = 1 = needed: the last decode; 0 completes, its KV is freed
        (((1, 5, 0),), 0, ()),        # t=5: the prompt fits now
        (((1, 0, 1),), 5, ()),
    ]
    assert run.preemptions == 0 and run.n_completed == 2
    free = simulate_reference(engine("vllm", 8, None), req, 100.0)
    assert free.batches[1].tokens == ((1, 5, 0),)


def test_requests_larger_than_kv_memory_are_set_aside() -> None:
    """kfcfs, b_max = 8, M = 10. Initial 0 = (2, 3, ctx 6): 11 > M; initial 1 = (2, 2, ctx 6): 10 = M,
    schedulable; arrival 2 = (6, 5): 11 > M; arrival 3 = (3, 2) at 0."""
    req = Requests.from_lists([0.0, 0.0], [6, 3], [5, 2])
    run = simulate_reference(engine("kfcfs", 8, 10), req, 100.0, initial=[(2, 3, 6), (2, 2, 6)])
    assert run.unschedulable == (0, 2)
    assert log(run) == [
        # t=0: resident 1, 3; U = 6 (request 1's context), nothing decodes; kv_free = 4: 2 + 2.
        (((1, 2, 0), (3, 2, 0)), 6, ()),
        # t=1: U = 10, request 1 decodes, needed 1 > 0: preempt 3 (kv 2 -> prefill 1 + 2 = 3);
        # U = 8, kv_free = 2: 1 decodes (K = 8), 3 gets 1.
        (((1, 0, 1), (3, 1, 0)), 8, (3,)),
        # t=2: U = 10 again: preempt 3 (kv 1 -> prefill 3). kv_free = 1: 1's last decode.
        (((1, 0, 1),), 9, (3,)),
        (((3, 3, 0),), 0, ()),
        (((3, 0, 1),), 3, ()),
        (((3, 0, 1),), 4, ()),
    ]
    assert run.batches[1].kv_context_tokens == 8 and run.batches[2].kv_context_tokens == 9
    assert run.n_completed == 2 and run.resident == () and run.waiting == ()
    assert run.tokens_left == (2 + 3) + (6 + 5)                           # the set-aside requests stay owed
    assert run.preemptions == 2 and run.recomputed_tokens == 3 and conserved(run)


def test_vllm_v1_serves_running_requests_before_a_preempted_one() -> None:
    """b_max = 4, M = 7. Initial 0 = (0, 1, ctx 6) decoding with 6 KV tokens; initial 1 and 2 = (0, 1)
    decoding with no KV context (running, kv 0). At t=0: U = 6, needed = 3 > 1: preempt the last KV
    holder, 0 (prefill_left = 6, no longer running). Then U = 0 and needed = 2 <= 7.

    K-FCFS walks everyone in FCFS order, so 0's recompute goes first and fills the batch; vLLM v1
    serves the running requests 1 and 2 first and gives 0 what is left.
    """
    initial = [(0, 1, 6), (0, 1), (0, 1)]
    none = Requests.from_lists([], [], [])
    kfcfs = simulate_reference(engine("kfcfs", 4, 7), none, 100.0, initial=initial)
    v1 = simulate_reference(engine("vllm-v1", 4, 7), none, 100.0, initial=initial)
    assert log(kfcfs) == [
        (((0, 4, 0),), 0, (0,)),                  # 0 takes the whole budget
        (((0, 2, 0), (1, 0, 1)), 4, ()),          # U = 4, kv_free = 3: 0 ends its prompt, 1 decodes
        # t=2: 0 (kv 6) and 2 decode: needed 2 > 1: preempt 0 again (2 holds no KV).
        (((0, 4, 0),), 0, (0,)),
        (((0, 2, 0), (2, 0, 1)), 4, ()),
        (((0, 0, 1),), 6, ()),
    ]
    assert log(v1) == [
        (((0, 2, 0), (1, 0, 1), (2, 0, 1)), 0, (0,)),   # running 1 and 2 first, then 0's prompt in 2 tokens
        (((0, 4, 0),), 2, ()),                          # U = 2, kv_free = 5: the rest of 0's prompt
        (((0, 0, 1),), 6, ()),
    ]
    assert (kfcfs.preemptions, kfcfs.recomputed_tokens) == (2, 12)
    assert (v1.preemptions, v1.recomputed_tokens) == (1, 6)
    assert conserved(kfcfs) and conserved(v1)


def test_vllm_v1_chunk_size_and_running_walk() -> None:
    """No KV cap. b_max = 6, chunk_size = 2. Initial 0 = (3, 2) not running (no KV context), initial
    1 = (0, 2) running. vLLM v1: running 1 decodes first, then 0 gets a chunk of 2; kfcfs would
    start with 0's prompt."""
    none = Requests.from_lists([0.5], [5], [1])          # request 2 arrives during batch 0
    run = simulate_reference(engine("vllm-v1", 6, None, options={"chunk_size": 2}), none, 100.0,
                             initial=[(3, 2), (0, 2)])
    assert [b.tokens for b in run.batches] == [
        ((0, 2, 0), (1, 0, 1)),                   # running walk: 1 decodes; new prompts: 0 gets 2 (chunk)
        ((0, 1, 0), (1, 0, 1), (2, 2, 0)),        # running: 0 ends its prompt (1), 1 decodes; new: 2 gets 2
        ((0, 0, 1), (2, 2, 0)),                   # running 0 decodes, running 2 gets a chunk of 2
        ((0, 0, 1), (2, 1, 0)),
        ((2, 0, 1),),
    ]
    kf = simulate_reference(engine("kfcfs", 6, None), none, 100.0, initial=[(3, 2), (0, 2)])
    assert kf.batches[0].tokens == ((0, 3, 0), (1, 0, 1))


def test_kv_deadlock_is_broken_by_preempting_the_last_holder() -> None:
    """Rule K5. sarathi, chunk_size 3, b_max = 8, M = 10; requests 0 and 1 = (8, 2) at 0."""
    req = Requests.from_lists([0.0, 0.0], [8, 8], [2, 2])
    run = simulate_reference(engine("sarathi", 8, 10, options={"chunk_size": 3}), req, 100.0)
    assert log(run) == [
        (((0, 3, 0), (1, 3, 0)), 0, ()),
        (((0, 3, 0), (1, 1, 0)), 6, ()),          # kv_free = 4. U -> 10
        # t=2: nobody decodes (needed = 0) and kv_free = 0: the plan is empty. K5: preempt 1 (kv 4,
        # prefill_left 4 + 4 = 8), replan with kv_free = 4: 0 ends its prompt (2), 1 gets 2.
        (((0, 2, 0), (1, 2, 0)), 6, (1,)),
        # t=3: U = 10, 0 decodes: K3 preempts 1 (kv 2). Sarathi: decode 0, then 1 gets kv_free − 1 = 1.
        (((0, 0, 1), (1, 1, 0)), 8, (1,)),
        (((0, 0, 1),), 9, (1,)),                  # preempt 1 (kv 1); 0's last decode
        (((1, 3, 0),), 0, ()),
        (((1, 3, 0),), 3, ()),
        (((1, 2, 0),), 6, ()),
        (((1, 0, 1),), 8, ()),
        (((1, 0, 1),), 9, ()),
    ]
    assert run.preemptions == 3 and run.recomputed_tokens == 4 + 2 + 1 and conserved(run)


def test_whole_prompt_deadlock_and_a_recompute_longer_than_the_budget() -> None:
    """Rule K5 for a whole-prompt policy. fastertransformer, b_max = 4, M = 9; initial 0 and 1 =
    (3, 2, ctx 4) (3 + 2 + 4 = 9 <= M). At t=0: U = 8, nothing decodes, kv_free = 1 < 3: no whole
    prompt fits, the plan is empty. K5 preempts 1 (kv 4 -> prefill_left 3 + 4 = 7); kv_free = 5.
    Request 1's recompute (7) is longer than the budget: it runs in budget-sized pieces (4 + 3)."""
    none = Requests.from_lists([], [], [])
    run = simulate_reference(engine("fastertransformer", 4, 9), none, 100.0, initial=[(3, 2, 4), (3, 2, 4)])
    assert [(b.tokens, b.kv_used_before, b.preempted, b.kv_context_tokens) for b in run.batches] == [
        (((0, 3, 0),), 4, (1,), 0),   # 0's prompt; 1 would need min(7, 4) = 4 > 1 left: whole prefills stop
        (((0, 0, 1),), 7, (), 7),     # decode-first; K = 0's kv = 4 + 3
        (((0, 0, 1),), 8, (), 8),     # M − U = 1 = needed; 0 completes
        (((1, 4, 0),), 0, (), 0),     # the recompute, a budget-sized piece
        (((1, 3, 0),), 4, (), 0),
        (((1, 0, 1),), 7, (), 7),
        (((1, 0, 1),), 8, (), 8),
    ]
    assert run.preemptions == 1 and run.recomputed_tokens == 4 and run.n_completed == 2 and conserved(run)


def test_prefill_first_policies_can_livelock_under_these_rules() -> None:
    """Documents a property of rules K3–K4 (not a simulator bug): K3 frees room for the decoders,
    but a prefill-first policy spends it on the preempted request's recompute, which fills the
    memory again, so the same request is preempted at every boundary and the decoders starve.
    Requests 0 and 1 = (2, 5) at 0, b_max = 8, M = 10."""
    req = Requests.from_lists([0.0, 0.0], [2, 2], [5, 5])
    for name in ("vllm", "fastertransformer-static"):
        run = simulate_reference(engine(name, 8, 10), req, 12.0)
        assert [b.tokens for b in run.batches[:5]] == [((0, 2, 0), (1, 2, 0))] + [((0, 0, 1), (1, 0, 1))] * 3 \
            + [((1, 5, 0),)]
        assert all(b.tokens == ((1, 5, 0),) and b.preempted == (1,) for b in run.batches[4:])
        assert run.n_completed == 0 and run.preemptions == len(run.batches) - 4
    for name in ("fastertransformer", "kfcfs", "sarathi", "vllm-v1"):      # decode-first: both finish
        assert simulate_reference(engine(name, 8, 10), req, 12.0).n_completed == 2


def test_view_running_and_kv_free_in_plans() -> None:
    assert RequestView(0, 1, 1).running is False
    assert View(4, ()).kv_free_tokens is None
    b = Batch(0, 0.0, 1.0, ((0, 1, 0),), ((0, 1, 0),), 1, 0, 0)
    assert b.kv_used_before == 0 and b.preempted == ()
    view = View(8, (RequestView(0, 0, 3, running=True), RequestView(1, 6, 1)), kv_free_tokens=3)
    for name in ("sarathi", "kfcfs", "vllm-v1", "orca"):
        plan = plan_batch(PolicySpec(name), view)
        assert sum(p + d for p, d in plan.values()) == 3
        check_plan(view, plan)
    assert plan_batch(PolicySpec("vllm"), view) == {0: (0, 1)}        # the whole prompt (6) does not fit
    with pytest.raises(PlanViolation, match="kv_free_tokens"):
        check_plan(view, {0: (0, 1), 1: (3, 0)})


def test_unimplemented_policies_still_say_so() -> None:
    req = Requests.from_lists([0.0], [1], [1])
    for name in ("priority", "wait", "nested-wait"):
        with pytest.raises(NotImplementedError, match=name):
            simulate_reference(engine(name, 4, None), req, 10.0)
    with pytest.raises(ModelError, match="preemption"):    # refused when the model is built (issue 16)
        engine("vllm-v1", 4, 10, options={"preemption": "swap"})


# ----------------------------------------------------------- invariants on random small workloads

def replay_kv(run, requests: Requests, initial, eng: Engine) -> None:
    """Re-derive the KV rules from the batch log alone: preemption order, KV bound, accounting."""
    M, b_max, k_max, cap = eng.kv_capacity_tokens, eng.token_budget, eng.max_batch_requests, eng.max_resident_requests
    pol = eng.policy
    n0 = len(initial)
    arrival = [0.0] * n0 + [float(a) for a in requests.arrival_ms]
    total = [(p, d) for p, d, *_ in initial] + list(zip(requests.prefill.tolist(), requests.decode.tolist()))
    context0 = [e[2] if len(e) == 3 else 0 for e in initial] + [0] * len(requests)
    n = len(total)
    whole_only = pol.name in WHOLE_PROMPT_POLICIES and not pol.flag("split_long_prompts")
    never = {i for i in range(n) if (whole_only and total[i][0] > b_max)
             or (M is not None and sum(total[i]) + context0[i] > M)}
    left = [list(t) for t in total]
    kv = list(context0)
    served = [0] * n
    recompute = [0] * n
    completed: set[int] = set()

    def eligible(t: float) -> list[int]:
        return [i for i in range(n) if arrival[i] <= t and i not in completed and i not in never]

    for b in run.batches:
        elig = eligible(b.start_ms)
        resident = elig if cap is None else elig[:cap]
        assert [r[0] for r in b.resident_before] == resident
        for i in b.preempted:                                   # K3 / K5: the last KV holder, each time
            assert M is not None and kv[i] > 0
            assert i == max(j for j in resident if kv[j] > 0)
            left[i][0] += kv[i]
            recompute[i] += kv[i]
            kv[i] = 0
        assert all(tuple(left[i]) == (p, d) for i, p, d in b.resident_before)
        U = sum(kv[i] for i in resident)
        if M is None:
            assert b.kv_used_before == 0 and b.preempted == ()
        else:
            assert b.kv_used_before == U
            assert U + b.n_tokens <= M                          # KV never exceeds M
            n_dec = sum(1 for _, p, d in b.resident_before if p == 0 and d > 0)
            needed = min(n_dec, b_max, k_max if k_max is not None else n_dec)
            assert M - U >= needed or U == 0                    # K3 held when the batch was planned
        assert sum(p + d for _, p, d in b.tokens) <= b_max
        assert b.kv_context_tokens == sum(kv[i] for i, _, d in b.tokens if d)
        for i, p, d in b.tokens:
            assert i in resident and i not in never
            left[i][0] -= p
            left[i][1] -= d
            kv[i] += p + d
            served[i] += p + d
            if left[i] == [0, 0]:
                completed.add(i)
                kv[i] = 0

    arrived = [i for i in range(n) if arrival[i] <= run.end_ms]
    assert set(run.unschedulable) == never & set(arrived)
    assert run.preemptions == sum(len(b.preempted) for b in run.batches)
    assert run.recomputed_tokens == sum(recompute)
    assert all(tuple(left[i]) == (p, d) for i, p, d in run.resident + run.waiting)
    # Token conservation, recompute included.
    assert run.tokens_arrived == sum(sum(total[i]) for i in arrived)
    assert run.tokens_served + run.tokens_left == run.tokens_arrived + run.recomputed_tokens
    # Every completed request got exactly v_p + v_d tokens plus its recompute.
    for i in range(n):
        if i in completed:
            assert not math.isnan(run.completion_ms[i])
            assert served[i] == sum(total[i]) + recompute[i]
        else:
            assert math.isnan(run.completion_ms[i])


POLICY_SPECS = st.one_of(
    st.builds(lambda name, split: PolicySpec(name, {"split_long_prompts": split}),
              st.sampled_from(WHOLE_PROMPT_POLICIES), st.booleans()),
    st.builds(lambda name, chunk: PolicySpec(name, {} if chunk is None else {"chunk_size": chunk}),
              st.sampled_from(["orca", "sarathi", "vllm-v1"]), st.none() | st.integers(1, 4)),
    st.just(PolicySpec("kfcfs")),
)
BATCH_TIMES = st.sampled_from([Constant(1.0), Affine(0.5, 0.1),
                               TwoFeature(1.0, 0.1, 4, decode_ms=0.05, kv_ms=0.01, prefill_sq_ms=0.001)])


@st.composite
def scenarios(draw, policies=POLICY_SPECS, with_initial: bool = True, pressure: bool = False):
    """An engine, requests, initial requests and a horizon. ``pressure``: M close to the requests'
    sizes and most requests present together, so that preemption is the rule rather than the exception."""
    b_max = draw(st.integers(1, 10))
    M = draw(st.integers(6, 16)) if pressure else draw(st.none() | st.integers(1, 4) | st.integers(8, 20))
    eng = Engine("e", b_max, draw(BATCH_TIMES), policy=draw(policies),
                 max_batch_requests=draw(st.none() | st.integers(1, 4)),
                 max_resident_requests=draw(st.none() | st.integers(1, 4)),
                 kv_capacity_tokens=M)
    n = draw(st.integers(2, 8) if pressure else st.integers(0, 8))
    arrivals = sorted(draw(st.lists(st.integers(0, 8 if pressure else 40), min_size=n, max_size=n)))
    req = Requests.from_lists([a / 4 for a in arrivals],
                              draw(st.lists(st.integers(1, 8 if pressure else 12), min_size=n, max_size=n)),
                              draw(st.lists(st.integers(1 if pressure else 0, 5), min_size=n, max_size=n)))
    initial = []
    if with_initial:
        initial = draw(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 4), st.integers(0, 6))
                                .filter(lambda e: e[0] + e[1] > 0), max_size=3))
        initial = [e if e[2] else e[:2] for e in initial]
    horizon = draw(st.sampled_from([60.0] if pressure else [0.0, 2.5, 7.0, 60.0]))
    return eng, req, initial, horizon


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_kv_invariants_every_batch(case) -> None:
    eng, req, initial, horizon = case
    run = simulate_reference(eng, req, horizon, initial=initial)
    replay_kv(run, req, initial, eng)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(pressure=True))
def test_kv_invariants_under_memory_pressure(case) -> None:
    eng, req, initial, horizon = case
    run = simulate_reference(eng, req, horizon, initial=initial)
    replay_kv(run, req, initial, eng)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(scenarios(policies=st.just(PolicySpec("kfcfs")), with_initial=False),
                 scenarios(policies=st.just(PolicySpec("kfcfs")), with_initial=False, pressure=True)))
def test_vllm_v1_without_chunks_is_kfcfs_when_running_requests_are_an_fcfs_prefix(case) -> None:
    """Without initial requests the running requests are always a prefix of the resident ones in
    FCFS order (kfcfs serves a prefix; preemption takes the last KV holder, and every running
    request holds KV), so vLLM v1 without chunk_size plans exactly what K-FCFS plans."""
    eng, req, _, horizon = case
    v1 = Engine("e", eng.token_budget, eng.batch_time, eng.max_batch_requests, eng.max_resident_requests,
                eng.kv_capacity_tokens, PolicySpec("vllm-v1"))
    a = simulate_reference(eng, req, horizon)
    b = simulate_reference(v1, req, horizon)
    assert a.batches == b.batches


def test_reference_policies_include_vllm_v1() -> None:
    assert "vllm-v1" in REFERENCE_POLICIES
