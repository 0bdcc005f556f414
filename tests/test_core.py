"""Tests of the vectorized simulator core (:func:`fluidllm.sim.core.run_core`).

The core must match the reference simulator (:mod:`fluidllm.sim.reference`, the plain oracle)
batch for batch on the same draws: hypothesis draws small workloads (ties at identical instants,
arrivals exactly on batch boundaries), engines (caps, KV memory, two batch-time families) and every
vectorized policy with its flags, replays them through :class:`FixedSource` (R = 3) and through the
reference one replication at a time, and compares the two logs and every end-of-run number. Then:
the model's rules re-checked on every batch of both logs; work-conservation exactly where a policy
declares it (and the paper's violations of FT and vLLM, constructed); the PyTorch backend against
NumPy; the streaming source; the memory cap.

Hypothesis runs derandomized (a fixed example sequence, no database): the file is deterministic.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluidllm.model import (POLICIES, Constant, Deterministic, Engine, Geometric, Independent, PoissonArrival,
                            PolicySpec, Staircase, TwoFeature, Workload)
from fluidllm.policies.rules import VECTOR_POLICIES
from fluidllm.sim import REFERENCE_POLICIES, Requests, simulate_reference
from fluidllm.sim.core import run_core
from fluidllm.sim.source import FixedSource, StreamSource

POLICY_NAMES = sorted(VECTOR_POLICIES)
CHUNKED = ("orca", "sarathi", "vllm-v1")
WHOLE = ("fastertransformer", "fastertransformer-static", "vllm")
R = 3


def _settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------------------------- strategies

# Batch-time parameters: mostly whole milliseconds, so that batch boundaries fall exactly on the
# arrival grid below (an arrival at a boundary is eligible at it), plus the paper's staircase.
_MS = st.sampled_from([1.0, 2.0, 5.0, 10.0, 25.0])


@st.composite
def batch_times(draw):
    if draw(st.booleans()):
        if draw(st.integers(0, 3)) == 0:
            return Staircase(11.28, 35.47, draw(st.integers(1, 32)))
        return Staircase(draw(_MS), draw(st.sampled_from([0.0, 1.0, 5.0, 10.0])), draw(st.integers(1, 32)))
    return TwoFeature(draw(_MS), draw(st.sampled_from([0.0, 0.3, 1.0])), draw(st.integers(0, 32)),
                      decode_ms=draw(st.sampled_from([0.0, 0.05, 1.0])),
                      kv_ms=draw(st.sampled_from([0.0, 0.001, 0.25])),
                      prefill_sq_ms=draw(st.sampled_from([0.0, 1e-4, 0.01])))


@st.composite
def engines(draw, policy: str, caps: bool = True, kv_stress: bool = False):
    opts: dict = {}
    if policy in CHUNKED and draw(st.booleans()):
        opts["chunk_size"] = draw(st.integers(1, 40))
    if policy in WHOLE and draw(st.booleans()):
        opts["split_long_prompts"] = draw(st.booleans())
    b_max = draw(st.integers(4, 80))
    none_or = lambda lo, hi: st.one_of(st.none(), st.integers(lo, hi))  # noqa: E731
    k_max = draw(none_or(1, 10)) if caps else None
    rescap = draw(none_or(1, 12)) if caps else None
    M = draw(none_or(20, 400)) if caps else None
    if kv_stress:      # a small KV memory and few request slots: preemptions, K5 deadlocks, k_max < decoders
        k_max, M = draw(none_or(1, 6)), draw(st.integers(15, 150))
    return Engine("e", b_max, draw(batch_times()), max_batch_requests=k_max, max_resident_requests=rescap,
                  kv_capacity_tokens=M, policy=PolicySpec(policy, opts))


@st.composite
def workload(draw, horizon_ms: float, max_prefill: int = 100):
    """One replication: 0-50 requests, arrival times < horizon, many ties (a coarse grid)."""
    grid = max(int(horizon_ms // 50), 1)
    t = st.one_of(st.floats(0.0, horizon_ms, exclude_max=True, allow_nan=False),
                  st.integers(0, grid - 1).map(lambda k: 50.0 * k),
                  st.just(0.0))
    n = draw(st.integers(0, 50))
    rows = draw(st.lists(st.tuples(t, st.integers(1, max_prefill), st.integers(0, 15)), min_size=n, max_size=n))
    rows.sort(key=lambda x: x[0])                       # stable: ties keep draw order
    return Requests.from_lists([x[0] for x in rows], [x[1] for x in rows], [x[2] for x in rows])


@st.composite
def initial_requests(draw, rescap: int | None):
    n = draw(st.integers(0, 3 if rescap is None else min(3, rescap)))
    out = []
    for _ in range(n):
        p = draw(st.integers(0, 3))
        d = draw(st.integers(1 if p == 0 else 0, 5))
        if draw(st.booleans()):
            out.append((p, d, draw(st.integers(0, 6))))   # with a KV context held before time 0
        else:
            out.append((p, d))
    return out


@st.composite
def cases(draw, policy: str, caps: bool = True, kv_stress: bool = False):
    eng = draw(engines(policy, caps, kv_stress))
    H = float(draw(st.integers(100, 3000)))
    reqs = [draw(workload(H, 40 if kv_stress else 100)) for _ in range(R)]
    init = draw(initial_requests(eng.max_resident_requests))
    return eng, reqs, H, init


def run_both(eng, reqs, H, init):
    out = run_core(eng, FixedSource(reqs, H), batch_log=True, initial=init)
    refs = [simulate_reference(eng, reqs[r], H, initial=init) for r in range(R)]
    return out, refs


# ------------------------------------------------------------------------------------- helpers


def rel_close(a: float, b: float, rel: float = 1e-9) -> bool:
    """Equal to ``rel`` relative (``rel`` absolute below 1)."""
    return abs(a - b) <= rel * max(abs(a), abs(b), 1.0)


def ref_latencies(ref) -> dict[str, tuple[int, float]]:
    """(count, sum) of e2e, TTFT and TBT as the core defines them, from the reference's per-request times."""
    done = ~np.isnan(ref.completion_ms)
    first = ~np.isnan(ref.first_token_ms)
    tbt = done & (ref.decode >= 2)
    return {
        "e2e": (int(done.sum()), float(np.sum(ref.completion_ms[done] - ref.arrival_ms[done]))),
        "ttft": (int(first.sum()), float(np.sum(ref.first_token_ms[first] - ref.arrival_ms[first]))),
        "tbt": (int(tbt.sum()), float(np.sum((ref.completion_ms[tbt] - ref.first_token_ms[tbt])
                                             / (ref.decode[tbt] - 1)))),
    }


def arrived_tokens(reqs: Requests, H: float, init) -> int:
    m = reqs.arrival_ms < H
    return int(reqs.prefill[m].sum() + reqs.decode[m].sum()) + sum(e[0] + e[1] for e in init)


def assert_same(eng: Engine, out, refs, reqs, H, init) -> None:
    two_feature = not eng.batch_time.tokens_only
    for r, ref in enumerate(refs):
        log = out.batch_log[r]
        where = f"replication {r}"
        core_rows = [(b["start_ms"], b["end_ms"], b["tokens"]) for b in log]
        ref_rows = [(b.start_ms, b.end_ms, b.tokens) for b in ref.batches]
        if core_rows != ref_rows:
            k = next((i for i, (x, y) in enumerate(zip(core_rows, ref_rows)) if x != y),
                     min(len(core_rows), len(ref_rows)))
            pytest.fail(f"{where}: first different batch {k} of {len(core_rows)} (core) / {len(ref_rows)} (reference): "
                        f"core {core_rows[k] if k < len(core_rows) else None}, "
                        f"reference {ref_rows[k] if k < len(ref_rows) else None}; engine {eng}, initial {init}")
        assert [(b["prefill_tokens"], b["decode_tokens"]) for b in log] == \
            [(b.prefill_tokens, b.decode_tokens) for b in ref.batches], where
        if two_feature:
            assert [b["kv_context_tokens"] for b in log] == [b.kv_context_tokens for b in ref.batches], where
        else:
            assert all(b["kv_context_tokens"] is None for b in log)
        if eng.kv_capacity_tokens is not None:
            assert [b["kv_used_before"] for b in log] == [b.kv_used_before for b in ref.batches], where
        else:
            assert all(b["kv_used_before"] is None for b in log)
        # The core's resident set is an FCFS prefix of the reference's (it moves into its slots only
        # the waiting requests the policy could serve), holding every request given tokens.
        for b, rb in zip(log, ref.batches):
            assert b["resident_before"] == rb.resident_before[:len(b["resident_before"])], where
        n_sys = len(ref.resident) + len(ref.waiting) + len(ref.unschedulable)
        assert out.end_ms[r] == ref.end_ms, where
        assert out.batches[r] == len(ref.batches)
        assert out.arrived[r] == ref.n_arrived
        assert out.completed[r] == ref.n_completed
        assert out.unschedulable[r] == len(ref.unschedulable)
        assert out.preemptions[r] == ref.preemptions
        assert out.recomputed_tokens[r] == ref.recomputed_tokens
        assert out.backlog_tokens_end[r] == ref.tokens_left
        assert out.in_system_end[r] == n_sys
        assert out.prefill_tokens[r] + out.decode_tokens[r] == ref.tokens_served
        assert not out.diverged[r]
        if out.end_ms[r] > 0:
            assert rel_close(out.in_system_time_ms[r] / out.end_ms[r], ref.mean_in_system()), where
        for kind, (n, s) in ref_latencies(ref).items():
            assert out.latency_count[kind][r] == n, (where, kind)
            assert rel_close(out.latency_sum_ms[kind][r], s), (where, kind)


# ------------------------------------------------------------------ 1. core == reference, batch for batch


def test_every_vector_policy_has_a_reference_rule() -> None:
    assert set(VECTOR_POLICIES) <= set(REFERENCE_POLICIES)
    for name, vp in VECTOR_POLICIES.items():
        assert vp.work_conserving == POLICIES[name][0] == PolicySpec(name).work_conserving


@pytest.mark.parametrize("policy", POLICY_NAMES)
@_settings(50)
@given(data=st.data())
def test_core_matches_reference(policy: str, data) -> None:
    eng, reqs, H, init = data.draw(cases(policy))
    out, refs = run_both(eng, reqs, H, init)
    assert_same(eng, out, refs, reqs, H, init)


@pytest.mark.parametrize("policy", POLICY_NAMES)
@_settings(20)
@given(data=st.data())
def test_core_matches_reference_under_kv_pressure(policy: str, data) -> None:
    """Small KV memories (15-150 tokens), prompts up to 40 tokens, often a small k_max."""
    eng, reqs, H, init = data.draw(cases(policy, kv_stress=True))
    out, refs = run_both(eng, reqs, H, init)
    assert_same(eng, out, refs, reqs, H, init)


def test_core_matches_reference_on_boundary_ties() -> None:
    """Hand-picked: arrivals exactly at batch boundaries (eligible at them), at the same instant as
    each other, at 0 and just before the horizon; the last batch runs past the horizon."""
    reqs = [Requests.from_lists([0.0, 0.0, 10.0, 10.0, 20.0, 95.0, 99.999], [3, 5, 1, 7, 2, 4, 1],
                                [2, 0, 3, 1, 0, 2, 1]),
            Requests.from_lists([], [], []),
            Requests.from_lists([30.0] * 6, [4] * 6, [1] * 6)]
    for policy in POLICY_NAMES:
        eng = Engine("e", 8, Constant(10.0), max_batch_requests=3, policy=PolicySpec(policy))
        out, refs = run_both(eng, reqs, 100.0, [(0, 2)])
        assert_same(eng, out, refs, reqs, 100.0, [(0, 2)])
        assert out.end_ms[0] >= 100.0 and out.end_ms[1] == 100.0     # idle at the horizon: ends there


# --------------------------------------------------------------------------- 2. invariants of every batch


def check_batches(eng: Engine, batches: list[dict], H: float, arrivals: set[float]) -> None:
    """The model's rules on one replication's batch log (core dicts or reference Batches as dicts)."""
    b_max, k_max, M = eng.token_budget, eng.max_batch_requests, eng.kv_capacity_tokens
    prev_end = 0.0
    for i, b in enumerate(batches):
        toks = b["tokens"]
        ids = [t[0] for t in toks]
        assert len(ids) == len(set(ids)), "a request twice in one batch"
        n = sum(p + d for _, p, d in toks)
        assert 0 < n <= b_max
        assert n == b["prefill_tokens"] + b["decode_tokens"]
        assert b["prefill_tokens"] == sum(p for _, p, _ in toks)
        if k_max is not None:
            assert len(toks) <= k_max
        if M is not None:
            assert b["kv_used_before"] + n <= M
        before = {rid: (p, d) for rid, p, d in b["resident_before"]}
        for rid, p, d in toks:
            assert rid in before, "a request given tokens was not resident"
            p_left, d_left = before[rid]
            assert p + d > 0 and 0 <= p <= p_left and d in (0, 1) and d <= d_left
            assert not (p > 0 and d > 0), "a decode token in the batch where the prefill runs"
            if d:
                assert p_left == 0, "a decode token before the prefill is done"
        # Time: batches back to back; a gap only while idle, ending at an arrival instant.
        assert b["start_ms"] < H and b["end_ms"] > b["start_ms"]
        assert b["start_ms"] >= prev_end
        if b["start_ms"] > prev_end or (i == 0 and b["start_ms"] > 0):
            assert b["start_ms"] in arrivals, "an idle engine starts at the instant work arrives"
        prev_end = b["end_ms"]


def ref_dicts(ref) -> list[dict]:
    return [dict(start_ms=b.start_ms, end_ms=b.end_ms, tokens=b.tokens, resident_before=b.resident_before,
                 prefill_tokens=b.prefill_tokens, decode_tokens=b.decode_tokens, kv_used_before=b.kv_used_before)
            for b in ref.batches]


@pytest.mark.parametrize("policy", POLICY_NAMES)
@_settings(15)
@given(data=st.data())
def test_batch_invariants(policy: str, data) -> None:
    eng, reqs, H, init = data.draw(cases(policy))
    out, refs = run_both(eng, reqs, H, init)
    for r, ref in enumerate(refs):
        arrivals = set(map(float, reqs[r].arrival_ms))
        for log in (out.batch_log[r], ref_dicts(ref)):
            check_batches(eng, log, H, arrivals)
        # No request lost or duplicated.
        assert out.arrived[r] == out.completed[r] + out.in_system_end[r]
        done = set(np.flatnonzero(~np.isnan(ref.completion_ms)).tolist())
        parts = [done, {i for i, _, _ in ref.resident}, {i for i, _, _ in ref.waiting}, set(ref.unschedulable)]
        assert sum(map(len, parts)) == len(set().union(*parts)) == ref.n_arrived
        assert set().union(*parts) == set(range(ref.n_arrived))
        # Per request (without preemptions): tokens served + tokens left = its tokens.
        if ref.preemptions == 0:
            served = Counter()
            for b in ref.batches:
                for i, p, d in b.tokens:
                    served[i] += p + d
            left = {i: p + d for i, p, d in ref.resident + ref.waiting}
            left.update({i: int(ref.prefill[i] + ref.decode[i]) for i in ref.unschedulable})
            for i in range(ref.n_arrived):
                assert served[i] + left.get(i, 0) == ref.prefill[i] + ref.decode[i], i
        # Token conservation: served + left = arrived + recomputed.
        tok_served = int(out.prefill_tokens[r] + out.decode_tokens[r])
        assert tok_served == sum(b["prefill_tokens"] + b["decode_tokens"] for b in out.batch_log[r])
        assert tok_served + out.backlog_tokens_end[r] == arrived_tokens(reqs[r], H, init) + out.recomputed_tokens[r]
        assert ref.tokens_served + ref.tokens_left == ref.tokens_arrived + ref.recomputed_tokens


def demand(resident_before) -> int:
    """Σ_i (p_i + 1{p_i = 0}) (Li, Dai, Peng, eqs. 8–9)."""
    return sum(p + (1 if p == 0 else 0) for _, p, _ in resident_before)


WORK_CONSERVING = [p for p in POLICY_NAMES if VECTOR_POLICIES[p].work_conserving]


@pytest.mark.parametrize("policy", WORK_CONSERVING)
@_settings(25)
@given(data=st.data())
def test_work_conservation_is_exact(policy: str, data) -> None:
    """No k_max, no resident cap, no KV cap, no chunk cap (a chunk_size below the budget makes any
    policy non-work-conserving in the paper's token sense): every batch holds min(b_max, demand).

    The core's resident_before is an FCFS prefix of the reference's; without caps the core moves
    waiting requests into its slots until their prompts cover b_max, so its own demand is either
    >= b_max or the whole demand, and the same check applies to its log.
    """
    eng, reqs, H, init = data.draw(cases(policy, caps=False))
    eng = Engine("e", eng.token_budget, eng.batch_time, policy=PolicySpec(policy))
    out, refs = run_both(eng, reqs, H, init)
    for r, ref in enumerate(refs):
        for rb in ref.batches:
            assert rb.n_tokens == min(eng.token_budget, rb.demand_tokens)
        for b in out.batch_log[r]:
            assert b["prefill_tokens"] + b["decode_tokens"] == min(eng.token_budget, demand(b["resident_before"]))


def _one(policy: str, b_max: int, reqs: Requests, init):
    eng = Engine("e", b_max, Constant(1.0), policy=PolicySpec(policy))
    out = run_core(eng, FixedSource([reqs], 100.0), batch_log=True, initial=init)
    ref = simulate_reference(eng, reqs, 100.0, initial=init)
    return out.batch_log[0], ref.batches


def test_fastertransformer_violates_work_conservation() -> None:
    """b_max = 4: request 0 decoding (3 decode tokens left), request 1 (3 + 1) arrives at 0.
    Demand = 1 + 3 = 4 = b_max, but FT's decode-only batch holds 1 token; Sarathi and Orca fill 4."""
    assert not VECTOR_POLICIES["fastertransformer"].work_conserving
    reqs = Requests.from_lists([0.0], [3], [1])
    core, ref = _one("fastertransformer", 4, reqs, [(0, 3)])
    assert ref[0].demand_tokens == demand(core[0]["resident_before"]) == 4
    assert ref[0].tokens == core[0]["tokens"] == ((0, 0, 1),)
    assert ref[0].n_tokens == 1 < 4
    for wc in ("sarathi", "orca"):
        core, ref = _one(wc, 4, reqs, [(0, 3)])
        assert ref[0].tokens == core[0]["tokens"] == ((0, 0, 1), (1, 3, 0))


def test_vllm_violates_work_conservation() -> None:
    """b_max = 4. (a) request 0 decoding, request 1 (3 + 1) waiting: vLLM's prefill-only batch holds 3
    tokens with demand 4. (b) prompts of 3 and 2 tokens: whole prompts only, 3 < 4 with demand 5."""
    assert not VECTOR_POLICIES["vllm"].work_conserving
    core, ref = _one("vllm", 4, Requests.from_lists([0.0], [3], [1]), [(0, 3)])
    assert ref[0].demand_tokens == 4 and ref[0].tokens == core[0]["tokens"] == ((1, 3, 0),)
    reqs = Requests.from_lists([0.0, 0.0], [3, 2], [1, 1])
    core, ref = _one("vllm", 4, reqs, [])
    assert ref[0].demand_tokens == demand(core[0]["resident_before"]) == 5
    assert ref[0].tokens == core[0]["tokens"] == ((0, 3, 0),)
    core, ref = _one("kfcfs", 4, reqs, [])
    assert ref[0].tokens == core[0]["tokens"] == ((0, 3, 0), (1, 1, 0))


# ------------------------------------------------------------------------------------ 3. backends


def _torch_cpu():
    try:
        # exc_type=ImportError: also skip a CUDA build of torch whose libraries are missing here.
        pytest.importorskip("torch", exc_type=ImportError)
    except OSError as e:
        pytest.skip(f"torch is not importable here: {e}")
    from fluidllm.sim.backend import _TorchBackend

    return _TorchBackend(device="cpu")


def assert_outputs_equal(a, b) -> None:
    skip = {"backend", "wall_s", "peak_state_bytes", "batch_log", "in_system_time_ms",
            "latency_sum_ms", "latency_count", "latency_hist"}
    for name in a.__dataclass_fields__:
        if name in skip:
            continue
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert x.shape == y.shape and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
        else:
            assert x == y, name
    # ∫ N dt sums arrival instants with the backend's own reduction order.
    np.testing.assert_allclose(a.in_system_time_ms, b.in_system_time_ms, rtol=1e-12)
    for k in a.latency_sum_ms:
        assert np.array_equal(a.latency_sum_ms[k], b.latency_sum_ms[k]), k
        assert np.array_equal(a.latency_count[k], b.latency_count[k]), k
        assert np.array_equal(a.latency_hist[k], b.latency_hist[k]), k
    assert a.batch_log == b.batch_log


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_torch_backend_equals_numpy(policy: str) -> None:
    backend = _torch_cpu()
    rng = np.random.default_rng(sum(map(ord, policy)))
    opts = {"chunk_size": 7} if policy in CHUNKED else {"split_long_prompts": True} if policy in WHOLE else {}
    for M, bt in ((None, Staircase(11.28, 35.47, 16)), (150, TwoFeature(5.0, 0.3, 8, 0.05, 0.001, 1e-4))):
        eng = Engine("e", 48, bt, max_batch_requests=12, max_resident_requests=20, kv_capacity_tokens=M,
                     policy=PolicySpec(policy, opts))
        H = 3000.0
        reqs = []
        for _ in range(4):
            n = int(rng.integers(0, 80))
            reqs.append(Requests.from_lists(np.sort(rng.uniform(0, H, n)), rng.integers(1, 100, n),
                                            rng.integers(0, 15, n)))
        a = run_core(eng, FixedSource(reqs, H), batch_log=True, initial=[(0, 3), (2, 1)])
        b = run_core(eng, FixedSource(reqs, H), batch_log=True, initial=[(0, 3), (2, 1)], backend=backend)
        assert b.backend == "torch" and sum(map(len, b.batch_log)) > 0
        assert_outputs_equal(a, b)
    # A streamed, longer run (latency histograms, the time grid).
    w = Workload("w", PoissonArrival(60.0), Independent(Geometric(20.0), Geometric(8.0, 0)))
    eng = Engine("e", 64, Staircase(11.28, 35.47, 16), policy=PolicySpec(policy, opts))
    a = run_core(eng, StreamSource([w], 6, 20_000.0, seed=4))
    b = run_core(eng, StreamSource([w], 6, 20_000.0, seed=4), backend=backend)
    assert_outputs_equal(a, b)


# ---------------------------------------------------------------------------------- 4. StreamSource


def _drain(src: StreamSource) -> list:
    blocks = []
    while not src.exhausted:
        blocks.append(src.next_block())
    return blocks


CHAT = Workload("chat", PoissonArrival(40.0), Independent(Geometric(30.0), Geometric(10.0, 0)))
CODE = Workload("code", PoissonArrival(15.0), Independent(Deterministic(200), Deterministic(3)))


def test_stream_source_is_deterministic_and_inside_the_horizon() -> None:
    H = 5_000.0
    a, b = _drain(StreamSource([CHAT, CODE], 5, H, seed=11)), _drain(StreamSource([CHAT, CODE], 5, H, seed=11))
    assert len(a) == len(b) and len(a) > 1
    for x, y in zip(a, b):
        for f in ("times_ms", "prefill", "decode", "klass", "counts"):
            assert np.array_equal(getattr(x, f), getattr(y, f)), f
    c = _drain(StreamSource([CHAT, CODE], 5, H, seed=12))
    assert not np.array_equal(a[0].times_ms, c[0].times_ms)
    last = np.full(5, -np.inf)
    for blk in a:
        for r in range(5):
            t = blk.times_ms[r, :blk.counts[r]]
            assert np.all(np.isfinite(t)) and np.all(t >= 0) and np.all(t < H)
            assert np.all(np.diff(t) >= 0) and (t.size == 0 or t[0] >= last[r])
            assert np.all(np.isinf(blk.times_ms[r, blk.counts[r]:]))
            if t.size:
                last[r] = t[-1]
            k = blk.klass[r, :blk.counts[r]]
            assert np.all(blk.prefill[r, :blk.counts[r]][k == 1] == 200)
    # The same seed gives the same run.
    eng = Engine("e", 256, Staircase(11.28, 35.47, 128), policy=PolicySpec("sarathi"))
    o1 = run_core(eng, StreamSource([CHAT, CODE], 5, H, seed=11))
    o2 = run_core(eng, StreamSource([CHAT, CODE], 5, H, seed=11))
    assert_outputs_equal(o1, o2)
    assert np.array_equal(o1.in_system_time_ms, o2.in_system_time_ms)
    assert np.array_equal(o1.arrived, [sum(int(blk.counts[r]) for blk in a) for r in range(5)])


def test_stream_source_scale_multiplies_the_arrival_rate() -> None:
    """Replication r runs at load scale[r]: its Poisson count over [0, H) has mean λ·scale[r]·H.
    Summed over the 8 replications of each scale, checked with a 5-sigma Poisson bound."""
    lam_per_ms, H = 0.05, 4_000.0
    w = Workload("w", PoissonArrival(1000.0 * lam_per_ms), Independent(Deterministic(1), Deterministic(0)))
    scales = np.repeat([0.25, 1.0, 3.0], 8)
    counts = sum(blk.counts for blk in _drain(StreamSource([w], scales.size, H, seed=5, scale=scales)))
    for s in (0.25, 1.0, 3.0):
        n = counts[scales == s].sum()
        mean = 8 * lam_per_ms * s * H
        assert abs(n - mean) <= 5 * math.sqrt(mean), (s, n, mean)


# --------------------------------------------------------------------------------- 5. memory cap


def test_memory_cap_reports_divergence() -> None:
    """Far above capacity, the waiting queue outgrows a 0.2 MiB state cap: every replication is
    stopped and reported diverged (with when), no exception."""
    w = Workload("w", PoissonArrival(2_000.0), Independent(Deterministic(100), Deterministic(100)))
    eng = Engine("e", 64, Staircase(11.28, 35.47, 64), policy=PolicySpec("sarathi"))
    out = run_core(eng, StreamSource([w], 4, 60_000.0, seed=1), max_memory_mb=0.2)
    assert out.diverged.all()
    assert np.all(np.isfinite(out.diverged_ms)) and np.all(out.diverged_ms > 0)
    assert np.all(out.diverged_ms < 60_000.0)
    # A normal run: nothing diverged, no divergence time.
    ok = run_core(Engine("e", 512, Staircase(11.28, 35.47, 128), policy=PolicySpec("sarathi")),
                  StreamSource([CHAT], 4, 5_000.0, seed=1))
    assert not ok.diverged.any() and np.all(np.isnan(ok.diverged_ms))
